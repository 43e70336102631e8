"""The quickstart experiment: a small run of the VIPER pipeline on one DMC task, CPU-sized.

Usage: viper collect --config=experiments/quickstart.py[:TASK] --workdir=runs/quickstart
TASK defaults to dmc:cartpole-swingup.
"""
import ml_collections
from ml_collections import config_dict

from viper_jax.video import presets


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = arg or 'dmc:cartpole-swingup'
  config.seed = 0

  config.env = ml_collections.ConfigDict()
  config.env.size = (64, 64)
  config.env.action_repeat = 2
  config.env.time_limit = config_dict.placeholder(int)  # agent steps; None: the suite's episode

  config.collect = ml_collections.ConfigDict()
  config.collect.policy = 'expert'  # 'expert' | 'random' | 'agent:<checkpoint dir>'
  config.collect.train_noise_levels = (0.0,)
  config.collect.test_noise_levels = (0.0, 0.25, 0.5, 0.75)
  config.collect.train_episodes = 8  # per train noise level
  config.collect.test_episodes = 1  # per test noise level
  config.collect.random_test_episodes = 2
  config.collect.workers = 2
  config.collect.root = config_dict.placeholder(str)  # default: <workdir>/episodes

  # Which episodes the video model learns from.
  config.data = ml_collections.ConfigDict()
  config.data.root = config_dict.placeholder(str)  # episode store; default: <workdir>/episodes
  config.data.tasks = ()  # tasks of one (task-conditioned) model; () means (config.task,)
  config.data.max_noise = 0.0  # only expert episodes up to this noise level
  config.data.mask_score = True  # Atari score regions zeroed before tokenizing

  config.tokenizer = presets.tokenizer('small')
  config.prior = presets.prior('small')
  config.reward = presets.reward()

  config.lock()
  return config
