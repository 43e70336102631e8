import functools

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from viper_jax import envs


def _rollout_frames(env, seed, steps=6):
  obs, _ = env.reset(seed=seed)
  frames = [obs]
  rng = np.random.default_rng(0)
  for _ in range(steps):
    obs, *_ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
    frames.append(obs)
  return np.stack(frames)


@pytest.mark.parametrize('name', ['dmc:cartpole-swingup', 'dmc:reacher-easy'])
def test_dmc_passes_gymnasium_checker(name):
  env = envs.make(name, size=(32, 32), seed=0)
  check_env(env, skip_render_check=True)
  obs, info = env.reset(seed=1)
  assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
  assert env.observation_space.contains(obs)
  assert isinstance(env.action_space, gymnasium.spaces.Box)
  assert 'state' in info


def test_dmc_same_seed_same_frames_and_different_seed_differs():
  env_a = envs.make('dmc:cartpole-swingup', size=(32, 32))
  env_b = envs.make('dmc:cartpole-swingup', size=(32, 32))
  a = _rollout_frames(env_a, seed=3)
  np.testing.assert_array_equal(a, _rollout_frames(env_b, seed=3))
  np.testing.assert_array_equal(a, _rollout_frames(env_a, seed=3))
  assert not np.array_equal(a, _rollout_frames(env_a, seed=4))


def test_dmc_time_limit_truncates_and_action_repeat_sums_reward():
  env = envs.make('dmc:cartpole-balance', size=(16, 16), time_limit=5, action_repeat=3)
  env.reset(seed=0)
  flags = [env.step(np.zeros(1, np.float32))[2:4] for _ in range(5)]
  assert flags[-1] == (False, True) and all(f == (False, False) for f in flags[:-1])
  # Balance gives at most 1 per control step, so 3 control steps give more than 1.
  env.reset(seed=0)
  assert 1.0 < env.step(np.zeros(1, np.float32))[1] <= 3.0
  assert envs.make('dmc:cartpole-balance', size=(16, 16)).time_limit == 500


def test_dmc_random_state_reset_spreads_the_pole_and_reports_its_state():
  """reset(options={'random_state': True}) starts anywhere: the observation, the state the expert
  reads and the physics agree, and the seed decides the state."""
  env = envs.make('dmc:cartpole-swingup', size=(32, 32))
  cosines, frames = [], {}
  for seed in range(8):
    obs, info = env.reset(seed=seed, options={'random_state': True})
    x, cos, sin = info['state']['position']
    angle = float(env.physics.named.data.qpos['hinge_1'][0])
    np.testing.assert_allclose([cos, sin], [np.cos(angle), np.sin(angle)], atol=1e-6)
    assert abs(x - env.physics.named.data.qpos['slider'][0]) < 1e-6 and abs(x) <= 0.9 + 1e-6
    np.testing.assert_array_equal(obs, env.render())
    cosines.append(cos)
    frames[seed] = obs
  assert min(cosines) < -0.3 and max(cosines) > 0.3  # not the task's hanging start every time
  obs, _ = env.reset(seed=3, options={'random_state': True})
  np.testing.assert_array_equal(obs, frames[3])
  _, info = env.reset(seed=3)  # the task's own start without the option
  assert info['state']['position'][1] < -0.99


def test_unknown_environment_names_list_valid_ones():
  with pytest.raises(ValueError, match='dmc:cartpole-swingup'):
    envs.make('dmc:cartpole-flip')
  with pytest.raises(ValueError, match='Valid names'):
    envs.make('gym:CartPole-v1')


def test_every_required_dmc_task_builds():
  required = ['cartpole-balance', 'cartpole-swingup', 'pendulum-swingup', 'point_mass-easy',
              'reacher-easy', 'reacher-hard', 'walker-walk', 'cheetah-run', 'finger-spin',
              'hopper-stand', 'quadruped-walk']
  for task in required:
    env = envs.make(f'dmc:{task}', size=(16, 16))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16, 16, 3) and obs.std() > 0, task  # something is rendered


@pytest.mark.parametrize('mode', ['serial', 'process'])
def test_batched_env_auto_resets_like_the_episode_format(mode):
  make = functools.partial(envs.make, 'dmc:cartpole-balance', size=(16, 16), time_limit=3)
  with envs.BatchedEnv([make, make], mode=mode) as batched:
    actions = np.zeros((2, 1), np.float32)
    steps = [batched.step(actions, seeds=[0, 1])[0] for _ in range(5)]
  first = np.stack([s['is_first'] for s in steps])
  last = np.stack([s['is_last'] for s in steps])
  # Reset, 3 steps (last one truncates), then reset again.
  np.testing.assert_array_equal(first[:, 0], [True, False, False, False, True])
  np.testing.assert_array_equal(last[:, 0], [False, False, False, True, False])
  assert steps[0]['image'].shape == (2, 16, 16, 3) and steps[0]['reward'].dtype == np.float32
  assert np.all(steps[0]['reward'] == 0)
  assert not np.array_equal(steps[0]['image'][0], steps[0]['image'][1])  # seeds differ


def test_batched_env_matches_single_envs():
  make = functools.partial(envs.make, 'dmc:cartpole-swingup', size=(16, 16))
  batched = envs.BatchedEnv([make, make])
  rng = np.random.default_rng(1)
  actions = rng.uniform(-1, 1, (4, 2, 1)).astype(np.float32)
  out = [batched.step(actions[0], seeds=[5, 6])[0]] + [batched.step(a)[0] for a in actions[:3]]
  for i, seed in enumerate([5, 6]):
    env = make()
    frames = [env.reset(seed=seed)[0]] + [env.step(a[i])[0] for a in actions[:3]]
    np.testing.assert_array_equal(np.stack(frames), np.stack([o['image'][i] for o in out]))
