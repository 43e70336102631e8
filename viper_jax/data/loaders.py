"""Training inputs for the video model: random frames (tokenizer) and code windows (prior).

Both are grain MapDatasets: shuffled, repeated, split per host and batched, with random access,
so the batch of a step is a pure function of (seed, step). A resumed run therefore needs only the
step as its data-iterator state and sees exactly the batches an uninterrupted run would.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from viper_jax.data.store import EpisodeStore


def video_episode_filter(max_noise: float):
  """Keeps episodes fit to train a video model on: experts (and imports) up to a noise level."""
  def keep(metadata: dict) -> bool:
    if str(metadata.get('source', '')).startswith('random'):
      return False
    return float(metadata.get('noise', 0.0)) <= max_noise
  return keep


def mask_frames(frames: np.ndarray, task: str, mask_score: bool) -> np.ndarray:
  """Zeroes Atari score regions (idempotent; environments may have done it already)."""
  if mask_score and task.startswith('atari:'):
    from viper_jax.envs.score_masks import apply_score_mask
    return apply_score_mask(frames, task)
  return frames


class FrameSource:
  """All frames of the selected episodes, held in memory, addressable by a flat index.

  frames: uint8 [num_frames, H, W, 3]. (Paper-scale data needs a memory-mapped variant.)
  """

  def __init__(self, store: EpisodeStore, tasks: list[str], split: str, max_noise: float = 0.0,
               mask_score: bool = True):
    chunks = []
    for task in tasks:
      for episode in store.episodes(task, split, where=video_episode_filter(max_noise)):
        chunks.append(mask_frames(episode['image'], task, mask_score))
    if not chunks:
      raise ValueError(f'no {split} episodes for tasks {tasks} in {store.root} (expert episodes '
                       f'with noise <= {max_noise}); run `viper collect` first')
    self.frames = np.concatenate(chunks)

  def __len__(self) -> int:
    return len(self.frames)

  def __getitem__(self, index: int) -> np.ndarray:
    return self.frames[index]


def frame_batches(source: FrameSource, global_batch: int, seed: int):
  """dataset[step] -> this host's uint8 [global_batch / hosts, H, W, 3] frames for that step."""
  return _shuffled_host_batches(source, global_batch, seed)


def _shuffled_host_batches(source, global_batch: int, seed: int):
  import grain  # imported here so that scoring and benchmarks do not need it
  per_host = global_batch // jax.process_count()
  dataset = grain.MapDataset.source(source).shuffle(seed=seed).repeat()
  dataset = dataset[jax.process_index()::jax.process_count()]
  return dataset.batch(per_host, drop_remainder=True)


@dataclasses.dataclass
class CodeEpisode:
  """One episode's codes: codes uint16/int32 [T, h, w], task_id int, name str."""
  codes: np.ndarray
  task_id: int
  name: str


class WindowSource:
  """Every window of `window` frames (every `frame_skip`-th frame) of the given code episodes.

  Item: {'codes': int32 [window, h*w], 'task_id': int32 []}.
  """

  def __init__(self, episodes: list[CodeEpisode], window: int, frame_skip: int = 1,
               stride: int = 1):
    span = (window - 1) * frame_skip + 1
    self.episodes, self.window, self.frame_skip = episodes, window, frame_skip
    self.index = [(e, start) for e, episode in enumerate(episodes)
                  for start in range(0, len(episode.codes) - span + 1, stride)]
    if not self.index:
      raise ValueError(f'no episode has the {span} frames a window of {window} frames with frame '
                       f'skip {frame_skip} needs')

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, i: int) -> dict:
    e, start = self.index[i]
    episode = self.episodes[e]
    stop = start + (self.window - 1) * self.frame_skip + 1
    codes = episode.codes[start:stop:self.frame_skip]
    return {'codes': codes.reshape(self.window, -1).astype(np.int32),
            'task_id': np.int32(episode.task_id)}


def window_batches(source: WindowSource, global_batch: int, seed: int):
  """dataset[step] -> this host's {'codes': [b, window, N], 'task_id': [b]} for that step."""
  return _shuffled_host_batches(source, global_batch, seed)
