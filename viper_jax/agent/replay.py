"""Sequence replay: one ring buffer per environment stream, uniform fixed-length sequences.

Steps follow the episode format (step t: frame x_t, action a_t taken at x_t, reward for arriving at
x_t, flags). Each environment of a BatchedEnv appends to its own stream, so consecutive slots are
consecutive steps; sequences may cross episode boundaries (is_first resets the world model).

Steps are addressed by their absolute index in their stream (0, 1, 2, ...); slot = index % cap.
Only steps before `ready[env]` are sampled: reward labels that arrive later (VIPER scores a whole
episode when it ends) must be in place before a step can be trained on.

`save(path)` writes the filled part of the buffers as one .npz, atomically (temp file + rename),
so a checkpoint's replay is either complete or absent.
"""
from __future__ import annotations

import io

import numpy as np
from etils import epath

from viper_jax import atomic


class Replay:

  def __init__(self, capacity: int, num_envs: int):
    if capacity < num_envs:
      raise ValueError(f'replay_capacity={capacity} must be at least num_envs={num_envs}')
    self.num_envs = num_envs
    self.cap = capacity // num_envs  # steps per environment stream
    self.data: dict[str, np.ndarray] = {}  # key -> [num_envs, cap, ...], allocated on first add
    self.count = np.zeros(num_envs, np.int64)  # steps ever added per stream
    self.ready = np.zeros(num_envs, np.int64)  # steps [oldest, ready) may be sampled

  def __len__(self) -> int:
    return int(np.minimum(self.count, self.cap).sum())

  def oldest(self) -> np.ndarray:
    """Absolute index of the oldest step still held, per stream [num_envs]."""
    return np.maximum(self.count - self.cap, 0)

  def add(self, step: dict, ready: bool = True) -> None:
    """Appends one step per stream: step[key] [num_envs, ...]. ready=False defers sampling."""
    if not self.data:
      for key, value in step.items():
        value = np.asarray(value)
        self.data[key] = np.zeros((self.num_envs, self.cap) + value.shape[1:], value.dtype)
    slots = self.count % self.cap
    rows = np.arange(self.num_envs)
    for key, value in step.items():
      self.data[key][rows, slots] = value
    self.count += 1
    if ready:
      self.ready[:] = self.count

  def _slots(self, env: int, start: int, stop: int) -> np.ndarray:
    if start < self.oldest()[env] or stop > self.count[env]:
      raise IndexError(f'steps [{start}, {stop}) of stream {env} are not in the replay (it holds '
                       f'[{self.oldest()[env]}, {self.count[env]}))')
    return np.arange(start, stop) % self.cap

  def read(self, key: str, env: int, start: int, stop: int) -> np.ndarray:
    """Values of steps [start, stop) of one stream: [stop - start, ...]."""
    return self.data[key][env, self._slots(env, start, stop)]

  def write(self, key: str, env: int, start: int, values: np.ndarray) -> None:
    """Overwrites `key` for steps [start, start + len(values)) of one stream (labels)."""
    self.data[key][env, self._slots(env, start, start + len(values))] = values

  def num_sequences(self, length: int) -> np.ndarray:
    """Number of valid sequence starts per stream [num_envs]."""
    return np.maximum(self.ready - self.oldest() - length + 1, 0)

  def can_sample(self, length: int) -> bool:
    return bool(self.num_sequences(length).sum() > 0)

  def sample(self, batch: int, length: int, rng: np.random.Generator) -> dict:
    """`batch` uniform sequences of `length` ready steps: dict of [batch, length, ...]."""
    counts = self.num_sequences(length)
    total = counts.sum()
    if total == 0:
      raise ValueError(f'replay has no complete sequence of length {length} yet')
    flat = rng.integers(0, total, batch)
    env = np.searchsorted(np.cumsum(counts), flat, side='right')
    start = self.oldest()[env] + flat - (np.cumsum(counts) - counts)[env]
    slots = (start[:, None] + np.arange(length)[None]) % self.cap
    return {key: value[env[:, None], slots] for key, value in self.data.items()}

  # ---------------------------------------------------------------- persistence

  def state_dict(self) -> dict:
    filled = int(min(self.count.max(initial=0), self.cap))
    arrays = {f'data/{k}': v[:, :filled] for k, v in self.data.items()}
    return {'count': self.count, 'ready': self.ready, 'cap': np.array(self.cap), **arrays}

  def load_state_dict(self, state: dict) -> None:
    if int(state['cap']) != self.cap or len(state['count']) != self.num_envs:
      raise ValueError(f'saved replay has {len(state["count"])} streams of {int(state["cap"])} '
                       f'steps; this run expects {self.num_envs} of {self.cap} (replay_capacity '
                       'and num_envs must match the run being resumed)')
    self.count = np.array(state['count'], np.int64)
    self.ready = np.array(state['ready'], np.int64)
    self.data = {}
    for name, value in state.items():
      if name.startswith('data/'):
        full = np.zeros((self.num_envs, self.cap) + value.shape[2:], value.dtype)
        full[:, :value.shape[1]] = value
        self.data[name[len('data/'):]] = full

  def save(self, path) -> None:
    path = epath.Path(path)
    buffer = io.BytesIO()
    np.savez(buffer, **self.state_dict())  # uncompressed: frames barely compress, saving is fast
    atomic.write(path, buffer.getvalue())

  def load(self, path) -> None:
    with epath.Path(path).open('rb') as f, np.load(f) as npz:
      self.load_state_dict({k: npz[k] for k in npz.files})
