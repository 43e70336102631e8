"""Every paper task's experiment config builds and validates (no training)."""
import pytest

from viper_jax import configs, validation
from viper_jax.reward import likelihood
from viper_jax.video import priors



def _tasks(path):
  import importlib.util
  spec = importlib.util.spec_from_file_location('exp', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


DMC_TASKS = _tasks('experiments/dmc.py').DMC_TASKS
ATARI_GAMES = _tasks('experiments/atari.py').ATARI_GAMES


@pytest.mark.parametrize('spec,tokens', [(f'experiments/dmc.py:{t}', 64) for t in DMC_TASKS] +
                         [('experiments/dmc.py:all', 64)] +
                         [(f'experiments/atari.py:{g}', 256) for g in ATARI_GAMES] +
                         [('experiments/atari.py:all', 256)] +
                         [('experiments/quickstart.py', 64), ('experiments/agent_cpu.py', 64)])
def test_paper_configs_build_and_validate(spec, tokens):
  config = configs.load_config(spec)
  validation.validate(config)
  tasks = likelihood.task_names(config)
  prior = priors.build_prior(config, len(tasks))
  assert prior.tokens_per_frame == tokens
  if spec.endswith(':all'):
    assert len(tasks) == (len(DMC_TASKS) if 'dmc' in spec else len(ATARI_GAMES))
  if 'dmc.py' in spec:
    assert (prior.num_layers, prior.width, prior.context) == (8, 256, 16)
    assert prior.task_conditioning
  if 'atari.py' in spec:
    assert (prior.width, prior.context, config.prior.frame_skip) == (512, 4, 4)
    assert not prior.task_conditioning and config.data.mask_score


def test_unknown_task_is_a_clear_error():
  with pytest.raises(ValueError, match='unknown DMC task'):
    configs.load_config('experiments/dmc.py:cartpole-fly')
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-fly')
  with pytest.raises(configs.ConfigError, match='unknown task'):
    validation.validate(config)


def test_agent_cpu_config_is_the_documented_learning_run():
  config = configs.load_config('experiments/agent_cpu.py')
  assert config.task == 'dmc:cartpole-balance'
  a = config.agent
  # 100k environment frames (policy steps x action repeat) of full 1000-frame episodes.
  assert a.env_steps * config.env.action_repeat == 100_000
  assert config.env.time_limit * config.env.action_repeat == 1000
  assert a.reward_source == 'env' and a.replay_capacity >= a.env_steps


def test_agent_cpu_swingup_is_the_single_frame_reward_model_that_learned():
  config = configs.load_config('experiments/agent_cpu.py:dmc:cartpole-swingup')
  validation.validate(config)
  assert (config.prior.context, config.prior.train.window) == (1, 1)
  assert config.data.drop_first_frames == 6 and config.collect.train_random_states == 64
  assert (config.reward.scale, config.reward.floor_percentile) == ('floor_unit', 20)
  assert priors.build_prior(config, 1).context == 1
