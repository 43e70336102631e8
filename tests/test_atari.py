import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from viper_jax import envs
from viper_jax.envs import atari, score_masks

REQUIRED_MASKED_GAMES = ['pong', 'breakout', 'freeway', 'boxing', 'ms_pacman', 'seaquest',
                         'space_invaders', 'asteroids', 'assault', 'atlantis', 'defender',
                         'kangaroo', 'zaxxon']


def _rollout(env, seed, steps=60):
  """Frames [steps + 1, H, W, 3] and RAMs under a fixed action sequence."""
  obs, info = env.reset(seed=seed)
  frames, rams = [obs], [info['ram']]
  actions = np.random.default_rng(0).integers(env.action_space.n, size=steps)
  for action in actions:
    obs, _, terminated, truncated, info = env.step(action)
    frames.append(obs)
    rams.append(info['ram'])
    assert not (terminated or truncated)
  return np.stack(frames), np.stack(rams)


def test_atari_passes_gymnasium_checker_and_reports_ram():
  env = envs.make('atari:pong', seed=0)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # "no spec" notice: we build envs without gymnasium.make.
    check_env(env)
  obs, info = env.reset(seed=1)
  assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
  assert env.observation_space.contains(obs)
  assert isinstance(env.action_space, gymnasium.spaces.Discrete) and env.action_space.n == 6
  assert info['ram'].shape == (128,) and info['ram'].dtype == np.uint8
  assert isinstance(info['lives'], int)
  assert env.render() is obs
  assert env.action_repeat == 4 and env.time_limit == 27000
  env.step(0)
  assert env.ale.getEpisodeFrameNumber() == 4  # one agent step = action_repeat frames
  with pytest.raises(ValueError, match='action'):
    env.step(6)


def test_same_seed_same_frames_with_sticky_actions():
  env_a = envs.make('atari:breakout', size=(32, 32))
  env_b = envs.make('atari:breakout', size=(32, 32))
  frames, rams = _rollout(env_a, seed=3)
  np.testing.assert_array_equal(frames, _rollout(env_b, seed=3)[0])
  np.testing.assert_array_equal(frames, _rollout(env_a, seed=3)[0])
  # Sticky actions draw from the seed: another seed moves the paddle differently.
  assert not np.array_equal(rams, _rollout(env_a, seed=4)[1])
  # The constructor's seed serves the first unseeded reset.
  seeded = envs.make('atari:breakout', size=(32, 32), seed=3)
  np.testing.assert_array_equal(seeded.reset()[0], frames[0])


def test_time_limit_truncates():
  env = envs.make('atari:pong', size=(16, 16), time_limit=3)
  env.reset(seed=0)
  flags = [env.step(0)[2:4] for _ in range(3)]
  assert flags == [(False, False), (False, False), (False, True)]


def test_pong_score_region_is_zero_in_observations():
  masked = envs.make('atari:pong', seed=0)
  raw = envs.make('atari:pong', seed=0, mask_score=False)
  masked_frames, _ = _rollout(masked, seed=0, steps=30)
  raw_frames, _ = _rollout(raw, seed=0, steps=30)
  keep = score_masks.score_mask('pong', (64, 64))
  assert not keep[:7].any() and keep[7:].all()  # rows 0-20 of 210, rounded outward at 64 rows
  assert (masked_frames[:, ~keep] == 0).all()
  assert (raw_frames[:, ~keep] != 0).any()  # not black to begin with
  np.testing.assert_array_equal(masked_frames[:, keep], raw_frames[:, keep])


def test_score_mask_on_numpy_and_jax_batches():
  import jax
  import jax.numpy as jnp
  frames = np.random.default_rng(0).integers(1, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
  keep = score_masks.score_mask('seaquest', (64, 64))
  out = score_masks.apply_score_mask(frames, 'seaquest')
  assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == frames.shape
  assert (out[..., ~keep, :] == 0).all()
  np.testing.assert_array_equal(out[..., keep, :], frames[..., keep, :])
  out_jax = score_masks.apply_score_mask(jnp.asarray(frames), 'seaquest')
  assert isinstance(out_jax, jax.Array) and out_jax.dtype == jnp.uint8
  np.testing.assert_array_equal(np.asarray(out_jax), out)
  jitted = jax.jit(lambda x: score_masks.apply_score_mask(x, 'atari:seaquest'))
  np.testing.assert_array_equal(np.asarray(jitted(jnp.asarray(frames[0, 0]))), out[0, 0])
  # Unknown games pass through untouched.
  assert not score_masks.has_score_region('nope')
  assert score_masks.score_mask('nope', (8, 8)).all()
  assert score_masks.apply_score_mask(frames, 'nope') is frames


def test_score_region_table_is_sane():
  games = atari.atari_game_names()
  for game in REQUIRED_MASKED_GAMES:
    assert score_masks.has_score_region(game) and score_masks.has_score_region(f'atari:{game}')
  for game, rects in score_masks.SCORE_REGIONS.items():
    assert f'atari:{game}' in games, game
    assert len(rects) >= 1, game
    for top, left, bottom, right in rects:
      assert 0 <= top < bottom <= 1 and 0 <= left < right <= 1, (game, top, left, bottom, right)
    # Rounded outward, at every size; and never most of the screen.
    for size in [(210, 160), (64, 64), (7, 5)]:
      keep = score_masks.score_mask(game, size)
      assert keep.shape == size and keep.dtype == bool
      for top, left, bottom, right in rects:
        # Every pixel the rectangle overlaps (beyond float noise) is masked.
        r0, c0 = np.floor([top * size[0] + 1e-6, left * size[1] + 1e-6]).astype(int)
        r1, c1 = np.ceil([bottom * size[0] - 1e-6, right * size[1] - 1e-6]).astype(int)
        assert not keep[r0:r1, c0:c1].any(), (game, size)
    assert score_masks.score_mask(game, (210, 160)).mean() > 0.7, game


def test_atari_names_and_unknown_game():
  names = atari.atari_game_names()
  assert {'atari:pong', 'atari:ms_pacman', 'atari:space_invaders'} <= set(names)
  assert all(name in envs.env_names() for name in names)
  with pytest.raises(ValueError, match='atari:pong'):
    envs.make('atari:nope')


def test_pong_expert_beats_random():
  from viper_jax.data.experts import make_expert
  from viper_jax.data.policies import RandomPolicy

  def points(policy_fn, seed=0, steps=1500):
    env = envs.make('atari:pong', size=(16, 16), seed=seed)
    policy = policy_fn(env)
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    won = lost = 0
    for _ in range(steps):
      obs, reward, terminated, truncated, info = env.step(policy(obs, info))
      won, lost = won + (reward > 0), lost + (reward < 0)
      if terminated or truncated:
        break
    return won, lost

  expert_won, expert_lost = points(lambda env: make_expert('atari:pong', env))
  random_won, random_lost = points(lambda env: RandomPolicy(env.action_space))
  # Over 1500 steps (~2 min of play) random concedes a whole game; the expert rarely a point
  # (0-1 over 10 seeds), and wins some.
  assert random_lost >= 15
  assert expert_lost <= 3
  assert expert_won - expert_lost > random_won - random_lost + 10
