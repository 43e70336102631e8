"""Reward traps: the VIPER reward of simple fixed behaviours, beside their true return.

  python benchmarks/reward_behaviours.py --workdir=runs/balance_rm \
      [--config=experiments/agent_cpu.py:dmc:cartpole-balance] [--seeds=2]

An agent settles wherever its reward is higher than what it does now. The behaviours here are
what an agent's policy collapses to early (full force one way, no force, random, bang-bang), so
a behaviour that the reward ranks above random while its true return is below random is a trap.
(On cartpole-balance the raw joint likelihood ranked pushing the cart out of view, true return
135, above random flailing, 170-260; both 'viper' agents settled there.)

Each behaviour runs `--seeds` episodes of the config's environment (continuous actions); frames are
scored with the config's `reward` section (likelihood, scale), and also raw (scale 'none') when the
config scales. The true return is read only to evaluate. Prints one JSON line: per behaviour the
mean true return and VIPER reward per step, and `traps`: behaviours whose true return is below
random's while their reward is above it.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string('workdir', None, 'Reward model workdir (tokenizer/, prior/).',
                               required=True)
_CONFIG = flags.DEFINE_string('config', 'experiments/agent_cpu.py:dmc:cartpole-balance',
                              'Experiment config: environment and reward section.')
_SEEDS = flags.DEFINE_integer('seeds', 2, 'Episodes per behaviour.')

BEHAVIOURS = {  # t: agent step, rng: per-episode generator -> action in [-1, 1]
    'full_negative': lambda t, rng: -1.0,
    'full_positive': lambda t, rng: 1.0,
    'zero': lambda t, rng: 0.0,
    'random': lambda t, rng: rng.uniform(-1, 1),
    'bang_bang': lambda t, rng: 1.0 if (t // 3) % 2 else -1.0,
}


class Behaviour:
  """A fixed behaviour as a `data.policies.Policy`: `fn(t, rng)` -> action in [-1, 1]."""

  def __init__(self, fn, shape):
    self.fn, self.shape = fn, shape

  def reset(self, seed: int) -> None:
    self.t, self.rng = 0, np.random.default_rng(seed)

  def __call__(self, obs, info):
    action = np.full(self.shape, self.fn(self.t, self.rng), np.float32)
    self.t += 1
    return action


def rollout(config, behaviour, seed: int):
  """(true return, frames uint8 [T + 1, H, W, 3]) of one episode of a fixed behaviour."""
  from viper_jax import envs
  from viper_jax.data import collect, episodes
  env = envs.make(config.task, size=tuple(config.env.size), action_repeat=config.env.action_repeat,
                  time_limit=config.env.time_limit, seed=seed)
  actor = Behaviour(behaviour, env.action_space.shape)
  episode = collect.rollout(env, actor, seed, config.task, source='behaviour')
  env.close()
  return episodes.episode_return(episode), episode['image']


def find_traps(rows: dict, key: str) -> list[str]:
  """Behaviours below random in true return and above it in reward `key`."""
  base = rows['random']
  return sorted(n for n, r in rows.items() if n != 'random' and r['true_return'] <
                base['true_return'] and r[key] > base[key])


def main(_):
  from viper_jax import configs, pipeline
  config = configs.load_config(_CONFIG.value)
  raw = config.copy_and_resolve_references()
  raw.reward.scale = 'none'
  scorers = {'reward': pipeline.viper_likelihood_fn(config, _WORKDIR.value)}
  if config.reward.scale != 'none':
    scorers['raw_reward'] = pipeline.viper_likelihood_fn(raw, _WORKDIR.value)
  start, rows = time.time(), {}
  for name, behaviour in BEHAVIOURS.items():
    returns, scores = [], {k: [] for k in scorers}
    for seed in range(_SEEDS.value):
      total, frames = rollout(config, behaviour, seed)
      returns.append(total)
      for key, fn in scorers.items():
        scores[key].append(float(np.mean(fn(frames[None])[0][1:])))  # steps, not the reset frame
    rows[name] = {'true_return': round(float(np.mean(returns)), 1),
                  **{k: round(float(np.mean(v)), 2) for k, v in scores.items()}}
  result = {'benchmark': 'reward_behaviours', 'workdir': _WORKDIR.value, 'config': _CONFIG.value,
            'reward': config.reward.to_dict(), 'seeds': _SEEDS.value, 'behaviours': rows,
            **{f'traps_{k}': find_traps(rows, k) for k in scorers},
            'seconds': round(time.time() - start, 1)}
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
