"""The paper's Atari experiments at paper scale (accelerators).

  viper train-prior --config=experiments/atari.py:pong --workdir=...
  viper train-prior --config=experiments/atari.py:all --workdir=...   # one model for all games

ARG: a game of ATARI_GAMES ('pong' or 'atari:pong'), or 'all'. As in the reference, the Atari
video model is not task-conditioned (one model for every game), sees every 4th frame with a
4-frame context on a 16x16 code grid (presets 'atari'), and score regions are masked per game.
Expert videos: scripted experts for pong and freeway, otherwise a trained agent
(--config.collect.policy=agent:<dir>).
"""
import ml_collections

from viper_jax.config_sections import experiment, suite_task

# The 8 games of the reference dataset (the paper reports 7 of them).
ATARI_GAMES = ('assault', 'atlantis', 'boxing', 'defender', 'freeway', 'kangaroo', 'pong',
               'zaxxon')
SCRIPTED = ('freeway', 'pong')


def get_config(arg: str = 'pong') -> ml_collections.ConfigDict:
  name, task, tasks = suite_task(arg, 'atari', ATARI_GAMES, 'Atari game')
  config = experiment(task, tokenizer='atari', prior='atari', agent='s', tasks=tasks)
  config.env.action_repeat = 4  # ALE frameskip
  config.collect.train_episodes = 200
  config.collect.test_episodes = 5
  config.collect.random_test_episodes = 5
  config.collect.workers = 16
  if name not in SCRIPTED:
    config.collect.policy = 'agent:'  # complete with the agent's checkpoint dir
  config.agent.reward_source = 'viper+disag'
  config.agent.env_steps = 10_000_000
  config.lock()
  return config
