"""Reward-shape sweep: how per-step Spearman (VIPER vs true reward) moves with the reward's
reduction, on one trained reward model, from one forward pass per episode.

  python benchmarks/reward_shape.py --workdir=runs/balance_viper --source=REPLAY_OR_STORE_ROOT \
      --task=dmc:cartpole-balance [--max_steps=20000]

Variants: 'sum' (the default conditional log-likelihood), 'joint' (the sum over the last context
frames' conditionals), per-token floors ('floor<k>': each token's log-prob clipped below at -k
nats before summing, which counts surprising tokens instead of weighing how surprising they are),
and the joint reward floored at a percentile of the expert's own per-step rewards ('joint_p<q>',
reward.scale=floor with reward.floor_percentile=q; needs `viper reward-stats` in the workdir).
Prints one JSON line: per variant, the per-step Spearman over all steps and away from the expert,
and the per-episode Spearman of summed reward vs true return.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from viper_jax import reward
from viper_jax.data.store import EpisodeStore
from viper_jax.reward import likelihood, shape

FLOORS = (1.0, 2.0, 4.0, 8.0, 16.0)


def token_log_probs(model, frames, task_id):
  """frames uint8 [1, T, H, W, 3] -> token log-probs float32 [T, N] (frame skip 1, one chunk)."""
  m = model._m  # pylint: disable=protected-access
  ids = jnp.full((1,), task_id, jnp.int32)
  codes = likelihood._encode(m, model.params['tokenizer'], likelihood._mask_frames(m, frames, ids))
  logits = m.prior.apply({'params': model.params['prior']}, codes, ids)
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp, codes[..., None], axis=-1)[0, ..., 0]


def variants(token_lp: np.ndarray, context: int, expert_floors: dict) -> dict[str, np.ndarray]:
  """token_lp [T, N] -> per-frame rewards [T] of each variant; expert_floors: {q: floor}."""
  frame = token_lp.sum(-1)
  total = np.cumsum(frame)
  joint = total - np.concatenate([np.zeros(context), total])[:len(frame)]
  out = {'sum': frame, 'joint': joint}
  for k in FLOORS:
    out[f'floor{k:g}'] = np.maximum(token_lp, -k).sum(-1)
  for q, floor in expert_floors.items():
    out[f'joint_p{q}'] = np.maximum(joint, floor)
  return out


def expert_floors(workdir) -> dict:
  """{percentile: the expert's per-step reward there} from reward/expert_stats.json, or {}."""
  path = epath.Path(workdir) / 'reward' / 'expert_stats.json'
  if not path.exists():
    return {}
  return {q: float(v) for q, v in json.loads(path.read_text())['percentiles'].items()
          if q != '50'}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--source', required=True, help='replay .npz / folder, or a store root')
  parser.add_argument('--task', default='dmc:cartpole-balance')
  parser.add_argument('--split', default='test')
  parser.add_argument('--max_steps', type=int, default=20_000)
  args = parser.parse_args()
  model = reward.load(args.workdir)
  if model.frame_skip != 1:
    raise SystemExit('this sweep scores frame skip 1 models only')
  source = epath.Path(args.source)
  if source.name.endswith('.npz') or any(source.glob('replay_*.npz')):
    episodes = shape.episodes_from(source, None, args.task)
  else:
    episodes = shape.store_episodes(EpisodeStore(source), args.task, (args.split,))
  fn = jax.jit(lambda f: token_log_probs(model, f, model.task_id(args.task)))
  floors = expert_floors(args.workdir)
  start, per_variant, true, steps = time.time(), {}, [], 0
  for episode in episodes:
    lp = np.asarray(fn(jnp.asarray(episode['image'][None])), np.float64)
    for name, values in variants(lp, model.context, floors).items():
      per_variant.setdefault(name, []).append(values[1:])
    true.append(episode['reward'][1:])
    steps += len(lp) - 1
    if steps >= args.max_steps:
      break
  result = {'workdir': args.workdir, 'source': args.source, 'steps': steps,
            'seconds': round(time.time() - start, 1)}
  for name, values in per_variant.items():
    s = shape.summarize(*shape.concat_episodes(values, true))
    result[name] = {'spearman': round(s['spearman'], 3), 'spearman_low': round(s['spearman_low'], 3),
                    'episode_spearman': round(s['episode_spearman'], 3),
                    'bin_means': [None if b['mean'] is None else round(b['mean'], 1)
                                  for b in s['bins']]}
  print(json.dumps(result))


if __name__ == '__main__':
  main()
