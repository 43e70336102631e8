"""Atomic file writes: a temp file beside the target, then a rename (local paths and gs://).

A crash mid-write leaves at most a '<name>.tmp-<hex>' file, never a truncated file under the
target's name; a rerun overwrites what a broken write left there.
"""
from __future__ import annotations

import io
import json
import os
import uuid

import numpy as np
from etils import epath


def write(path, data: bytes | str) -> epath.Path:
  """Writes bytes (or text, UTF-8) to `path` atomically, creating its folder; returns the path."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_temp(path, data).replace(path)
  return path


def create_json(path, value) -> bool:
  """Writes json.dumps(value) to `path` unless it exists (then False). Local paths only: the temp
  file is hard-linked into place, which fails if `path` exists, so no reader ever sees the new
  file half-written (as it could after O_CREAT | O_EXCL and a write)."""
  path = epath.Path(path)
  temp = _write_temp(path, json.dumps(value))
  try:
    os.link(temp, path)
  except FileExistsError:
    return False
  finally:
    temp.unlink()
  return True


def _write_temp(path: epath.Path, data: bytes | str) -> epath.Path:
  """data written to a new '<name>.tmp-<hex>' file beside `path`; returns the temp file."""
  temp = path.parent / f'{path.name}.tmp-{uuid.uuid4().hex}'
  if isinstance(data, str):
    temp.write_text(data)
  else:
    temp.write_bytes(data)
  return temp


def write_json(path, value, indent: int | None = None) -> epath.Path:
  """`write` of json.dumps(value, indent=indent)."""
  return write(path, json.dumps(value, indent=indent))


def write_npz(path, **arrays) -> epath.Path:
  """`write` of a compressed .npz holding `arrays` (name -> array)."""
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  return write(path, buffer.getvalue())
