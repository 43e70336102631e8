"""Optional LPIPS-style perceptual distance with VGG16 features, weights from a local .npz only.

Nothing is downloaded: pretrained weights must be converted once elsewhere and passed as a path
(`cfg.perceptual_weights_path`); the loss is off by default (`cfg.perceptual_weight = 0`).

Expected npz keys (float arrays; channel counts are read from the shapes, so a shrunk network of
the same layout works too):
  'conv{b}_{i}/kernel'  [3, 3, C_in, C_out]  HWIO (torch Conv2d weight: w.transpose(2, 3, 1, 0))
  'conv{b}_{i}/bias'    [C_out]
      for block b = 1..5 with i = 1..n_b, n = (2, 2, 3, 3, 3) (VGG16's 13 convs); conv1_1 has
      C_in = 3 and every other conv's C_in is the previous conv's C_out.
  'lin{k}'              [C_k], k = 0..4: non-negative per-channel weights of LPIPS's linear
      layers (torch weight [1, C_k, 1, 1] flattened), C_k = C_out of block k+1's last conv.
  optional 'shift', 'scale' [3]: input normalisation (x - shift) / scale for x in [-1, 1];
      default LPIPS's shift (-.030, -.088, -.188), scale (.458, .448, .450).

Distance (LPIPS): features after the last ReLU of each block (2x2 max-pool between blocks),
unit-normalised over channels; d = sum_k mean_{h,w} sum_c lin_k[c] * (f_a - f_b)^2.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convs per block
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def conv_names() -> list[str]:
  return [f'conv{b + 1}_{i + 1}' for b, n in enumerate(VGG16_BLOCKS) for i in range(n)]


def expected_keys() -> list[str]:
  keys = [f'{name}/{part}' for name in conv_names() for part in ('kernel', 'bias')]
  return keys + [f'lin{k}' for k in range(len(VGG16_BLOCKS))]


def load_weights(path) -> dict[str, np.ndarray]:
  """Reads and validates the npz described in the module docstring -> dict of float32 arrays."""
  path = os.fspath(path) if path is not None else None
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f'perceptual loss weights not found at {path!r}: expected a local .npz with VGG16 '
        f'conv weights and LPIPS linear weights (keys conv1_1/kernel ... conv5_3/bias, '
        f'lin0 ... lin4; see viper_jax/video/perceptual.py). Nothing is downloaded; set '
        f'perceptual_weights_path, or perceptual_weight = 0 to train without it.')
  try:
    with np.load(path, allow_pickle=False) as data:
      raw = {key: np.asarray(data[key]) for key in data.files}
  except Exception as e:  # zipfile / pickle / format errors
    raise ValueError(f'{path}: not a readable .npz file ({e})') from e
  missing = [key for key in expected_keys() if key not in raw]
  if missing:
    raise ValueError(f'{path}: missing keys {missing}; expected {expected_keys()} '
                     f'(+ optional shift, scale)')
  weights, channels = {}, 3
  for name in conv_names():
    kernel, bias = raw[f'{name}/kernel'], raw[f'{name}/bias']
    if kernel.ndim != 4 or kernel.shape[:3] != (3, 3, channels):
      raise ValueError(f'{path}: {name}/kernel must be [3, 3, {channels}, C_out] (HWIO), '
                       f'got {kernel.shape}')
    channels = kernel.shape[3]
    if bias.shape != (channels,):
      raise ValueError(f'{path}: {name}/bias must be [{channels}], got {bias.shape}')
    weights[f'{name}/kernel'] = kernel.astype(np.float32)
    weights[f'{name}/bias'] = bias.astype(np.float32)
  for k, n in enumerate(VGG16_BLOCKS):
    width = weights[f'conv{k + 1}_{n}/bias'].shape[0]
    lin = raw[f'lin{k}'].reshape(-1) if raw[f'lin{k}'].size == width else raw[f'lin{k}']
    if lin.shape != (width,):
      raise ValueError(f'{path}: lin{k} must have {width} entries (the width of block {k + 1}), '
                       f'got shape {raw[f"lin{k}"].shape}')
    weights[f'lin{k}'] = lin.astype(np.float32)
  for key, default in (('shift', LPIPS_SHIFT), ('scale', LPIPS_SCALE)):
    value = np.asarray(raw.get(key, default), np.float32).reshape(-1)
    if value.shape != (3,):
      raise ValueError(f'{path}: {key} must have 3 entries, got shape {value.shape}')
    weights[key] = value
  return weights


def _to_float(images: jax.Array) -> jax.Array:
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 127.5 - 1.0
  return images.astype(jnp.float32)


def _features(weights, x: jax.Array) -> list[jax.Array]:
  """[B, H, W, 3] in [-1, 1] -> the last ReLU of each of the five VGG blocks."""
  x = (x - weights['shift']) / weights['scale']
  taps = []
  for b, n in enumerate(VGG16_BLOCKS):
    if b > 0:
      x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
    for i in range(n):
      name = f'conv{b + 1}_{i + 1}'
      x = jax.lax.conv_general_dilated(x, weights[f'{name}/kernel'], (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      x = jax.nn.relu(x + weights[f'{name}/bias'])
    taps.append(x)
  return taps


def perceptual_distance(weights, frames_a: jax.Array, frames_b: jax.Array) -> jax.Array:
  """LPIPS distance. weights: from load_weights (arrays); frames [B, H, W, 3], uint8 or float in
  [-1, 1], H and W >= 16 -> float32 [B]. Differentiable w.r.t. both inputs."""
  taps_a = _features(weights, _to_float(frames_a))
  taps_b = _features(weights, _to_float(frames_b))
  distance = 0.0
  for k, (fa, fb) in enumerate(zip(taps_a, taps_b)):
    # eps inside the sqrt keeps the gradient finite where a feature vector is all zeros.
    fa = fa * jax.lax.rsqrt(jnp.sum(jnp.square(fa), -1, keepdims=True) + 1e-10)
    fb = fb * jax.lax.rsqrt(jnp.sum(jnp.square(fb), -1, keepdims=True) + 1e-10)
    distance += jnp.mean(jnp.sum(weights[f'lin{k}'] * jnp.square(fa - fb), -1), axis=(1, 2))
  return distance


def load_perceptual_fn(path) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """-> fn(frames_a, frames_b) -> float32 [B], see perceptual_distance. Raises
  FileNotFoundError if the file is missing and ValueError if it is malformed."""
  weights = jax.tree.map(jnp.asarray, load_weights(path))
  return functools.partial(perceptual_distance, weights)
