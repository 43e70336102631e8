"""Bad config values fail before any work, naming the field and the allowed range."""
import subprocess
import sys

import pytest

from viper_jax import configs, validation
from viper_jax.data.store import EpisodeStore

from conftest import synthetic_episode


@pytest.fixture
def config():
  return configs.load_config('experiments/quickstart.py')


@pytest.mark.parametrize('field,value,expected', [
    ('tokenizer.train.steps', 0, 'tokenizer.train.steps = 0: must be an integer >= 1'),
    ('prior.train.steps', -5, 'prior.train.steps = -5: must be an integer >= 1'),
    ('tokenizer.train.batch_size', 0, 'tokenizer.train.batch_size = 0: must be an integer >= 1'),
    ('prior.train.batch_size', 0, 'prior.train.batch_size = 0: must be an integer >= 1'),
    ('agent.batch_size', 0, 'agent.batch_size = 0: must be an integer >= 1'),
    ('agent.env_steps', 0, 'agent.env_steps = 0: must be an integer >= 1'),
    ('prior.context', 0, 'prior.context = 0: must be an integer >= 1'),
    ('prior.context', 8, 'prior.context = 8: must be <= prior.train.window = 4'),
    ('reward.chunk_frames', 0, 'reward.chunk_frames = 0: must be an integer >= 1'),
    ('prior.kind', 'diffusion', "prior.kind = 'diffusion': must be one of 'ar', 'maskgit'"),
    ('tokenizer.train.decay', 'linear',
     "tokenizer.train.decay = 'linear': must be one of 'constant', 'cosine'"),
    ('prior.train.decay', 'step', "prior.train.decay = 'step': must be one of 'constant', 'cosine'"),
    ('agent.reward_source', 'oracle', "agent.reward_source = 'oracle': must be one of"),
    ('task', 'dmc:cartpole-fly', "task: unknown task 'dmc:cartpole-fly'"),
    ('agent.reward_task', 'dmc:nope-nope', "agent.reward_task: unknown task 'dmc:nope-nope'"),
    ('agent.train_ratio', 0, 'agent.train_ratio = 0: must be >= 0.0128'),
    ('prior.frame_skip', 200, 'prior.frame_skip = 200 with prior.train.window = 4 needs episodes '
     'of at least 601 frames, but env.time_limit = 250 gives 251'),
    ('collect.train_random_states', -1, 'collect.train_random_states = -1: must be an integer >= 0'),
    ('data.drop_first_frames', -2, 'data.drop_first_frames = -2: must be an integer >= 0'),
    ('data.drop_first_frames', 249, 'data.drop_first_frames = 249: must be <= 247 (env.time_limit '
     '= 250 gives 251 frames and a prior window spans 4)'),
])
def test_bad_value_names_the_field_and_the_allowed_range(config, field, value, expected):
  node, key = config, field.split('.')
  for part in key[:-1]:
    node = node[part]
  node[key[-1]] = value
  with pytest.raises(configs.ConfigError) as error:
    validation.validate(config)
  assert expected in str(error.value)


def test_train_ratio_yielding_zero_updates_says_how_large_it_must_be(config):
  a = config.agent
  a.env_steps, a.prefill, a.train_ratio = 300, 250, 1  # 50 steps x 1 / (2 x 8) = 3 updates: ok
  validation.validate(config, ['train-agent'])
  a.batch_size, a.batch_length = 16, 64  # 50 / 1024 < 1 update
  with pytest.raises(configs.ConfigError, match=r'agent.train_ratio = 1: must be >= 20.5'):
    validation.validate(config, ['train-agent'])


def test_reward_checkpoint_without_a_prior(config, tmp_path):
  config.agent.reward_checkpoint = str(tmp_path)
  with pytest.raises(configs.ConfigError, match='agent.reward_checkpoint = .* must be a workdir '
                     'holding a trained prior'):
    validation.validate(config, ['train-agent'])
  config.agent.reward_source = 'env'  # not used by this source: fine
  validation.validate(config, ['train-agent'])


def test_frame_skip_inconsistent_with_the_data_and_unknown_store_task(tmp_path):
  store = EpisodeStore(tmp_path / 'episodes')
  store.save(synthetic_episode(0, length=10), 'train', 'ep0')
  config = configs.load_config('experiments/quickstart.py:dmc:synthetic')
  config.env.time_limit = None
  config.prior.frame_skip = 4  # a 4-frame window at skip 4 spans 13 frames; episodes have 10
  with pytest.raises(configs.ConfigError, match='longest train episode of dmc:synthetic .* has 10'):
    validation.validate(config, ['train-prior'], tmp_path)
  config.prior.frame_skip = 3  # spans 10: fits
  validation.validate(config, ['train-prior'], tmp_path)
  config.data.tasks = ('dmc:synthetic', 'dmc:other')
  with pytest.raises(configs.ConfigError, match="data.tasks: unknown task 'dmc:other'"):
    validation.validate(config, ['train-tokenizer'], tmp_path)


def test_stages_fail_before_any_work(tmp_path, tiny_config):
  from viper_jax.data import collect
  from viper_jax.video import train_tokenizer
  tiny_config.collect.workers = 0
  with pytest.raises(configs.ConfigError, match='collect.workers = 0'):
    collect.run(tiny_config, tmp_path)
  tiny_config.collect.workers = 1
  tiny_config.tokenizer.train.steps = 0
  with pytest.raises(configs.ConfigError, match='tokenizer.train.steps = 0'):
    train_tokenizer.run(tiny_config, tmp_path)
  assert not (tmp_path / 'episodes').exists() and not (tmp_path / 'tokenizer').exists()


def test_viper_config_check_validates_without_running(tmp_path):
  command = [sys.executable, '-m', 'viper_jax.cli', 'config', '--config=experiments/quickstart.py',
             '--check', f'--workdir={tmp_path}']
  ok = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert ok.returncode == 0 and 'config OK' in ok.stdout, ok.stderr
  bad = subprocess.run(command + ['--config.prior.train.batch_size=0'], capture_output=True,
                       text=True, timeout=120)
  assert bad.returncode == 2
  assert 'prior.train.batch_size = 0: must be an integer >= 1' in bad.stderr
  assert list(tmp_path.iterdir()) == []  # nothing ran, nothing written


def test_random_joint_states_are_refused_outside_dmc():
  config = configs.load_config('experiments/quickstart.py:atari:pong')
  config.collect.train_random_states = 2
  with pytest.raises(configs.ConfigError, match=r"train_random_states = 2: must be 0 for a task "
                     r"that is not 'dmc:'"):
    validation.validate(config, ['collect'])
