"""Atomic file writes: a temp file beside the target, then a rename (local paths and gs://).

A crash mid-write leaves at most a '<name>.tmp-<hex>' file, never a truncated file under the
target's name; a rerun overwrites what a broken write left there.
"""
from __future__ import annotations

import io
import json
import uuid

import numpy as np
from etils import epath


def write(path, data: bytes | str) -> epath.Path:
  """Writes bytes (or text, UTF-8) to `path` atomically, creating its folder; returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  temp = path.parent / f'{path.name}.tmp-{uuid.uuid4().hex}'
  if isinstance(data, str):
    temp.write_text(data)
  else:
    temp.write_bytes(data)
  temp.replace(path)
  return path


def write_json(path, value, indent: int | None = None) -> epath.Path:
  """`write` of json.dumps(value, indent=indent)."""
  return write(path, json.dumps(value, indent=indent))


def write_npz(path, **arrays) -> epath.Path:
  """`write` of a compressed .npz holding `arrays` (name -> array)."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  return write(path, buffer.getvalue())
