"""Shared benchmark helpers: timing jitted functions and the matmul peak they are compared to."""
import time

import jax
import jax.numpy as jnp


def block(tree):
  return jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, 'block_until_ready') else x,
                      tree)


def time_calls(fn, *args, repeats: int, warmup: int = 1) -> float:
  """Seconds per call of fn(*args) after `warmup` calls (compilation excluded)."""
  for _ in range(warmup):
    block(fn(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    block(fn(*args))
  return (time.perf_counter() - start) / repeats


def matmul_peak_flops(dtype=jnp.float32, size: int | None = None, repeats: int = 10) -> float:
  """Measured FLOP/s of a square matmul in `dtype` (CPU: 1024², accelerators: 8192²)."""
  if size is None:
    size = 1024 if jax.default_backend() == 'cpu' else 8192
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  matmul = jax.jit(lambda a, b: a @ b)
  seconds = time_calls(matmul, a, b, repeats=repeats, warmup=2)
  return 2 * size ** 3 / seconds


def compiled_flops(jitted, *args) -> float:
  """FLOPs of one call as counted by XLA's cost analysis of the program compiled for the CPU.

  The CPU compilation is used on every backend: on GPUs, convolutions become cuDNN custom calls
  that the cost analysis does not count, which would make utilisation look near zero.
  """
  try:
    cpu_args = jax.device_put(args, jax.devices('cpu')[0])
    with jax.default_device(jax.devices('cpu')[0]):
      analysis = jax.jit(jitted.__wrapped__ if hasattr(jitted, '__wrapped__') else jitted,
                         backend='cpu').lower(*cpu_args).compile().cost_analysis()
  except Exception:  # no CPU backend or API change: fall back to this backend's count
    analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get('flops', 0.0))


def device_description() -> str:
  device = jax.devices()[0]
  return f'{jax.default_backend()}:{getattr(device, "device_kind", device.platform)} x{jax.device_count()}'
