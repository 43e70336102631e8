import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import pytest  # noqa: E402


@pytest.fixture
def tiny_config():
  """The quickstart config shrunk to seconds: 16x16 frames, 12-step episodes, 1 worker."""
  from viper_jax import configs
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-balance')
  config.env.size = (16, 16)
  config.env.time_limit = 12
  config.collect.train_episodes = 2
  config.collect.test_episodes = 1
  config.collect.test_noise_levels = (0.0, 0.5)
  config.collect.random_test_episodes = 1
  config.collect.workers = 1
  return config
