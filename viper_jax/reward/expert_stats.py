"""`viper reward-stats`: statistics of the raw reward on expert episodes, for reward scaling.

Writes `<workdir>/reward/expert_stats.json` (atomically) with the mean, std, min and max of the
per-step log-likelihood over the expert training episodes (noise <= data.max_noise). `min` and
`max` are the 1st and 99th percentiles, so that one odd frame doesn't set the range of
reward.scale='minmax'; `percentiles` holds the floors that reward.scale='floor' | 'floor_unit'
may use (and the median, 50, that 'floor_unit' maps to 1). `reward.load` reads the file;
reward.scale='standardize' | 'minmax' | 'floor' | 'floor_unit' need it.
"""
from __future__ import annotations


import numpy as np
from etils import epath
from tqdm import tqdm

from viper_jax import atomic, validation
from viper_jax.data import loaders
from viper_jax.data.store import EpisodeStore, store_and_tasks
from viper_jax.reward import likelihood


def compute(model: likelihood.RewardModel, store: EpisodeStore, max_noise: float = 0.0,
            split: str = 'train', drop_first: int = 0) -> dict:
  """Raw per-step rewards of the expert episodes of every task the model knows -> stats dict
  (without each episode's first `drop_first` steps, the frames its video model never saw)."""
  keep = loaders.video_episode_filter(max_noise)
  values, count = [], 0
  for task in model.task_names:
    task_id = np.array([model.task_id(task)], np.int32)
    for episode in tqdm(store.episodes(task, split, where=keep), desc=f'reward stats {task}',
                        unit='episode'):
      lp = model.log_likelihood(episode['image'][None], task_id)
      values.append(np.asarray(lp)[0, drop_first:])
      count += 1
  if not values:
    raise FileNotFoundError(f'no expert {split} episodes (noise <= {max_noise}) of '
                            f'{model.task_names} in {store.root}')
  values = np.concatenate(values)
  return {'mean': float(values.mean()), 'std': float(values.std()),
          'min': float(np.percentile(values, 1)), 'max': float(np.percentile(values, 99)),
          'percentiles': {str(p): float(np.percentile(values, p))
                          for p in validation.FLOOR_PERCENTILES},
          'count': int(values.size), 'episodes': count, 'max_noise': float(max_noise)}


def run(config, workdir) -> dict:
  """Computes and writes the stats of the reward model trained in `workdir`."""
  validation.validate(config, ['reward-stats'], workdir)
  root = epath.Path(workdir)
  raw = likelihood.default_config()
  if 'reward' in config:
    raw.update(config.reward.to_dict())
  raw.scale = 'none'  # the statistics are of the unscaled reward
  model = likelihood.load(root, reward_config=raw)
  store, _ = store_and_tasks(config, root)  # where the model's episodes are
  stats = compute(model, store, config.data.max_noise, drop_first=config.data.drop_first_frames)
  path = root / likelihood.STATS_FILE
  atomic.write_json(path, stats, indent=2)
  return stats
