"""Reward shape: does the VIPER reward rise step by step as behaviour approaches the expert's?

`viper reward-check` asks whether the reward ranks whole episodes. An agent needs more: a reward
that is graded *per step* over the states it actually visits, from random to expert. This module
scores episodes that cover that range (an agent's replay, or noisy-expert and random episodes of a
store) and compares, step by step, the VIPER reward with the true reward of the same step:

  * `spearman`: rank correlation over all steps;
  * `spearman_low`: the same over the steps whose true reward is below half of the largest one,
    i.e. away from the expert, where a peaked reward is flat;
  * `bins`: the mean VIPER reward per equal-width bin of true reward (a flat run of bins is what
    makes an agent's early learning slow);
  * `episode_spearman`: rank correlation of each episode's summed VIPER reward with its true
    return, the quantity the agent maximises. Per step a reward can be noisy and still rank
    episodes well (cartpole-swingup: 0.15 per step, 0.67 per episode on the oracle's replay); a
    floor that zeroes a phase the expert passes through shows here first (0.28 there).

The true reward is read only to evaluate; nothing here feeds a policy. Alignment follows the
replay convention: step t holds frame x_t and the reward for arriving at it, so the VIPER reward
of step t is lp[:, t] and it is paired with the true reward stored at t. Step 0 of each episode
(no arrival, true reward 0 by convention) is left out.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
from etils import epath

from viper_jax import atomic, metrics

NUM_BINS = 8
SHAPE_JSON, SHAPE_PNG = 'reward/shape.json', 'reward/shape.png'


def replay_episodes(path) -> Iterator[dict]:
  """Episodes of an agent replay sidecar (`<run>/agent/replay/replay_<step>.npz`).

  Yields {'image' uint8 [T, H, W, 3], 'reward' float32 [T]} per stretch between is_first flags of
  each stream, the unfinished last one included (its scores are causal, hence exact).
  """
  with epath.Path(path).open('rb') as f, np.load(f) as npz:
    count = npz['count']
    cap = int(npz['cap'])
    images, rewards, firsts = npz['data/image'], npz['data/reward'], npz['data/is_first']
  for env, total in enumerate(count):
    if total > cap:  # a wrapped ring: unroll it oldest first
      order = (np.arange(total - cap, total) % cap)
    else:
      order = np.arange(total)
    starts = [i for i in range(len(order)) if firsts[env, order[i]]] or [0]
    for begin, end in zip(starts, starts[1:] + [len(order)]):
      if end - begin > 1:
        idx = order[begin:end]
        yield {'image': images[env, idx], 'reward': rewards[env, idx].astype(np.float32)}


def store_episodes(store, task: str, splits: Iterable[str] = ('test',)) -> Iterator[dict]:
  """Episodes of an `EpisodeStore` task, one split after another."""
  for split in splits:
    for path in store.paths(task, split):
      episode = store.load(path)
      yield {'image': episode['image'], 'reward': np.asarray(episode['reward'], np.float32)}


def concat_episodes(viper: list, true: list):
  """Per-episode step arrays -> (viper float64 [N], true float64 [N], episode index int [N])."""
  index = np.concatenate([np.full(len(v), i) for i, v in enumerate(viper)])
  return (np.concatenate(viper).astype(np.float64), np.concatenate(true).astype(np.float64),
          index)


def score(model, episodes: Iterable[dict], task: str, max_steps: int | None = None):
  """VIPER reward, true reward and episode index of every scored step (see concat_episodes; step
  0 of each episode dropped). Episodes are scored one at a time (different lengths; one pass
  each, chunked when long).
  """
  task_id = np.array([model.task_id(task)], np.int32)
  viper, true = [], []
  total = 0
  for episode in episodes:
    lp = np.asarray(model.log_likelihood(episode['image'][None], task_id))[0]
    viper.append(lp[1:])
    true.append(episode['reward'][1:])
    total += len(lp) - 1
    if max_steps is not None and total >= max_steps:
      break
  if not viper:
    raise ValueError('no episodes with at least 2 steps to score')
  return concat_episodes(viper, true)


def spearman(x, y) -> float:
  """Spearman rank correlation, ties given their average rank (NaN when either side is
  constant or empty)."""
  from scipy import stats
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size == 0 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float('nan')
  return float(stats.spearmanr(x, y).statistic)


def summarize(viper, true, episode=None, num_bins: int = NUM_BINS) -> dict:
  """Per-step agreement of the VIPER reward with the true reward (see module doc).

  viper, true: float [N]; episode: int [N], the episode of each step (None: no episode figure).
  Bins are equal-width over [min(true), max(true)]; empty bins are kept (count 0, mean None) so
  that every run's bins line up.
  """
  viper, true = np.asarray(viper, np.float64), np.asarray(true, np.float64)
  if viper.shape != true.shape or viper.ndim != 1:
    raise ValueError(f'viper and true must be [N] arrays of one length, got {viper.shape} and '
                     f'{true.shape}')
  low, high = float(true.min()), float(true.max())
  edges = np.linspace(low, high if high > low else low + 1.0, num_bins + 1)
  which = np.clip(np.searchsorted(edges, true, side='right') - 1, 0, num_bins - 1)
  bins = []
  for b in range(num_bins):
    members = viper[which == b]
    bins.append(dict(lo=float(edges[b]), hi=float(edges[b + 1]), count=int(members.size),
                     mean=float(members.mean()) if members.size else None,
                     std=float(members.std()) if members.size else None))
  away = true < low + 0.5 * (high - low)
  return dict(steps=int(viper.size), spearman=spearman(viper, true),
              spearman_low=spearman(viper[away], true[away]) if away.sum() >= 3 else float('nan'),
              low_steps=int(away.sum()), true_range=[low, high], bins=bins,
              **_episode_figures(viper, true, episode))


def _episode_figures(viper, true, episode) -> dict:
  """Spearman of the episodes' summed VIPER reward vs their true return (NaN under 3 episodes)."""
  if episode is None:
    return {}
  episode = np.asarray(episode)
  if episode.shape != viper.shape:
    raise ValueError(f'episode must be [N] like viper, got {episode.shape} and {viper.shape}')
  _, which = np.unique(episode, return_inverse=True)
  sums, returns = np.bincount(which, viper), np.bincount(which, true)
  return dict(episodes=int(sums.size),
              episode_spearman=spearman(sums, returns) if sums.size >= 3 else float('nan'))


