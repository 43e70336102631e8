"""The token cache: every episode encoded once by a tokenizer, stored beside the episodes.

Layout: `<store root>/<task dir>/tokens/<key>/{train,test}/<episode name>.npy` (uint16 codes
[T, h, w]) and `.../tokens/<key>/fingerprint.json`. The fingerprint identifies the tokenizer
by its weights (step and a digest of its parameters, not its directory: a copied or moved
tokenizer reuses its codes) and `key` is a hash of it, so each tokenizer has its own cache:
experiments that share an episode store (a sweep, a gs:// bucket) never overwrite or delete each
other's codes, even while running at the same time.
Nothing here deletes anything; the caches of old tokenizers stay until a person removes them.

Each file is written atomically, so an interrupted build resumes. Only process 0 writes; in a
multi-host run every process takes part in encoding (the encoder is one sharded program) and
the others wait at a barrier until the files are there.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Callable

import jax
import numpy as np
import tqdm
from etils import epath

from viper_jax import atomic
from viper_jax.data import episodes as episodes_lib
from viper_jax.data import loaders
from viper_jax.data.store import SPLITS, EpisodeStore, task_dirname


def params_digest(params) -> str:
  """A short hash of a parameter pytree (host values), to tell tokenizer checkpoints apart."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(jax.device_get(leaf)).tobytes())
  return digest.hexdigest()[:16]


def cache_key(fingerprint: dict) -> str:
  """The folder name of a tokenizer's cache: a short hash of its fingerprint."""
  return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def token_dir(store: EpisodeStore, task: str, fingerprint: dict) -> epath.Path:
  """Where the codes of `task` made by the tokenizer of `fingerprint` are cached."""
  return store.root / task_dirname(task) / 'tokens' / cache_key(fingerprint)


def _cached_path(directory: epath.Path, split: str, episode: epath.Path) -> epath.Path:
  return directory / split / episode.name.replace('.npz', '.npy')


def encode_episode(frames: np.ndarray, encode_fn: Callable, batch_size: int) -> np.ndarray:
  """Codes [T, h, w] of frames uint8 [T, H, W, 3], in fixed-size batches (one compilation)."""
  chunks = []
  for start in range(0, len(frames), batch_size):
    chunk = frames[start:start + batch_size]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)])
    chunks.append(np.asarray(encode_fn(padded))[:len(chunk)])
  return np.concatenate(chunks)


def build(store: EpisodeStore, tasks: list[str], encode_fn: Callable, fingerprint: dict,
          batch_size: int = 256, mask_score: bool = True) -> int:
  """Encodes every episode of `tasks` not yet cached for this tokenizer; returns how many.

  encode_fn: uint8 [batch_size, H, W, 3] -> int codes [batch_size, h, w] (jitted, sharded).
  Every process calls it (multi-host: in the same order); only process 0 writes.
  """
  writer = jax.process_index() == 0
  todo = []
  for task in tasks:
    directory = token_dir(store, task, fingerprint)
    if writer and not (directory / 'fingerprint.json').exists():
      atomic.write(directory / 'fingerprint.json', json.dumps(fingerprint, sort_keys=True))
    for split in SPLITS:
      for path in store.paths(task, split):
        target = _cached_path(directory, split, path)
        if not target.exists():
          todo.append((task, path, target))
  if jax.process_count() > 1:  # every process encodes the same list (process 0 saw it first)
    from jax.experimental import multihost_utils
    count = int(multihost_utils.broadcast_one_to_all(np.int32(len(todo))))
    if count != len(todo):
      raise RuntimeError(f'processes disagree on the token cache to build ({len(todo)} here, '
                         f'{count} on process 0); is the episode store shared by all hosts?')
  for task, path, target in tqdm.tqdm(todo, desc='tokenize', unit='ep',
                                      disable=not todo or not writer):
    frames = loaders.mask_frames(episodes_lib.load_episode(path)['image'], task, mask_score)
    codes = encode_episode(frames, encode_fn, batch_size)
    if writer:
      buffer = io.BytesIO()
      np.save(buffer, codes.astype(np.uint16))
      atomic.write(target, buffer.getvalue())
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('token_cache_built')  # the others read after this
  return len(todo)


def load(store: EpisodeStore, tasks: list[str], split: str, fingerprint: dict,
         max_noise: float | None = 0.0, drop_first: int = 0) -> list[loaders.CodeEpisode]:
  """Cached codes of the selected episodes; task ids are positions in `tasks`.

  max_noise: keep expert episodes up to this noise (None keeps every episode, random included).
  drop_first: leave out each episode's first frames (config data.drop_first_frames).
  """
  keep = loaders.video_episode_filter(max_noise) if max_noise is not None else (lambda m: True)
  result = []
  for task_id, task in enumerate(tasks):
    directory = token_dir(store, task, fingerprint)
    if not (directory / 'fingerprint.json').exists():
      raise ValueError(f'no token cache of {task} for this tokenizer checkpoint in {directory} '
                       '(another tokenizer made the caches there, if any): `viper train-prior` '
                       'builds it')
    for path in store.paths(task, split):
      if not keep(episodes_lib.load_episode(path, keys=())):
        continue
      cached = _cached_path(directory, split, path)
      if not cached.exists():
        raise ValueError(f'{cached}: no cached codes for episode {path}; `viper train-prior` '
                         'builds the missing ones')
      with cached.open('rb') as f:
        codes = np.load(f)
      result.append(loaders.CodeEpisode(codes=codes[drop_first:], task_id=task_id, name=path.name))
  return result
