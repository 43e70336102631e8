"""The episode format: one episode per .npz file, written atomically, read with validation.

Step arrays (all of length T):
  image        uint8   [T, H, W, 3]  the frame x_t
  action       float32 [T, A] (continuous) or int32 [T] (discrete): the action taken *at* x_t
               (the last one is never executed)
  reward       float32 [T]  the reward for *arriving* at x_t (0 at the first step)
  is_first     bool    [T]  True at t = 0
  is_last      bool    [T]  True at the final step (terminal or time limit)
  is_terminal  bool    [T]  True where the episode ended by termination (not time limit)
Metadata (0-d arrays in the file, Python scalars in memory):
  task (str), source (str, e.g. 'expert:scripted', 'random', 'agent:<run>'), seed (int);
  optional: noise (float), action_repeat (int), and any other scalar.
"""
from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
from etils import epath

from viper_jax import atomic

STEP_KEYS = ('image', 'action', 'reward', 'is_first', 'is_last', 'is_terminal')
REQUIRED_METADATA = ('task', 'source', 'seed')
_BOOL_KEYS = ('is_first', 'is_last', 'is_terminal')


class EpisodeError(ValueError):
  """A malformed episode; the message names the file (when there is one) and what was wrong."""


def episode_length(episode: dict) -> int:
  return int(len(episode['image']))


def episode_return(episode: dict) -> float:
  return float(np.sum(episode['reward'], dtype=np.float64))


def validate_episode(episode: dict, where: str = 'episode') -> None:
  """Raises EpisodeError (mentioning `where`) unless `episode` follows the format above."""
  missing = [k for k in STEP_KEYS + REQUIRED_METADATA if k not in episode]
  if missing:
    raise EpisodeError(f'{where}: missing keys {missing}; an episode needs {list(STEP_KEYS)} '
                       f'and metadata {list(REQUIRED_METADATA)}')
  image = episode['image']
  if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 4
          and image.shape[-1] == 3):
    raise EpisodeError(f'{where}: image must be uint8 [T, H, W, 3], got '
                       f'{getattr(image, "dtype", type(image))} {getattr(image, "shape", "")}')
  length = image.shape[0]
  if length < 1:
    raise EpisodeError(f'{where}: episode has no steps (T = 0)')
  for key in STEP_KEYS[1:]:
    value = episode[key]
    if not isinstance(value, np.ndarray) or value.ndim < 1 or value.shape[0] != length:
      raise EpisodeError(f'{where}: {key} must have T = {length} steps like image, got shape '
                         f'{getattr(value, "shape", type(value))}')
  action = episode['action']
  if not ((action.dtype == np.float32 and action.ndim == 2)
          or (action.dtype == np.int32 and action.ndim == 1)):
    raise EpisodeError(f'{where}: action must be float32 [T, A] or int32 [T], got '
                       f'{action.dtype} {action.shape}')
  if episode['reward'].dtype != np.float32 or episode['reward'].ndim != 1:
    raise EpisodeError(f'{where}: reward must be float32 [T], got {episode["reward"].dtype} '
                       f'{episode["reward"].shape}')
  for key in _BOOL_KEYS:
    if episode[key].dtype != np.bool_ or episode[key].ndim != 1:
      raise EpisodeError(f'{where}: {key} must be bool [T], got {episode[key].dtype} '
                         f'{episode[key].shape}')
  if not episode['is_first'][0]:
    raise EpisodeError(f'{where}: is_first[0] must be True')
  if np.any(episode['is_terminal'] & ~episode['is_last']):
    raise EpisodeError(f'{where}: is_terminal is set on a step that is not is_last')
  for key in REQUIRED_METADATA:
    if not np.isscalar(episode[key]):
      raise EpisodeError(f'{where}: metadata {key!r} must be a scalar, got {episode[key]!r}')


def make_episode(steps: dict[str, list], **metadata: Any) -> dict:
  """Stacks per-step lists into an episode dict with the right dtypes and validates it."""
  action = np.asarray(steps['action'])
  action = action.astype(np.int32) if np.issubdtype(action.dtype, np.integer) else (
      action.astype(np.float32).reshape(len(action), -1))
  episode = {
      'image': np.asarray(steps['image'], np.uint8),
      'action': action,
      'reward': np.asarray(steps['reward'], np.float32),
      **{key: np.asarray(steps[key], bool) for key in _BOOL_KEYS},
      **metadata,
  }
  validate_episode(episode)
  return episode


def save_episode(path, episode: dict) -> epath.Path:
  """Validates and writes `episode` to `path` (.npz) atomically: temp file, then rename.

  A crash mid-write leaves at most a '*.tmp-*' file, never a truncated episode under `path`.
  Works for local paths and gs:// (etils.epath).
  """
  path = epath.Path(path)
  validate_episode(episode, where=str(path))
  arrays = {k: (np.asarray(v) if k in STEP_KEYS else np.array(v)) for k, v in episode.items()}
  return atomic.write_npz(path, **arrays)  # overwrites a broken file being redone


def _scalar(value: np.ndarray):
  return value.item() if value.dtype.kind != 'U' else str(value)


def load_episode(path, keys: tuple[str, ...] | None = None) -> dict:
  """Reads and validates an episode file; any problem raises EpisodeError naming the path.

  keys: load only these step keys (plus metadata) without validating the full format; e.g.
  ('reward',) reads returns without decompressing frames.
  """
  path = epath.Path(path)
  try:
    # np.load reads zip members lazily from the open file, so a `keys` subset does not read the
    # frames from disk at all (metadata filters and return summaries stay cheap).
    with path.open('rb') as f, np.load(f, allow_pickle=False) as npz:
      names = npz.files if keys is None else [
          n for n in npz.files if n in keys or n not in STEP_KEYS]
      episode = {}
      for name in names:
        value = npz[name]
        episode[name] = _scalar(value) if value.ndim == 0 else value
  except FileNotFoundError:
    raise EpisodeError(f'{path}: episode file does not exist') from None
  except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
    raise EpisodeError(f'{path}: unreadable or truncated episode file ({type(e).__name__}: {e})'
                       ) from e
  if keys is None:
    validate_episode(episode, where=str(path))
  else:
    missing = [k for k in keys if k not in episode]
    if missing:
      raise EpisodeError(f'{path}: missing keys {missing}')
  return episode
