"""Reward traps, seen on what agents actually did: candidate reward models score agents' evaluations.

  python benchmarks/reward_agent_evals.py --rewards=runs/swingup_rm,runs/swingup_p_c1 \
      --runs=runs/swingup_env_r64,runs/swingup_viper_p1_r64 [--task=dmc:cartpole-swingup] \
      [--floors=1,5,10,20] [--pairs=runs/swingup_viper_p1_r64:3752:10628]

An agent trained on a reward drifts to whatever that reward ranks highest among the behaviours it
can reach. The evaluation episodes of earlier runs (a task-reward run, VIPER runs that fell into a
trap) are such behaviours, each with its true return, so a candidate reward model can be checked on
them in minutes before an agent run of hours. Each evaluation's first episode is read from
`<run>/videos/eval_<step>.npz` (lossless, with its true return), or from the GIF beside it for runs
older than those files (a GIF's palette lowers the likelihood by up to ~10 nats a frame near the
expert, so compare GIFs only with GIFs); its true return is then the evaluation's mean.

Per reward model, prints one JSON line with the Spearman of the mean per-step reward vs true return
over all those episodes: raw (`reward.likelihood` of the config, scale 'none') and floored at the
expert's percentiles (as reward.scale 'floor'/'floor_unit', which rank the same). `--pairs`
(run:step_a:step_b) reports the floored mean reward per step of two evaluations of one run side by
side, e.g. the moment a VIPER agent swung the pole up against the moment it rocked it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from PIL import Image  # noqa: E402

from viper_jax import configs  # noqa: E402
from viper_jax.reward import likelihood  # noqa: E402


def gif_frames(path) -> np.ndarray:
  """A GIF -> uint8 [T, H, W, 3]."""
  image, frames = Image.open(path), []
  for index in range(image.n_frames):
    image.seek(index)
    frames.append(np.asarray(image.convert('RGB')))
  return np.stack(frames)


def agent_evals(run: Path) -> list[tuple[int, float, np.ndarray, bool]]:
  """(step, true return, frames uint8 [T, H, W, 3], lossless) of each saved evaluation of a run."""
  workdir = run / 'agent' if (run / 'agent' / 'metrics.jsonl').exists() else run
  rows = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  mean_return = {r['step']: r['eval/return'] for r in rows if 'eval/return' in r}
  out = []
  for gif in sorted((workdir / 'videos').glob('eval_*.gif')):
    step, npz = int(gif.stem[5:]), gif.with_suffix('.npz')
    if npz.exists():
      saved = np.load(npz)
      out.append((step, float(saved['true_return']), saved['image'], True))
    elif step in mean_return:
      out.append((step, float(mean_return[step]), gif_frames(gif), False))
  return out


def floors(reward_dir: Path, percentiles) -> dict[str, float]:
  """{'raw': -inf, 'p<q>': the expert's q-th percentile per-step reward} (raw only without
  `viper reward-stats` in the reward workdir)."""
  path = reward_dir / 'reward' / 'expert_stats.json'
  if not path.exists():
    return {'raw': -np.inf}
  stats = json.loads(path.read_text())['percentiles']
  missing = [q for q in percentiles if str(q) not in stats]
  if missing:
    raise SystemExit(f'--floors {missing} not in {path} (it has percentiles {sorted(stats, key=float)})')
  return {'raw': -np.inf, **{f'p{q}': float(stats[str(q)]) for q in percentiles}}


def above_floor(per_step: np.ndarray, floor: float) -> float:
  """Mean per-step reward above `floor` after flooring (the raw mean when there is no floor)."""
  if floor == -np.inf:
    return float(per_step.mean())
  return float(np.maximum(per_step, floor).mean() - floor)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--rewards', required=True, help='comma-separated reward model workdirs')
  parser.add_argument('--runs', required=True, help='comma-separated agent run workdirs')
  parser.add_argument('--task', default='dmc:cartpole-swingup')
  parser.add_argument('--config', default='experiments/agent_cpu.py', help='reward section')
  parser.add_argument('--floors', default='1,5,10,20', help="expert percentiles ('1,20')")
  parser.add_argument('--pairs', default='', help='run:step_a:step_b,... to compare side by side')
  args = parser.parse_args()
  config = configs.load_config(f'{args.config}:{args.task}')
  with config.unlocked():
    config.reward.scale = 'none'
  episodes = [(run, *e) for run in args.runs.split(',') for e in agent_evals(Path(run))]
  if not episodes:
    raise SystemExit(f'no evaluation videos under {args.runs}')
  true = [e[2] for e in episodes]
  for reward_dir in map(Path, args.rewards.split(',')):
    model = likelihood.load(reward_dir, reward_config=config.reward)
    task = np.array([model.task_id(args.task)], np.int32)
    per_step = [np.asarray(model.log_likelihood(e[3][None], task))[0][1:] for e in episodes]
    result = {'reward': str(reward_dir), 'episodes': len(episodes),
              'lossless': sum(e[4] for e in episodes), 'spearman': {}, 'pairs': {}}
    by_step = {(run, step): lp for (run, step, *_), lp in zip(episodes, per_step)}
    for name, floor in floors(reward_dir, args.floors.split(',')).items():
      means = [above_floor(lp, floor) for lp in per_step]  # a shift: the same ranks
      result['spearman'][name] = round(float(scipy.stats.spearmanr(means, true)[0]), 3)
      for pair in filter(None, args.pairs.split(',')):
        run, a, b = pair.rsplit(':', 2)
        result['pairs'].setdefault(pair, {})[name] = [
            round(above_floor(by_step[(run, int(step))], floor), 1) for step in (a, b)]
    print(json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
