"""Consecutive expert frame pairs for the AMP discriminator, held in memory."""
from __future__ import annotations

import numpy as np
from etils import epath


class ExpertPairs:
  """Expert episodes of `config.task` from an EpisodeStore; samples (x_{t-1}, x_t) pairs."""

  def __init__(self, config, workdir):
    from viper_jax.data.store import EpisodeStore
    amp = config.agent.amp
    store = EpisodeStore(amp.expert_root or epath.Path(workdir) / 'episodes')
    self.episodes = []
    for episode in store.episodes(config.task, amp.expert_split):
      if len(episode['image']) >= 2:
        self.episodes.append(episode['image'])
      if len(self.episodes) >= amp.max_expert_episodes:
        break
    if not self.episodes:
      raise ValueError(f"reward_source 'amp' needs expert episodes of {config.task} in "
                       f'{store.root} ({amp.expert_split} split); run `viper collect` first or '
                       'set agent.amp.expert_root')
    self.lengths = np.array([len(e) for e in self.episodes])

  def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [count, H, W, 6]: (x_{t-1}, x_t) pairs from random expert episodes."""
    which = rng.integers(0, len(self.episodes), count)
    t = rng.integers(1, self.lengths[which])
    return np.stack([np.concatenate([self.episodes[e][i - 1], self.episodes[e][i]], -1)
                     for e, i in zip(which, t)])
