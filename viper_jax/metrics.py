"""Metric writers: TensorBoard scalars/images plus a metrics.jsonl any script can read back.

Only host 0 writes (multi-host runs would otherwise write N copies).
"""
from __future__ import annotations

import json
import math
import time

import jax
import numpy as np
from etils import epath

from viper_jax import atomic


def _to_float(value) -> float:
  return float(np.asarray(value))


class MetricWriter:
  """`write(step, {'loss': ...})` appends to <logdir>/metrics.jsonl and TensorBoard.

  resume_step: the step the run restarts from (0 when fresh). Rows logged after it by the run
  that was killed are dropped, so the rerun's rows replace them instead of appearing twice in
  plots and reports. TensorBoard event files are append-only, so there the new event file starts
  with a purge marker at resume_step + 1: TensorBoard hides the killed run's later events.
  """

  def __init__(self, logdir, tensorboard: bool = True, resume_step: int | None = None):
    self.logdir = epath.Path(logdir)
    self.active = jax.process_index() == 0
    self._tb = None
    if self.active:
      self.logdir.mkdir(parents=True, exist_ok=True)
      if resume_step is not None:
        _drop_rows_after(self.logdir / 'metrics.jsonl', resume_step)
      if tensorboard:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(str(self.logdir / 'tb'),
                                 purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: dict) -> None:
    if not self.active:
      return
    values = {k: _to_float(v) for k, v in scalars.items()}
    with (self.logdir / 'metrics.jsonl').open('a') as f:
      f.write(json.dumps({'step': int(step), 'time': time.time(), **values}) + '\n')
    if self._tb is not None:
      for key, value in values.items():
        self._tb.add_scalar(key, value, int(step))
      self._tb.flush()

  def write_image(self, step: int, name: str, image: np.ndarray) -> None:
    """image: uint8 [H, W, 3]; also saved as <logdir>/images/<name>_<step>.png."""
    if not self.active:
      return
    save_png(self.logdir / 'images' / f'{name}_{int(step):08d}.png', image)
    if self._tb is not None:
      self._tb.add_image(name, np.asarray(image), int(step), dataformats='HWC')
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def _drop_rows_after(path: epath.Path, step: int) -> None:
  """Rewrites a metrics.jsonl without its rows past `step` (atomically: temp file + rename)."""
  if not path.exists():
    return
  lines = path.read_text().splitlines()
  kept = [line for line in lines if _row_step(line) <= step]
  if len(kept) == len(lines):
    return
  atomic.write(path, ''.join(line + '\n' for line in kept))


def _row_step(line: str) -> float:
  try:
    return json.loads(line)['step']
  except (json.JSONDecodeError, KeyError, TypeError):
    return math.inf  # a line cut by a crash: drop it too


def read_metrics(logdir) -> list[dict]:
  """Rows of <logdir>/metrics.jsonl; a line cut by a crash at the end is skipped."""
  path = epath.Path(logdir) / 'metrics.jsonl'
  rows = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def save_png(path, image: np.ndarray) -> None:
  from PIL import Image
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    Image.fromarray(np.asarray(image, np.uint8)).save(f, format='PNG')


def save_figure(fig, path, dpi: int | None = None) -> epath.Path:
  """Writes a matplotlib figure as PNG (local or gs://) and closes it."""
  import matplotlib.pyplot as plt
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open('wb') as f:
    fig.savefig(f, format='png', dpi=dpi)
  plt.close(fig)
  return path


def image_grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
  """Tiles uint8 images: rows of [N, H, W, 3] arrays -> one uint8 [R*(H+pad), N*(W+pad), 3]."""
  rows = [np.asarray(r, np.uint8) for r in rows]
  n, h, w, _ = rows[0].shape
  grid = np.full((len(rows) * (h + pad), n * (w + pad), 3), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      grid[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = image
  return grid


def save_video(path, frames: np.ndarray, fps: int = 10) -> None:
  """frames uint8 [T, H, W, 3] -> .gif or .mp4 (by suffix)."""
  import imageio
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  frames = np.asarray(frames, np.uint8)
  if path.suffix == '.gif':
    imageio.mimwrite(str(path), list(frames), duration=1000 / fps, loop=0)
  else:
    imageio.mimwrite(str(path), list(frames), fps=fps, macro_block_size=1)
