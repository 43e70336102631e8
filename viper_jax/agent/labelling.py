"""VIPER labels for the replay: each finished episode scored once by the frozen likelihood.

Where VIPER rewards are computed: when an episode ends, on the host side of the replay, the whole
episode is scored in one call of `likelihood_fn` (episodes that end on the same step are batched,
padded at the END to a multiple of `viper_pad_length(config)`). Reasons, against scoring the
sequences sampled for training:
  - cost: every step is scored once, instead of `train_ratio` times (64-512x) on replayed copies;
  - context: each step is scored with its whole episode as history, the same for every step,
    whereas a sampled window would give its first frames a truncated context (a different scale,
    the reference's running-mean problem);
  - the end padding changes nothing because the likelihood is causal (lp[:, t] ignores frames
    after t), and fixed lengths keep the reward model from recompiling for every episode length.
The price is latency: steps of an unfinished episode are not sampled until it ends (`Replay.ready`).
On resume, a partial episode left in the restored replay is scored as it is (causality again: the
prefix gets exactly the values the full episode would have given).

Alignment: replay step t holds frame x_t and the reward for arriving at it, so its 'density' label
is likelihood_fn(frames)[:, t] = log p(x_t | x_<t) (tests pin this).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from viper_jax.agent.replay import Replay
from viper_jax.errors import NonFiniteLossError

LikelihoodFn = Callable[[np.ndarray], np.ndarray]  # uint8 [B, T, H, W, 3] -> float32 [B, T]
Segment = tuple[int, int, int]  # (env, start, stop) in a replay stream's absolute step index


def viper_pad_length(config) -> int:
  """Episodes are scored padded to a multiple of this: `agent.viper_pad_to`, or by default the
  frames of a full episode (time_limit + 1 with the reset frame; 64 without a time limit)."""
  if config.agent.viper_pad_to:
    return int(config.agent.viper_pad_to)
  limit = config.env.time_limit
  return int(limit) + 1 if limit else 64


def label_episodes(replay: Replay, likelihood_fn: LikelihoodFn, segments: list[Segment],
                   pad_to: int) -> list[np.ndarray]:
  """Scores replay segments with one likelihood_fn call; writes 'density'.

  Segments are padded at the end (last frame repeated) to a common multiple of pad_to; the
  likelihood is causal, so padding does not change the scores of real frames.
  Returns the per-segment scores [stop - start].
  """
  if not segments:
    return []
  longest = max(stop - start for _, start, stop in segments)
  length = int(math.ceil(longest / pad_to) * pad_to)
  frames = []
  for env, start, stop in segments:
    clip = replay.read('image', env, start, stop)
    frames.append(np.concatenate([clip, np.repeat(clip[-1:], length - len(clip), 0)], 0))
  scores = np.asarray(likelihood_fn(np.stack(frames)), np.float32)
  if scores.shape != (len(segments), length):
    raise ValueError(f'likelihood_fn must return float32 [B, T] = {(len(segments), length)}, got '
                     f'{scores.shape}')
  out = []
  for row, (env, start, stop) in zip(scores, segments):
    values = row[:stop - start]
    if not np.all(np.isfinite(values)):
      raise NonFiniteLossError(f'likelihood_fn returned non-finite rewards for steps [{start}, '
                               f'{stop}) of environment {env}; check the reward model and frames')
    replay.write('density', env, start, values)
    out.append(values)
  return out


class Labeller:
  """Labels finished episodes of the replay and releases them for sampling; times itself."""

  def __init__(self, likelihood_fn: LikelihoodFn, pad_to: int):
    self.likelihood_fn, self.pad_to = likelihood_fn, int(pad_to)
    self.seconds = 0.0

  def label(self, replay: Replay, segments: list[Segment]) -> list[np.ndarray]:
    """Scores `segments`, marks their streams ready up to each segment's end."""
    tic = time.perf_counter()
    scores = label_episodes(replay, self.likelihood_fn, segments, self.pad_to)
    self.seconds += time.perf_counter() - tic
    for env, _, stop in segments:
      replay.ready[env] = stop
    return scores

  def label_unfinished(self, replay: Replay) -> None:
    """After a resume: scores the partial episode at the end of each stream (causal, exact)."""
    self.label(replay, [(i, int(replay.ready[i]), int(replay.count[i]))
                        for i in range(replay.num_envs) if replay.count[i] > replay.ready[i]])
