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


def test_compare_plots_several_agent_runs(capsys, tmp_path):
  import json
  for name, returns in (('env', [100, 500, 900]), ('viper', [80, 300, 600])):
    agent = tmp_path / name / 'agent'
    agent.mkdir(parents=True)
    rows = [{'step': 1000 * (i + 1), 'eval/return': r} for i, r in enumerate(returns)]
    rows += [{'step': 500 * (i + 1), 'episode/return': r} for i, r in enumerate(returns * 2)]
    (agent / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  out = tmp_path / 'curves.png'
  assert cli.main(['viper', 'compare', f'--runs=env={tmp_path / "env"},viper={tmp_path / "viper"}',
                   f'--out={out}', '--target=900']) == 0
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert cli.main(['viper', 'compare', f'--runs={tmp_path / "env"}', f'--out={out}']) == 1
  assert 'LABEL=DIR' in capsys.readouterr().err
  with pytest.raises(FileNotFoundError, match='no agent metrics'):
    cli.main(['viper', 'compare', f'--runs=x={tmp_path / "missing"}', f'--out={out}'])


def test_compare_says_whether_the_viper_return_tracks_the_true_one(capsys, tmp_path):
  """A run whose VIPER return rises while its true return falls is flagged; one where both rise
  is not; a run without VIPER returns (the oracle) gets no line."""
  import json

  from viper_jax import report
  runs = {'tracks': ([100, 200, 300, 400], [1, 2, 3, 4]),
          'hacks': ([200, 150, 60, 40], [5, 10, 30, 33]),
          'oracle': ([100, 300, 500, 900], None)}
  for name, (true, viper) in runs.items():
    agent = tmp_path / name / 'agent'
    agent.mkdir(parents=True)
    rows = [{'step': 100 * (i + 1), 'eval/return': t} for i, t in enumerate(true)]
    for row, v in zip(rows, viper or []):
      row['eval/viper_return'] = v
    (agent / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  hacks = report.reward_tracking(tmp_path / 'hacks')
  assert hacks['spearman'] == pytest.approx(-1.0) and hacks['evaluations'] == 4
  assert hacks['viper_last3'] == pytest.approx(73 / 3) and hacks['true_first'] == 200
  assert report.reward_tracking(tmp_path / 'tracks')['spearman'] == pytest.approx(1.0)
  assert report.reward_tracking(tmp_path / 'oracle') is None
  spec = ','.join(f'{n}={tmp_path / n}' for n in runs)
  assert cli.main(['viper', 'compare', f'--runs={spec}', f'--out={tmp_path / "c.png"}']) == 0
  lines = capsys.readouterr().out.splitlines()
  flagged = [line for line in lines if 'does not track' in line]
  assert len(flagged) == 1 and 'hacks' in flagged[0]
  assert any('tracks:' in line for line in lines) and not any('oracle:' in line for line in lines)


def test_compare_by_updates_uses_each_evaluations_update_count(tmp_path):
  import json

  from viper_jax import report
  agent = tmp_path / 'run' / 'agent'
  agent.mkdir(parents=True)
  rows = [{'step': 100 * (i + 1), 'eval/return': r, 'eval/updates': u}
          for i, (r, u) in enumerate(((100, 0), (400, 50), (900, 120)))]
  (agent / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  out = report.compare_agents({'run': tmp_path / 'run'}, tmp_path / 'u.png', x='updates')
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  # A run whose evaluations lack the count (logged before it existed) is named, not misplotted.
  old = tmp_path / 'old' / 'agent'
  old.mkdir(parents=True)
  (old / 'metrics.jsonl').write_text(json.dumps({'step': 100, 'eval/return': 5}) + '\n')
  with pytest.raises(ValueError, match='run old .*without an update count'):
    report.compare_agents({'old': tmp_path / 'old'}, tmp_path / 'o.png', x='updates')


def test_compare_reads_each_runs_action_repeat_from_its_checkpoint(tmp_path):
  """Runs at different action repeats are plotted against frames: the repeat comes from the
  config summary that every agent checkpoint stores; a run without checkpoints has none."""
  import jax.numpy as jnp

  from viper_jax import checkpoint, report
  for name, repeat in (('r2', 2), ('r8', 8)):
    saver = checkpoint.Checkpointer(tmp_path / name / 'agent' / 'checkpoints')
    saver.save(100, {'x': jnp.zeros(2)}, {'config': {'env': {'action_repeat': repeat}}})
    saver.close()
  assert report.run_action_repeat(tmp_path / 'r2') == 2
  assert report.run_action_repeat(tmp_path / 'r8' / 'agent') == 8
  assert report.run_action_repeat(tmp_path / 'none') is None


@pytest.mark.parametrize('command', sorted(cli.COMMANDS))
def test_command_help_prints_its_own_flags_and_exits_0(command, capsys):
  assert cli.main(['viper', command, '--help']) == 0
  out = capsys.readouterr().out
  assert out.startswith(f'usage: viper {command}')
  assert cli.COMMANDS[command][1].split()[0] in out  # its own description
  for name in cli.COMMAND_FLAGS.get(command, cli.DEFAULT_FLAGS):
    assert f'--{name}' in out
  if command == 'compare':
    assert '--runs' in out and '--stages' not in out  # only the flags it reads
  assert cli.main(['viper', command, '--helpfull']) == 0
  out = capsys.readouterr().out
  assert 'all flags:' in out and '--workdir' in out and '--stages' in out  # every flag


def test_experiment_configs_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no experiments/ here: the checkout's file is used
  assert configs.load_config('experiments/quickstart.py:dmc:point_mass-easy').task == \
      'dmc:point_mass-easy'
  code = cli.main(['viper', 'config', '--config=experiments/quickstart.py:dmc:point_mass-easy',
                   '--check'])
  assert code == 0
  assert cli.main(['viper', 'config', '--config', 'experiments/quickstart.py', '--check']) == 0
  with pytest.raises(configs.ConfigError, match='not found here or under'):
    configs.load_config('experiments/nope.py')


def test_main_forgets_its_overrides_but_keeps_flags_that_libraries_define(monkeypatch, capsys):
  """grain defines absl flags when a command first imports it; deleting those after main() broke
  every later grain dataset in the process (AttributeError on its flag)."""
  from absl import flags

  def command():  # stands in for a command whose first import defines a library flag
    if 'test_lazy_library_flag' not in flags.FLAGS:
      flags.DEFINE_string('test_lazy_library_flag', 'x', 'defined on first import')
  monkeypatch.setitem(cli.COMMANDS, 'config', (command,) + tuple(cli.COMMANDS['config'][1:]))
  for seed in (1, 2):  # the same override key twice in one process
    assert cli.main(['viper', 'config', '--config=experiments/quickstart.py',
                     f'--config.agent.seed={seed}']) == 0
    assert 'test_lazy_library_flag' in flags.FLAGS
    assert not any(name.startswith('config.') for name in flags.FLAGS)
  assert flags.FLAGS.test_lazy_library_flag == 'x'


def test_a_flag_from_an_earlier_call_does_not_leak_into_the_next(capsys):
  """absl keeps flag values between main() calls in one process (tests, notebooks): `--check`
  once made every later `viper config` validate instead of print."""
  assert cli.main(['viper', 'config', '--config=experiments/quickstart.py', '--check']) == 0
  assert 'config OK' in capsys.readouterr().out
  assert cli.main(['viper', 'config', '--config=experiments/quickstart.py']) == 0
  out = capsys.readouterr().out
  assert 'config OK' not in out and 'task: dmc:' in out
