"""The quickstart experiment: a small run of the VIPER pipeline on one DMC task, CPU-sized.

Usage: viper collect --config=experiments/quickstart.py[:TASK] --workdir=runs/quickstart
TASK defaults to dmc:cartpole-swingup.
"""
import ml_collections

from viper_jax.config_sections import experiment


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = experiment(arg or 'dmc:cartpole-swingup', tokenizer='small', prior='small', agent='xs')
  config.env.action_repeat = 2
  config.agent.reward_source = 'viper'  # the VIPER likelihood only; the task reward is never used
  config.lock()
  return config
