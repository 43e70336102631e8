import os

import numpy as np
import pytest

from viper_jax.data import collect, episodes, policies
from viper_jax.data.store import EpisodeStore


class ConstantPolicy:
  """Stands in for a trained agent checkpoint: always the same action."""

  def __init__(self, value, env):
    self.action = np.full(env.action_space.shape, float(value), np.float32)

  def reset(self, seed):
    pass

  def __call__(self, obs, info):
    return self.action


def load_constant_policy(argument, env):
  return ConstantPolicy(argument, env)


LOADERS = {'constant': load_constant_policy}


def _files(store, task):
  return {f'{split}/{p.name}': p for split in ('train', 'test') for p in store.paths(task, split)}


def test_collect_writes_every_planned_episode(tiny_config, tmp_path):
  tiny_config.collect.policy = 'constant:0.5'
  result = collect.run(tiny_config, tmp_path, LOADERS)
  store = EpisodeStore(tmp_path / 'episodes')
  files = _files(store, 'dmc:cartpole-balance')
  assert sorted(files) == ['test/constant-noise0.00-0000.npz', 'test/constant-noise0.50-0000.npz',
                           'test/random-0000.npz', 'train/constant-noise0.00-0000.npz',
                           'train/constant-noise0.00-0001.npz']
  episode = episodes.load_episode(files['train/constant-noise0.00-0000.npz'])
  assert episode['image'].shape == (13, 16, 16, 3)  # reset frame + 12 steps
  assert episode['is_last'][-1] and not episode['is_terminal'].any()
  assert episode['reward'][0] == 0 and episode['source'] == 'constant:0.5'
  np.testing.assert_allclose(episode['action'][:, 0], 0.5)
  random_episode = episodes.load_episode(files['test/random-0000.npz'])
  assert random_episode['source'] == 'random' and np.ptp(random_episode['action']) > 0
  rows = {(r['split'], r['policy'], r['noise']): r for r in result['rows']}
  assert rows[('train', 'constant:0.5', 0.0)]['episodes'] == 2
  assert rows[('test', 'random', 0.0)]['episodes'] == 1
  assert (tmp_path / 'episodes' / 'dmc_cartpole-balance' / 'collect_summary.json').exists()


def test_collect_resumes_keeping_existing_and_redoing_broken(tiny_config, tmp_path, capsys):
  tiny_config.collect.policy = 'constant:-0.3'
  assert collect.run(tiny_config, tmp_path, LOADERS)['new_episodes'] == 5
  store = EpisodeStore(tmp_path / 'episodes')
  files = _files(store, 'dmc:cartpole-balance')
  before = {name: path.read_bytes() for name, path in files.items()}
  mtimes = {name: os.stat(path).st_mtime_ns for name, path in files.items()}
  assert collect.run(tiny_config, tmp_path, LOADERS)['new_episodes'] == 0  # nothing redone
  files['train/constant-noise0.00-0001.npz'].unlink()
  broken = files['test/random-0000.npz']
  broken.write_bytes(before['test/random-0000.npz'][:100])  # as if killed mid-copy
  capsys.readouterr()
  assert collect.run(tiny_config, tmp_path, LOADERS)['new_episodes'] == 2
  assert 'random-0000.npz' in capsys.readouterr().out  # the broken file is reported by path
  for name, path in _files(store, 'dmc:cartpole-balance').items():
    # Recollected episodes are identical (fixed seeds); the others were not touched.
    assert path.read_bytes() == before[name] or np.array_equal(
        episodes.load_episode(path)['image'], _load_bytes(before[name])['image'])
    if name not in ('train/constant-noise0.00-0001.npz', 'test/random-0000.npz'):
      assert os.stat(path).st_mtime_ns == mtimes[name]


def _load_bytes(data):
  import io
  with np.load(io.BytesIO(data)) as npz:
    return {k: npz[k] for k in npz.files}


