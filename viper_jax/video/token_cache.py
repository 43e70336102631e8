"""The token cache: every episode encoded once by the tokenizer, stored beside the episodes.

Layout: `<store root>/<task dir>/tokens/{train,test}/<episode name>.npy` (uint16 codes [T, h, w])
and `<store root>/<task dir>/tokens/fingerprint.json`. The fingerprint identifies the tokenizer
checkpoint (its directory, step and a digest of its parameters); when it changes, the cache of that
task is deleted and rebuilt. Each file is written atomically, so an interrupted build resumes.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import uuid
from typing import Callable

import jax
import numpy as np
import tqdm
from etils import epath

from viper_jax.data import episodes as episodes_lib
from viper_jax.data import loaders
from viper_jax.data.store import SPLITS, EpisodeStore, task_dirname


def params_digest(params) -> str:
  """A short hash of a parameter pytree (host values), to tell tokenizer checkpoints apart."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.asarray(jax.device_get(leaf)).tobytes())
  return digest.hexdigest()[:16]


def token_dir(store: EpisodeStore, task: str) -> epath.Path:
  return store.root / task_dirname(task) / 'tokens'


def _write_npy(path: epath.Path, array: np.ndarray) -> None:
  buffer = io.BytesIO()
  np.save(buffer, array)
  temp = path.parent / f'{path.name}.tmp-{uuid.uuid4().hex}'
  temp.write_bytes(buffer.getvalue())
  temp.replace(path)


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
  """Encodes every episode of `tasks` not cached under this fingerprint; returns how many.

  encode_fn: uint8 [batch_size, H, W, 3] -> int codes [batch_size, h, w] (jitted, sharded).
  """
  todo = []
  for task in tasks:
    directory = token_dir(store, task)
    stamp = directory / 'fingerprint.json'
    if directory.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != fingerprint):
      shutil.rmtree(str(directory))  # made by another tokenizer: codes would not match
    for split in SPLITS:
      for path in store.paths(task, split):
        target = directory / split / path.name.replace('.npz', '.npy')
        if not target.exists():
          todo.append((task, path, target))
  for task in tasks:
    directory = token_dir(store, task)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'fingerprint.json').write_text(json.dumps(fingerprint, sort_keys=True))
  for task, path, target in tqdm.tqdm(todo, desc='tokenize', unit='ep', disable=not todo):
    frames = loaders.mask_frames(episodes_lib.load_episode(path)['image'], task, mask_score)
    codes = encode_episode(frames, encode_fn, batch_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_npy(target, codes.astype(np.uint16))
  return len(todo)


def load(store: EpisodeStore, tasks: list[str], split: str, fingerprint: dict,
         max_noise: float | None = 0.0) -> list[loaders.CodeEpisode]:
  """Cached codes of the selected episodes; task ids are positions in `tasks`.

  max_noise: keep expert episodes up to this noise (None keeps every episode, random included).
  """
  keep = loaders.video_episode_filter(max_noise) if max_noise is not None else (lambda m: True)
  result = []
  for task_id, task in enumerate(tasks):
    directory = token_dir(store, task)
    stamp = directory / 'fingerprint.json'
    if not stamp.exists() or json.loads(stamp.read_text()) != fingerprint:
      raise ValueError(f'token cache of {task} in {directory} is missing or was made by another '
                       'tokenizer checkpoint; run `viper tokenize` (or train-prior, which builds it)')
    for path in store.paths(task, split):
      if not keep(episodes_lib.load_episode(path, keys=())):
        continue
      cached = directory / split / path.name.replace('.npz', '.npy')
      if not cached.exists():
        raise ValueError(f'{cached}: no cached codes for episode {path}; rebuild the token cache')
      with cached.open('rb') as f:
        codes = np.load(f)
      result.append(loaders.CodeEpisode(codes=codes, task_id=task_id, name=path.name))
  return result
