"""The reward-shape diagnostic on hand-built data whose answer is known."""
import json

import numpy as np
import pytest
from scipy import stats

from viper_jax.agent.replay import Replay
from viper_jax.reward import shape


class BrightnessModel:
  """A stand-in reward model: the reward of arriving at a frame is its mean brightness."""

  def task_id(self, name):
    return 0

  def log_likelihood(self, frames, task_ids):
    return np.asarray(frames, np.float32).mean(axis=(2, 3, 4))


def _frames(values):
  return np.broadcast_to(np.asarray(values, np.uint8)[:, None, None, None],
                         (len(values), 4, 4, 3)).copy()


def test_summary_spearman_and_bins_of_a_known_answer():
  true = np.repeat(np.arange(8.0), 10)  # 8 levels, 10 steps each: one bin per level
  viper = -100 + 10 * true  # monotone in the true reward
  s = shape.summarize(viper, true, num_bins=8)
  assert s['spearman'] == pytest.approx(1.0) and s['steps'] == 80
  assert [b['count'] for b in s['bins']] == [10] * 8
  np.testing.assert_allclose([b['mean'] for b in s['bins']], -100 + 10 * np.arange(8))
  # A reward flat below half the range (the failure this diagnostic exists for): the bins show
  # it, and so does the Spearman restricted to the steps away from the expert.
  peaked = np.where(true >= 4, viper, -250.0) + np.random.default_rng(0).normal(0, 1, 80)
  p = shape.summarize(peaked, true, num_bins=8)
  assert abs(p['spearman_low']) < 0.5 and p['low_steps'] == 40
  assert p['spearman'] == pytest.approx(stats.spearmanr(peaked, true).statistic)
  with pytest.raises(ValueError, match='one length'):
    shape.summarize(viper[:5], true)


def test_episode_spearman_ranks_summed_reward_against_return():
  """Per step the reward below is noise around the true reward, but its episode sums keep the
  returns' order: the per-episode figure sees what the per-step one misses."""
  rng = np.random.default_rng(0)
  episode = np.repeat(np.arange(10), 50)
  true = rng.uniform(0, 1, 500) + 0.5 * episode  # return rises with the episode index
  viper = true + rng.normal(0, 3, 500)
  s = shape.summarize(viper, true, episode)
  returns = np.bincount(episode, true)
  sums = np.bincount(episode, viper)
  assert s['episodes'] == 10
  assert s['episode_spearman'] == pytest.approx(stats.spearmanr(sums, returns).statistic)
  assert s['episode_spearman'] > 0.9 and s['spearman'] < 0.6
  assert 'episode_spearman' not in shape.summarize(viper, true)  # no episodes given
  assert np.isnan(shape.summarize(viper[:100], true[:100], episode[:100])['episode_spearman'])
  with pytest.raises(ValueError, match='episode must be'):
    shape.summarize(viper, true, episode[:5])


def test_replay_is_split_into_episodes_and_aligned_to_arrival(tmp_path):
  """Step t of a replay holds frame x_t and the reward for arriving at it; the diagnostic must pair
  lp[:, t] with that reward. Brightness = true reward, so aligned scores correlate perfectly while
  a one-step shift would not (the values are random)."""
  rng = np.random.default_rng(1)
  replay = Replay(capacity=2 * 30, num_envs=2)
  length = 10  # episodes of 10 steps; 50 steps per stream wrap its 30-step ring
  for t in range(50):
    value = rng.integers(0, 200, 2)
    first = np.full(2, t % length == 0)
    replay.add({'image': np.stack([_frames([v])[0] for v in value]),
                'reward': np.where(first, 0.0, value).astype(np.float32),
                'is_first': first})
  path = tmp_path / 'replay_50.npz'
  replay.save(path)
  episodes = list(shape.replay_episodes(path))
  # The 30 newest steps of each stream, from its first is_first on: 3 whole episodes per stream.
  assert [len(e['reward']) for e in episodes] == [length] * 6
  viper, true, episode = shape.score(BrightnessModel(), episodes, 'dmc:x')
  assert len(true) == 6 * (length - 1)  # step 0 of each episode (no arrival) is left out
  np.testing.assert_array_equal(episode, np.repeat(np.arange(6), length - 1))
  np.testing.assert_allclose(viper, true)
  s = shape.summarize(viper, true, episode)
  assert s['spearman'] == pytest.approx(1.0) == s['episode_spearman'] and s['episodes'] == 6
  shifted = shape.summarize(viper[1:], true[:-1])['spearman']
  assert abs(shifted) < 0.5


def test_write_and_source_errors(tmp_path):
  true = np.linspace(0, 1, 30)
  result = shape.write(shape.summarize(true, true), tmp_path, 'hand-built')
  on_disk = json.loads((tmp_path / shape.SHAPE_JSON).read_text())
  assert on_disk['spearman'] == pytest.approx(1.0) == result['spearman']
  assert (tmp_path / shape.SHAPE_PNG).stat().st_size > 0
  (tmp_path / 'empty').mkdir()
  with pytest.raises(FileNotFoundError, match='replay_<step>.npz'):
    shape.episodes_from(tmp_path / 'empty', None, 'dmc:x')
