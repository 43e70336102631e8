"""`viper reward-check`: does the reward rank behaviour? Held-out expert vs noisy vs random episodes.

Scores every test-split episode of the experiment's task with the trained reward model and writes
`<workdir>/reward/check.json`: per episode the mean reward per step and the true return; the
Spearman rank correlation between the two; the AUROC of telling expert (noise 0) from random
episodes by mean reward; and `<workdir>/reward/reward_vs_return.png`. From the same scores it also
writes the per-step reward shape (`reward/shape.json`, `shape.png`; see shape.py). A model of
several tasks also gets its conditioning matrix (viper_jax/reward/conditioning.py).
"""
from __future__ import annotations

import re

import numpy as np
import scipy.stats
from etils import epath

from viper_jax import atomic, metrics, validation
from viper_jax.data.store import EpisodeStore, store_and_tasks
from viper_jax.reward import likelihood, shape
from viper_jax.reward.shape import spearman



def auroc(positive, negative) -> float:
  """P(score of a positive > score of a negative), ties counting half: the Mann-Whitney U of the
  positives over the number of pairs."""
  u = scipy.stats.mannwhitneyu(positive, negative).statistic
  return float(u / (len(positive) * len(negative)))


def spearman_ceiling(true) -> float:
  """The most Spearman a reward can reach against `true` without ties of its own. Equal true
  returns share their average rank, and a reward with distinct values ranks them apart; every
  such order gives this same value (within a tie the true ranks are constant). Below 1 when many
  episodes tie (all failures of an all-or-nothing task return 0)."""
  return spearman(true, scipy.stats.rankdata(true, method='ordinal'))


def spearman_interval(mean, true, draws: int = 1000, seed: int = 0) -> list[float]:
  """Bootstrap 90% interval of Spearman(mean, true), episodes resampled with replacement (fixed
  seed, so a rerun reports the same interval). [nan, nan] when no resample has a value."""
  mean, true = np.asarray(mean, np.float64), np.asarray(true, np.float64)
  rng = np.random.default_rng(seed)
  values = [spearman(mean[i], true[i]) for i in rng.integers(0, len(mean), (draws, len(mean)))]
  values = np.array([v for v in values if np.isfinite(v)])
  return [float('nan')] * 2 if values.size == 0 else np.percentile(values, [5, 95]).tolist()


def episode_group(name: str, source: str) -> str:
  """'expert', 'noise0.25', ... or 'random' from an episode file name / its source."""
  if str(source).startswith('random') or name.startswith('random'):
    return 'random'
  match = re.search(r'noise(\d+\.\d+)', name)
  noise = float(match.group(1)) if match else 0.0
  return 'expert' if noise == 0 else f'noise{noise:.2f}'


def score_episodes(model: likelihood.RewardModel, store: EpisodeStore, task: str,
                   split: str = 'test') -> list[dict]:
  """Per episode: name, group, mean reward per step, true return, per-step rewards."""
  task_id = np.array([model.task_id(task)], np.int32)
  rows = []
  for path in store.paths(task, split):
    episode = store.load(path)
    lp = np.asarray(model.log_likelihood(episode['image'][None], task_id))[0]
    rows.append(dict(name=path.name, group=episode_group(path.name, episode.get('source', '')),
                     mean_reward=float(lp.mean()), true_return=float(episode['reward'].sum()),
                     rewards=lp.tolist(), true_rewards=episode['reward'].tolist()))
  if not rows:
    raise FileNotFoundError(f'no {split} episodes of {task} in {store.root}: run `viper collect`')
  return rows


def summarize(rows: list[dict]) -> dict:
  mean = [r['mean_reward'] for r in rows]
  true = [r['true_return'] for r in rows]
  expert = [r['mean_reward'] for r in rows if r['group'] == 'expert']
  random = [r['mean_reward'] for r in rows if r['group'] == 'random']
  groups = {}
  for group in sorted({r['group'] for r in rows}):
    members = [r for r in rows if r['group'] == group]
    groups[group] = dict(episodes=len(members),
                         mean_reward=float(np.mean([r['mean_reward'] for r in members])),
                         true_return=float(np.mean([r['true_return'] for r in members])))
  return dict(spearman=spearman(mean, true), spearman_interval90=spearman_interval(mean, true),
              spearman_ceiling=spearman_ceiling(true),
              auroc_expert_vs_random=auroc(expert, random) if expert and random else float('nan'),
              episodes=len(rows), groups=groups)


def plot(rows: list[dict], summary: dict, path) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
  for group in sorted({r['group'] for r in rows}):
    members = [r for r in rows if r['group'] == group]
    ax.scatter([r['true_return'] for r in members], [r['mean_reward'] for r in members],
               label=group, s=30)
  ax.set_xlabel('true return (never seen by the reward)')
  ax.set_ylabel('mean VIPER reward per step (nats)')
  ax.set_title(f"Spearman {summary['spearman']:.2f}, "
               f"AUROC expert vs random {summary['auroc_expert_vs_random']:.2f}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  metrics.save_figure(fig, path)


def run(config, workdir, out_dir=None) -> dict:
  """Scores the test episodes of the store (config.data.root, else <workdir>/episodes) with the
  model in `workdir`; writes check.json, the PNGs, shape.json (and conditioning.json for a model
  of several tasks) into `out_dir`, default <workdir>/reward. Another out_dir scores another
  store (a finer grading, say) without touching the model's own check."""
  validation.validate(config, ['reward-check'], workdir)
  root = epath.Path(workdir)
  out_dir = epath.Path(out_dir) if out_dir else root / 'reward'
  model = likelihood.load(root, reward_config=config.reward)  # the experiment's reward
  store, _ = store_and_tasks(config, root)  # where the model's episodes are
  rows = score_episodes(model, store, config.task)
  summary = summarize(rows)
  result = dict(summary, task=config.task, per_episode=rows)
  if len(model.task_names) > 1:  # one model of several tasks: each task under each task id
    lacking = [t for t in model.task_names if not store.paths(t, 'test')]
    if lacking:  # e.g. another store, of one task: no matrix then
      print(f'reward-check: no conditioning matrix, {store.root} has no test episodes of {lacking}')
    else:
      from viper_jax.reward import conditioning
      matrix = conditioning.run(model, store, out_dir)
      result['conditioning'] = {k: matrix[k] for k in ('tasks', 'matrix', 'diagonal_highest')}
  atomic.write_json(out_dir / 'check.json', result)
  plot(rows, summary, out_dir / 'reward_vs_return.png')
  # The same scores, per step: is the reward graded over the held-out behaviour (shape.py)?
  viper, true, episode = shape.concat_episodes([np.asarray(r['rewards'][1:]) for r in rows],
                                               [np.asarray(r['true_rewards'][1:]) for r in rows])
  result['shape'] = shape.write(shape.summarize(viper, true, episode), root,
                                f'{store.root} ({config.task}, test split)',
                                out=out_dir / 'shape.json')
  return result
