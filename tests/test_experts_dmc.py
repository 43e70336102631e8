"""Scripted DMC experts: the action contract, and clearly better than random on short episodes."""
import numpy as np
import pytest

from viper_jax.data.experts.dmc import DMC_EXPERTS
from viper_jax.data.policies import RandomPolicy
from viper_jax.envs.dmc import DMCEnv

NAMES = sorted(DMC_EXPERTS)
SEEDS = (0, 1)
# Short episodes of 400 control steps (200 agent steps at the default action repeat of 2): long
# enough for every expert to reach its goal and bank some reward (the slowest, pendulum swing-up
# and the sparse cartpole swing-up at action repeat 4, take ~250-300).
CONTROL_STEPS = 400
# Rewards are at most 1 per control step, so the best short-episode return is CONTROL_STEPS.
# The expert must beat random by 15% of that (60). On these seeds random gets 0-12 everywhere but
# cartpole-balance (~175-210: the pole takes a while to fall) and balance_sparse (~25-90); the
# smallest expert lead (sparse swing-up at repeat 4, ~104 vs 0) is still well above the margin.
MARGIN = 0.15 * CONTROL_STEPS


def _make(name, blank_frames=False, **kwargs):
  domain, task = name.split(':', 1)[1].split('-', 1)
  env = DMCEnv(domain, task, size=(16, 16), **kwargs)
  if blank_frames:
    # Software rendering costs ~15 ms a frame whatever the size, and the experts read only
    # info['state'], so blank frames keep these tests fast (and show the pixels go unused).
    blank = np.zeros(env.observation_space.shape, np.uint8)
    env.physics.render = lambda *args, **kw: blank
  return env


def _check_action(action, env):
  assert isinstance(action, np.ndarray)
  assert action.shape == env.action_space.shape and action.dtype == np.float32
  assert env.action_space.contains(action), action


def _episode_return(env, policy, seed, check_actions=False):
  obs, info = env.reset(seed=seed)
  policy.reset(seed)
  total, done = 0.0, False
  while not done:
    action = policy(obs, info)
    if check_actions:
      _check_action(action, env)
    obs, reward, terminated, truncated, info = env.step(action)
    total += reward
    done = terminated or truncated
  return total


@pytest.mark.parametrize('name', NAMES)
def test_actions_are_in_the_action_space(name):
  # With real frames; the episode tests below check every action at other action repeats.
  env = _make(name, time_limit=5)
  _episode_return(env, DMC_EXPERTS[name](env), seed=3, check_actions=True)
  env.close()


def test_required_tasks_have_experts():
  required = {'dmc:cartpole-balance', 'dmc:cartpole-swingup', 'dmc:pendulum-swingup',
              'dmc:point_mass-easy', 'dmc:reacher-easy'}
  assert required <= set(DMC_EXPERTS)


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('action_repeat', [1, 2, 4])
def test_expert_clearly_beats_random(name, action_repeat):
  env = _make(name, blank_frames=True, action_repeat=action_repeat,
              time_limit=CONTROL_STEPS // action_repeat)
  expert = DMC_EXPERTS[name](env)
  expert_return = np.mean([_episode_return(env, expert, s, check_actions=True) for s in SEEDS])
  random_return = np.mean([_episode_return(env, RandomPolicy(env.action_space), s)
                           for s in SEEDS])
  env.close()
  assert expert_return > random_return + MARGIN, (expert_return, random_return)
