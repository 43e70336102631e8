"""The sections every experiment config has, with their defaults, for experiments/*.py to share.

An experiment config is one ConfigDict: task, seed, env, collect, data, tokenizer, prior, reward,
agent. `experiment(task, ...)` builds it; experiment files override what differs. Only
ml_collections and the preset modules are imported, so loading a config stays fast.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from viper_jax.agent.configs import agent_config
from viper_jax.video import presets


def suite_task(arg: str, suite: str, names: tuple[str, ...], what: str):
  """Parses an experiment file's ARG: 'name', '<suite>:name' or 'all'.

  Returns (name, task, tasks): task is the one the agent trains on; tasks are the tasks of one
  task-conditioned video model ('all': every name of the suite, else ()). Raises ValueError for a
  name outside `names`, naming `what` ('DMC task', 'Atari game').
  """
  name = arg.split(':', 1)[1] if arg.startswith(f'{suite}:') else arg
  if name != 'all' and name not in names:
    raise ValueError(f'unknown {what} {arg!r}; expected "all" or one of {", ".join(names)}')
  tasks = tuple(f'{suite}:{n}' for n in names) if name == 'all' else ()
  return name, (tasks[0] if tasks else f'{suite}:{name}'), tasks


def experiment(task: str, *, tokenizer: str, prior: str, agent: str,
               tasks: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  """A full experiment config for `task` with the given preset sizes.

  tasks: the tasks of one task-conditioned video model ((): just `task`); `task` is then the one
  the agent trains on and is scored as.
  """
  config = ml_collections.ConfigDict()
  config.task = task
  config.seed = 0

  config.env = ml_collections.ConfigDict()
  config.env.size = (64, 64)
  config.env.action_repeat = config_dict.placeholder(int)  # None: DMC 2, Atari 4 (frameskip)
  config.env.time_limit = config_dict.placeholder(int)  # agent steps; None: the suite's episode

  config.collect = ml_collections.ConfigDict()
  config.collect.policy = 'expert'  # 'expert' | 'random' | 'agent:<checkpoint dir>'
  config.collect.train_noise_levels = (0.0,)
  config.collect.test_noise_levels = (0.0, 0.25, 0.5, 0.75)
  config.collect.train_episodes = 8  # per train noise level
  # Train episodes start after 0..N unrecorded random-policy steps (0: the task's own starts), so
  # the expert's videos also show it recovering from states a learner reaches.
  config.collect.train_random_steps = 0
  # DMC: this many more train episodes per noise level start from a random joint state (every
  # hinge at any angle, sliders anywhere mid-range, random velocities), so the videos also show
  # the expert recovering from states far from the task's start (envs.dmc.random_joint_state).
  config.collect.train_random_states = 0
  config.collect.test_episodes = 1  # per test noise level
  config.collect.random_test_episodes = 2
  config.collect.workers = 2
  config.collect.root = config_dict.placeholder(str)  # default: <workdir>/episodes

  # Which episodes the video model learns from.
  config.data = ml_collections.ConfigDict()
  config.data.root = config_dict.placeholder(str)  # episode store; default: <workdir>/episodes
  config.data.tasks = tuple(tasks)  # tasks of one (task-conditioned) model; () means (task,)
  config.data.max_noise = 0.0  # only expert episodes up to this noise level
  # The video model learns from (and reward-stats measures) each expert episode without its first
  # N frames, as the reference dropped the first 50 of its videos: the task's start pose is in
  # every episode, so a density would otherwise rank it among the expert's likeliest states.
  config.data.drop_first_frames = 0
  config.data.mask_score = True  # Atari score regions zeroed before tokenizing and scoring

  config.tokenizer = presets.tokenizer(tokenizer)
  config.prior = presets.prior(prior)
  config.reward = presets.reward()
  config.agent = agent_config(agent)
  return config