def test_parallel_workers_give_the_same_episodes(tiny_config, tmp_path):
  tiny_config.collect.policy = 'constant:0.2'
  collect.run(tiny_config, tmp_path / 'one', LOADERS)
  tiny_config.collect.workers = 2
  collect.run(tiny_config, tmp_path / 'two', LOADERS)
  one = _files(EpisodeStore(tmp_path / 'one' / 'episodes'), 'dmc:cartpole-balance')
  two = _files(EpisodeStore(tmp_path / 'two' / 'episodes'), 'dmc:cartpole-balance')
  assert sorted(one) == sorted(two)
  for name in one:
    a, b = episodes.load_episode(one[name]), episodes.load_episode(two[name])
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['action'], b['action'])


def test_unknown_policy_kind_is_an_error(tiny_config, tmp_path):
  tiny_config.collect.policy = 'mystery:1'
  with pytest.raises(ValueError, match='mystery'):
    collect.run(tiny_config, tmp_path, LOADERS)


def test_data_layer_never_imports_the_agent():
  """Collection gets agent policies from its caller (pipeline.policy_loaders), not by import."""
  import pathlib
  data = pathlib.Path(collect.__file__).parent
  offenders = [str(p) for p in data.rglob('*.py') if 'viper_jax.agent' in p.read_text()]
  assert offenders == []
  with pytest.raises(ValueError, match=r"agent:x.*\[none given\]"):
    policies.loader_for('agent:x', {})


def test_train_random_steps_start_train_episodes_from_random_states(tiny_config, tmp_path):
  tiny_config.collect.policy = 'constant:0.5'
  tiny_config.collect.train_episodes = 4
  tiny_config.collect.train_random_steps = 6
  collect.run(tiny_config, tmp_path, LOADERS)
  store = EpisodeStore(tmp_path / 'episodes')
  files = _files(store, 'dmc:cartpole-balance')
  warmups = []
  for name, path in files.items():
    episode = episodes.load_episode(path)
    if name.startswith('test/'):
      assert 'warmup_steps' not in episode and len(episode['reward']) == 13  # test split as before
      continue
    warmup = int(episode['warmup_steps'])
    warmups.append(warmup)
    assert 0 <= warmup <= 6 and len(episode['reward']) == 13 - warmup  # the time limit counts it
    assert episode['is_first'][0] and episode['reward'][0] == 0
  assert len(set(warmups)) > 1, warmups  # drawn per episode


def test_train_random_states_add_episodes_from_random_joint_states(tiny_config, tmp_path):
  """The extra train episodes start from random joint states and leave the task-start ones as
  they were (same names, same frames)."""
  tiny_config.collect.policy = 'constant:0.5'
  tiny_config.collect.train_episodes = 2
  collect.run(tiny_config, tmp_path / 'a', LOADERS)
  tiny_config.collect.train_random_states = 3
  collect.run(tiny_config, tmp_path / 'b', LOADERS)
  before = _files(EpisodeStore(tmp_path / 'a' / 'episodes'), 'dmc:cartpole-balance')
  after = _files(EpisodeStore(tmp_path / 'b' / 'episodes'), 'dmc:cartpole-balance')
  added = sorted(set(after) - set(before))
  assert added == [f'train/constant-noise0.00-{i:04d}.npz' for i in (2, 3, 4)]
  for name, path in before.items():
    np.testing.assert_array_equal(episodes.load_episode(path)['image'],
                                  episodes.load_episode(after[name])['image'])
    assert 'initial_state' not in episodes.load_episode(after[name])
  starts = [episodes.load_episode(after[name]) for name in added]
  assert all(str(e['initial_state']) == 'random' for e in starts)
  first = [e['image'][0] for e in starts] + [episodes.load_episode(before['train/constant-noise0.00-0000.npz'])['image'][0]]
  assert len({f.tobytes() for f in first}) == len(first)  # every start differs
