import numpy as np
import pytest

from viper_jax.data import episodes, reference_import
from viper_jax.data.store import EpisodeStore


def _episode(length=5, task='dmc:cartpole-swingup', discrete=False):
  rng = np.random.default_rng(length)
  is_last = np.arange(length) == length - 1
  return {
      'image': rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8),
      'action': (rng.integers(0, 6, length).astype(np.int32) if discrete
                 else rng.normal(size=(length, 2)).astype(np.float32)),
      'reward': rng.normal(size=length).astype(np.float32),
      'is_first': np.arange(length) == 0, 'is_last': is_last, 'is_terminal': is_last.copy(),
      'task': task, 'source': 'expert:scripted', 'seed': 7, 'noise': 0.25,
  }


@pytest.mark.parametrize('discrete', [False, True])
def test_round_trip_keeps_arrays_dtypes_and_metadata(tmp_path, discrete):
  original = _episode(discrete=discrete)
  path = episodes.save_episode(tmp_path / 'a' / 'ep.npz', original)
  loaded = episodes.load_episode(path)
  assert set(loaded) == set(original)
  for key, value in original.items():
    if isinstance(value, np.ndarray):
      assert loaded[key].dtype == value.dtype
      np.testing.assert_array_equal(loaded[key], value)
    else:
      assert loaded[key] == value and type(loaded[key]) is type(value)
  assert [p.name for p in (tmp_path / 'a').iterdir()] == ['ep.npz']  # no temp file left


def test_truncated_file_is_reported_by_path(tmp_path):
  path = episodes.save_episode(tmp_path / 'ep.npz', _episode())
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(episodes.EpisodeError, match=str(path)):
    episodes.load_episode(path)
  (tmp_path / 'garbage.npz').write_bytes(b'not a zip file')
  with pytest.raises(episodes.EpisodeError, match='garbage.npz'):
    episodes.load_episode(tmp_path / 'garbage.npz')


@pytest.mark.parametrize('mutate, message', [
    (lambda e: e.pop('reward'), 'missing keys'),
    (lambda e: e.update(image=e['image'].astype(np.float32)), 'image must be uint8'),
    (lambda e: e.update(reward=e['reward'][:-1]), 'reward must have T = 5'),
    (lambda e: e.update(is_first=np.zeros(5, bool)), 'is_first'),
    (lambda e: e.update(action=e['action'].astype(np.float64)), 'action must be'),
])
def test_malformed_episode_is_rejected_with_reason(tmp_path, mutate, message):
  bad = _episode()
  mutate(bad)
  with pytest.raises(episodes.EpisodeError, match=message):
    episodes.save_episode(tmp_path / 'bad.npz', bad)
  # The same problem in a file written by someone else is reported by path.
  np.savez(tmp_path / 'bad.npz', **{k: np.asarray(v) for k, v in bad.items()})
  with pytest.raises(episodes.EpisodeError, match='bad.npz'):
    episodes.load_episode(tmp_path / 'bad.npz')


def test_store_layout_and_malformed_file_not_dropped(tmp_path):
  store = EpisodeStore(tmp_path)
  store.save(_episode(task='dmc:point_mass-easy'), 'train', 'b')
  store.save(_episode(task='dmc:point_mass-easy'), 'train', 'a')
  store.save(_episode(task='atari:pong', discrete=True), 'test', 'x')
  assert (tmp_path / 'dmc_point_mass-easy' / 'train' / 'a.npz').exists()
  assert store.tasks() == ['atari:pong', 'dmc:point_mass-easy']
  assert [p.name for p in store.paths('dmc:point_mass-easy', 'train')] == ['a.npz', 'b.npz']
  assert len(list(store.episodes('dmc:point_mass-easy', 'train'))) == 2
  assert not list(store.episodes('dmc:point_mass-easy', 'train', where=lambda m: m['seed'] != 7))
  (tmp_path / 'dmc_point_mass-easy' / 'train' / 'c.npz').write_bytes(b'PK\x03\x04broken')
  with pytest.raises(episodes.EpisodeError, match='c.npz'):
    list(store.episodes('dmc:point_mass-easy', 'train'))
  with pytest.raises(ValueError, match='split'):
    store.paths('dmc:point_mass-easy', 'valid')


def test_import_reference_layout_npz_and_mp4(tmp_path):
  import imageio
  src = tmp_path / 'reference'
  frames = np.random.default_rng(0).integers(0, 255, (6, 64, 64, 3), dtype=np.uint8)
  (src / 'cartpole_swingup' / 'train').mkdir(parents=True)
  np.savez(src / 'cartpole_swingup' / 'train' / 'ep0.npz', frames)
  (src / 'point_mass_easy' / 'test').mkdir(parents=True)
  imageio.mimwrite(src / 'point_mass_easy' / 'test' / 'ep1.mp4', list(frames), fps=10,
                   macro_block_size=1)
  store = EpisodeStore(tmp_path / 'store')
  known = ['dmc:cartpole-swingup', 'dmc:point_mass-easy']
  counts = reference_import.import_reference_dataset(src, store, known_tasks=known)
  assert counts == {'dmc:cartpole-swingup': 1, 'dmc:point_mass-easy': 1}
  (train,) = store.episodes('dmc:cartpole-swingup', 'train')
  np.testing.assert_array_equal(train['image'], frames)
  assert train['action'].shape == (6, 0) and train['source'].startswith('import:reference')
  (test,) = store.episodes('dmc:point_mass-easy', 'test')
  assert test['image'].shape == (6, 64, 64, 3)  # mp4 is lossy: shape only
  # A second import skips what is there; a broken video is reported by path.
  assert reference_import.import_reference_dataset(src, store, known_tasks=known) == counts
  (src / 'cartpole_swingup' / 'train' / 'broken.npz').write_bytes(b'nope')
  with pytest.raises(episodes.EpisodeError, match='broken.npz'):
    reference_import.import_reference_dataset(src, store, known_tasks=known)
