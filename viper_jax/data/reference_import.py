"""Import the reference VIPER dataset layout into an EpisodeStore.

Reference layout: `<src>/<task folder>/{train,test}/*.npz|*.mp4`, each file one video of uint8
frames [T, 64, 64, 3] (npz key `arr_0`). Task folders are names like `cartpole_swingup`; they are
mapped to our names (`dmc:cartpole-swingup`) when they match a known task of `suite`. Videos carry
no actions or rewards: imported episodes have action float32 [T, 0] and zero rewards.
"""
from __future__ import annotations

import numpy as np
from etils import epath

from viper_jax.data import episodes as episodes_lib
from viper_jax.data.store import SPLITS, EpisodeStore

VIDEO_SUFFIXES = ('.npz', '.mp4')


def reference_task_name(folder: str, suite: str, known: list[str]) -> str:
  """Maps a reference folder name ('point_mass_easy') to ours ('dmc:point_mass-easy')."""
  for name in known:
    if name.startswith(f'{suite}:') and name.split(':', 1)[1].replace('-', '_') == folder:
      return name
  return f'{suite}:{folder}'


def read_video(path) -> np.ndarray:
  """Frames uint8 [T, H, W, 3] from a reference .npz (key arr_0) or .mp4 file."""
  path = epath.Path(path)
  try:
    if path.suffix == '.npz':
      with path.open('rb') as f, np.load(f, allow_pickle=False) as npz:
        key = 'arr_0' if 'arr_0' in npz.files else npz.files[0]
        frames = npz[key]
    else:
      import imageio.v3 as iio
      frames = iio.imread(str(path), index=None)
  except Exception as e:  # any decoder failure is reported with the file it came from
    raise episodes_lib.EpisodeError(f'{path}: cannot read video ({type(e).__name__}: {e})') from e
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 1:
    raise episodes_lib.EpisodeError(f'{path}: expected uint8 frames [T, H, W, 3], got '
                                    f'{frames.dtype} {frames.shape}')
  return frames


def video_to_episode(frames: np.ndarray, task: str, source: str) -> dict:
  length = len(frames)
  is_last = np.zeros(length, bool)
  is_last[-1] = True
  return episodes_lib.make_episode(
      {'image': frames, 'action': np.zeros((length, 0), np.float32),
       'reward': np.zeros(length, np.float32), 'is_first': np.arange(length) == 0,
       'is_last': is_last, 'is_terminal': np.zeros(length, bool)},
      task=task, source=source, seed=-1)


def import_reference_dataset(src, store: EpisodeStore, suite: str = 'dmc',
                             known_tasks: list[str] | None = None) -> dict[str, int]:
  """Copies every reference video under `src` into `store`; returns {task: episodes imported}.

  Already imported files (same name) are skipped, so an interrupted import resumes.
  """
  src = epath.Path(src)
  if not src.is_dir():
    raise FileNotFoundError(f'reference dataset folder {src} does not exist')
  if known_tasks is None:
    from viper_jax.envs import env_names
    known_tasks = env_names()
  counts: dict[str, int] = {}
  for task_dir in sorted(d for d in src.iterdir() if d.is_dir()):
    task = reference_task_name(task_dir.name, suite, known_tasks)
    for split in SPLITS:
      split_dir = task_dir / split
      if not split_dir.is_dir():
        continue
      for video in sorted(p for p in split_dir.iterdir() if p.suffix in VIDEO_SUFFIXES):
        target = store.path(task, split, f'{video.stem}{video.suffix.replace(".", "_")}')
        if not target.exists():
          episode = video_to_episode(read_video(video), task,
                                     f'import:reference:{task_dir.name}/{split}/{video.name}')
          episodes_lib.save_episode(target, episode)
        counts[task] = counts.get(task, 0) + 1
  return counts
