import pytest

from viper_jax import cli, configs


def test_help_lists_commands(capsys):
  assert cli.main(['viper', '--help']) == 0
  out = capsys.readouterr().out
  for command in ('collect', 'import-reference', 'envs', 'config'):
    assert command in out


def test_unknown_config_key_is_an_error_naming_it(capsys, tmp_path):
  code = cli.main(['viper', 'collect', '--config=experiments/quickstart.py',
                   '--config.collect.bogus_key=3', f'--workdir={tmp_path}'])
  assert code == 2
  err = capsys.readouterr().err
  assert "collect.bogus_key" in err and 'train_episodes' in err  # names the key and valid ones
  assert not (tmp_path / 'episodes').exists()
  config = configs.load_config('experiments/quickstart.py')
  with pytest.raises(AttributeError, match='bogus'):
    config.env.bogus = 1  # locked in Python too


def test_unknown_command_and_missing_config_file(capsys):
  assert cli.main(['viper', 'fly']) == 2
  assert 'unknown command' in capsys.readouterr().err
  with pytest.raises(configs.ConfigError, match='not found'):
    configs.load_config('experiments/nope.py')


def test_collect_through_the_cli_applies_overrides(tmp_path):
  code = cli.main(['viper', 'collect', '--config=experiments/quickstart.py:dmc:point_mass-easy',
                   '--config.collect.policy=random', '--config.env.size=(16,16)',
                   '--config.env.time_limit=4', '--config.collect.train_episodes=1',
                   '--config.collect.test_noise_levels=()', '--config.collect.random_test_episodes=1',
                   '--config.collect.workers=1', f'--workdir={tmp_path}'])
  assert code == 0
  train = list((tmp_path / 'episodes' / 'dmc_point_mass-easy' / 'train').glob('*.npz'))
  assert [p.name for p in train] == ['random-0000.npz']
