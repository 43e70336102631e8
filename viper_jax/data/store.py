"""EpisodeStore: episodes on disk as `<root>/<task dir>/{train,test}/*.npz` (local or gs://)."""
from __future__ import annotations

from typing import Callable, Iterator

from etils import epath

from viper_jax.data import episodes as episodes_lib

SPLITS = ('train', 'test')


def task_dirname(task: str) -> str:
  """'dmc:cartpole-swingup' -> 'dmc_cartpole-swingup' (no ':' in paths; suites have no '_')."""
  return task.replace(':', '_', 1)


def task_from_dirname(dirname: str) -> str:
  suite, sep, rest = dirname.partition('_')
  return f'{suite}:{rest}' if sep else dirname


class EpisodeStore:
  """Reads and writes episodes under one root. Files are validated on read; see episodes.py."""

  def __init__(self, root):
    self.root = epath.Path(root)

  def __repr__(self):
    return f'EpisodeStore({str(self.root)!r})'

  def _split_dir(self, task: str, split: str) -> epath.Path:
    if split not in SPLITS:
      raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    return self.root / task_dirname(task) / split

  def tasks(self) -> list[str]:
    """Tasks that have at least one split directory, sorted (the order defines task ids)."""
    if not self.root.exists():
      return []
    return sorted(task_from_dirname(d.name) for d in self.root.iterdir()
                  if d.is_dir() and any((d / s).exists() for s in SPLITS))

  def path(self, task: str, split: str, name: str) -> epath.Path:
    name = name if name.endswith('.npz') else f'{name}.npz'
    return self._split_dir(task, split) / name

  def paths(self, task: str, split: str) -> list[epath.Path]:
    """Episode files of a task and split, sorted by name (temp files of crashed writes excluded)."""
    directory = self._split_dir(task, split)
    if not directory.exists():
      return []
    return sorted(p for p in directory.iterdir() if p.name.endswith('.npz'))

  def action_repeat(self, tasks: list[str], split: str = 'train') -> int | None:
    """The action repeat the episodes of `tasks` were recorded at (from their metadata), or None
    when none of them records it (e.g. imported videos). Mixed values raise ValueError: a video
    model must learn one frame rate."""
    values = {}
    for task in tasks:
      for path in self.paths(task, split):
        repeat = episodes_lib.load_episode(path, keys=()).get('action_repeat')
        if repeat is not None:
          values.setdefault(int(repeat), str(path))
    if len(values) > 1:
      raise ValueError(f'{split} episodes of {tasks} in {self.root} mix action repeats '
                       f'{sorted(values)} (e.g. {sorted(values.values())[:2]}); a video model '
                       'needs videos of one frame rate')
    return next(iter(values), None)

  def save(self, episode: dict, split: str, name: str) -> epath.Path:
    return episodes_lib.save_episode(self.path(episode['task'], split, name), episode)

  def load(self, path) -> dict:
    return episodes_lib.load_episode(path)

  def episodes(self, task: str, split: str,
               where: Callable[[dict], bool] | None = None) -> Iterator[dict]:
    """Yields validated episodes; a malformed file raises EpisodeError naming it.

    where: optional filter on the episode's metadata (e.g. lambda m: m['noise'] == 0).
    """
    for path in self.paths(task, split):
      if where is not None:
        metadata = episodes_lib.load_episode(path, keys=())
        if not where(metadata):
          continue
      yield episodes_lib.load_episode(path)