def plot(summary: dict, path, title: str = '') -> epath.Path:
  """Mean VIPER reward (± std) per bin of true reward, as a PNG."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  bins = [b for b in summary['bins'] if b['count']]
  centres = [(b['lo'] + b['hi']) / 2 for b in bins]
  fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
  ax.errorbar(centres, [b['mean'] for b in bins], yerr=[b['std'] for b in bins], marker='o',
              capsize=3)
  for c, b in zip(centres, bins):
    ax.annotate(str(b['count']), (c, b['mean']), textcoords='offset points', xytext=(4, 4),
                fontsize=7, color='gray')
  ax.set_xlabel('true reward of the step (evaluation only)')
  ax.set_ylabel('VIPER reward of the step (nats)')
  per_episode = (f", per episode {summary['episode_spearman']:.2f}"
                 if 'episode_spearman' in summary else '')
  ax.set_title(f"{title}per-step Spearman {summary['spearman']:.2f}, "
               f"away from expert {summary['spearman_low']:.2f}{per_episode}", fontsize=9)
  fig.tight_layout()
  return metrics.save_figure(fig, path)


def write(summary: dict, workdir, source: str, out=None) -> dict:
  """Writes <workdir>/reward/shape.json (or `out`, a .json path) atomically, and the PNG beside it
  (shape.png, or out with .png); returns the JSON's dict."""
  out = epath.Path(out) if out else epath.Path(workdir) / SHAPE_JSON
  result = dict(summary, source=str(source))
  atomic.write_json(out, result, indent=1)
  plot(summary, out.parent / (out.name[:-len('.json')] + '.png' if out.name.endswith('.json')
                              else out.name + '.png'))
  return result


def episodes_from(source, store, task: str) -> Iterator[dict]:
  """Episodes of `source`: a replay .npz, a replay folder (its newest sidecar) or None (the
  experiment's store, test split)."""
  if source is None:
    return store_episodes(store, task)
  path = epath.Path(source)
  if path.is_dir():
    sidecars = sorted(path.glob('replay_*.npz'), key=lambda p: int(p.stem.split('_')[1]))
    if not sidecars:
      raise FileNotFoundError(f'no replay_<step>.npz in {path} (expected an agent replay folder, '
                              'e.g. <run>/agent/replay)')
    path = sidecars[-1]
  if not path.name.endswith('.npz'):
    raise ValueError(f'reward-shape source must be a replay .npz or folder, got {path}')
  return replay_episodes(path)


def run(config, workdir, source=None, max_steps: int | None = None, out=None) -> dict:
  """`viper reward-shape`: scores `source` (see episodes_from) with the reward model in workdir;
  writes `out` (default <workdir>/reward/shape.json) and its PNG."""
  from viper_jax.reward import likelihood
  from viper_jax.data.store import store_and_tasks
  model = likelihood.load(workdir, reward_config=config.reward)  # the experiment's reward
  store, _ = store_and_tasks(config, epath.Path(workdir))
  viper, true, episode = score(model, episodes_from(source, store, config.task), config.task,
                               max_steps)
  return write(summarize(viper, true, episode), workdir, source or f'{store.root} (test split)',
               out)
