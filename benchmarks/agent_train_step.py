"""Agent train step alone (no environment): steps/s and sequences/s at several batch sizes.

  python benchmarks/agent_train_step.py [--agent_size=s] [--batches=16,32,64] [--repeats=10]

Times `Agent.train_step` (world model, actor, critics; reward source 'viper') jitted on one device
on random replay batches [B, batch_length] of 64x64 frames, so it needs neither dm_control nor a
reward model. 'scaling' is sequences/s relative to the smallest batch: how far a bigger batch
fills the chip. FLOPs: XLA's cost analysis of the step compiled for the CPU
(common.compiled_flops; loops count once, so it undercounts the imagination rollout: a lower
bound). Utilisation: those FLOPs / time / the matmul peak measured in this run (float32: the
agent computes in float32). Prints one JSON line.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402

_SIZE = flags.DEFINE_string('agent_size', 's', "Agent size: 'xs', 's', 'm', 'l'.")
_BATCHES = flags.DEFINE_list('batches', None, 'Batch sizes (default: CPU 2,4; else 16,32,64).')
_LENGTH = flags.DEFINE_integer('batch_length', None, 'Steps per sequence (default: the preset).')
_REPEATS = flags.DEFINE_integer('repeats', None, 'Timed steps (default: CPU 2, accelerator 10).')
_IMAGE = flags.DEFINE_integer('image', 64, 'Frame size.')


def random_batch(rng, batch: int, length: int, action_dim: int, image: int) -> dict:
  """A replay batch as `Agent.train_step` takes it (reward source 'viper')."""
  first = np.zeros((batch, length), bool)
  first[:, 0] = True
  return {'image': rng.integers(0, 255, (batch, length, image, image, 3), np.uint8),
          'action': rng.uniform(-1, 1, (batch, length, action_dim)).astype(np.float32),
          'reward': rng.normal(size=(batch, length)).astype(np.float32),
          'density': rng.normal(size=(batch, length)).astype(np.float32),
          'is_first': first, 'is_last': np.zeros((batch, length), bool),
          'is_terminal': np.zeros((batch, length), bool)}


def bench(agent, batch: int, length: int, repeats: int, peak: float, image: int) -> dict:
  state = jax.jit(agent.init)(jax.random.key(0))
  data = jax.device_put(random_batch(np.random.default_rng(batch), batch, length,
                                     agent.action_dim, image))
  step = jax.jit(agent.train_step)
  key = jax.random.key(1)
  try:
    flops = common.compiled_flops(step, state, data, key)
  except Exception:  # cost analysis is best effort
    flops = 0.0
  seconds = common.time_calls(lambda s: step(s, data, key)[1], state, repeats=repeats)
  return {'batch': batch, 'batch_length': length, 'steps_per_s': 1 / seconds,
          'sequences_per_s': batch / seconds, 'gflops_per_step_xla': flops / 1e9,
          'utilisation': flops / seconds / peak}


def main(_):
  from viper_jax.agent import agent as agent_lib
  from viper_jax.agent.configs import agent_config
  on_cpu = jax.default_backend() == 'cpu'
  cfg = agent_config(_SIZE.value)
  cfg.reward_source = 'viper'
  length = _LENGTH.value or cfg.batch_length
  batches = [int(b) for b in (_BATCHES.value or (['2', '4'] if on_cpu else ['16', '32', '64']))]
  repeats = _REPEATS.value or (2 if on_cpu else 10)
  peak = common.matmul_peak_flops(jnp.float32)
  agent = agent_lib.Agent(cfg, action_dim=6, discrete=False, image_size=(_IMAGE.value,) * 2)
  rows = [bench(agent, b, length, repeats, peak, _IMAGE.value) for b in batches]
  for row in rows:
    row['scaling'] = row['sequences_per_s'] / rows[0]['sequences_per_s']
  print(json.dumps({'benchmark': 'agent_train_step', 'device': common.device_description(),
                    'agent_size': _SIZE.value, 'matmul_peak_gflops': peak / 1e9,
                    'matmul_dtype': 'float32', 'rows': rows}))


if __name__ == '__main__':
  app.run(main)
