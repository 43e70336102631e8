"""The ranking statistics of `viper reward-check` on hand-worked cases."""
import numpy as np

from viper_jax.reward import check


def test_spearman():
  assert check.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
  assert check.spearman([1, 2, 3, 4], [9, 7, 5, 1]) == -1.0
  # monotone but not linear still counts as a perfect ranking
  np.testing.assert_allclose(check.spearman([1, 2, 3, 4], [1, 8, 27, 1000]), 1.0)
  # ranks (1, 2, 3) vs (1, 3, 2): 1 - 6 * 2 / (3 * 8) = 0.5
  np.testing.assert_allclose(check.spearman([1, 2, 3], [5, 9, 7]), 0.5)
  assert np.isnan(check.spearman([1, 2, 3], [4, 4, 4]))


def test_auroc():
  assert check.auroc([3, 4], [1, 2]) == 1.0
  assert check.auroc([1, 2], [3, 4]) == 0.0
  assert check.auroc([2, 3], [2, 1]) == (1 + 1 + 0.5 + 1) / 4


def test_spearman_and_auroc_agree_with_a_pairwise_count_on_tied_data():
  """Against definitions written out here (ties included), on random data with many ties."""
  rng = np.random.default_rng(0)
  x, y = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 30).astype(float)

  def average_ranks(v):
    return np.array([np.sum(v < e) + (np.sum(v == e) + 1) / 2 for e in v])

  np.testing.assert_allclose(check.spearman(x, y),
                             np.corrcoef(average_ranks(x), average_ranks(y))[0, 1], rtol=1e-12)
  pos, neg = x[:12], y[:7]
  pairs = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
  np.testing.assert_allclose(check.auroc(pos, neg), pairs.mean(), rtol=1e-12)


def test_episode_groups():
  assert check.episode_group('expert-noise0.00-0000.npz', 'expert:scripted') == 'expert'
  assert check.episode_group('expert-noise0.25-0001.npz', 'expert:scripted') == 'noise0.25'
  assert check.episode_group('random-0000.npz', 'random') == 'random'


def test_spearman_ceiling_counts_the_ties_of_the_true_returns():
  assert check.spearman_ceiling([3.0, 1.0, 2.0, 5.0]) == 1.0
  # average ranks (1.5, 1.5, 3) against any distinct order (1, 2, 3): 1.5 / sqrt(1.5 * 2)
  np.testing.assert_allclose(check.spearman_ceiling([0.0, 0.0, 1.0]), np.sqrt(3) / 2)
  rng = np.random.default_rng(1)
  true = np.r_[np.zeros(21), rng.uniform(1, 500, 9)]  # pendulum-like: most episodes fail
  ceiling = check.spearman_ceiling(true)
  for _ in range(20):  # no reward without ties does better, whatever order it gives the failures
    reward = true + rng.uniform(0, 0.5, true.size)
    assert check.spearman(reward, true) <= ceiling + 1e-12
  assert ceiling < 0.9


def test_spearman_interval_brackets_the_estimate():
  np.testing.assert_allclose(check.spearman_interval([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]), [1, 1])
  rng = np.random.default_rng(2)
  true = rng.normal(size=30)
  mean = true + rng.normal(size=30)
  low, high = check.spearman_interval(mean, true)
  assert low < check.spearman(mean, true) < high < 1.0
  assert check.spearman_interval(mean, true) == [low, high], 'a fixed seed: the same interval'
