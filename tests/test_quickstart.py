"""The quickstart pipeline at an even smaller size, end to end once: `viper pipeline` gets SIGKILL
while writing a stage's record and while the agent checkpoints, is rerun, and finishes with every
stage's outputs; a further rerun only rebuilds the report, and report.html references nothing that
does not exist."""
import json
import pathlib
import re
import subprocess
import sys

from viper_jax import configs, pipeline

from test_kills import kill_chain


def _tiny_quickstart():
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-balance')
  config.env.size = (16, 16)
  config.env.time_limit = 16
  c = config.collect
  c.train_episodes, c.test_episodes, c.random_test_episodes, c.workers = 2, 1, 1, 1
  c.test_noise_levels = (0.0, 0.5)
  t = config.tokenizer
  t.channels, t.channel_mult, t.codebook_size, t.code_dim = 8, (1, 2), 16, 4
  t.attention_in_middle = False
  t.train.steps, t.train.batch_size, t.train.image_every, t.train.checkpoint_every = 3, 4, 3, 3
  p = config.prior
  p.num_layers, p.width, p.num_heads, p.mlp_dim, p.context = 1, 16, 2, 32, 2
  p.train.window, p.train.steps, p.train.batch_size = 2, 3, 4
  p.train.eval_every = p.train.sample_every = p.train.checkpoint_every = 3
  a = config.agent
  a.env_steps, a.prefill, a.eval_every, a.checkpoint_every, a.log_every = 48, 32, 48, 48, 16
  a.replay_capacity, a.viper_pad_to = 500, 16
  return config


def test_killed_quickstart_pipeline_finishes_with_every_stage_output_and_report(tmp_path):
  config_file = tmp_path / 'tiny_pipeline.py'
  config_file.write_text(
      f'import sys\nsys.path.insert(0, {str(pathlib.Path(__file__).parent)!r})\n'
      'from test_quickstart import _tiny_quickstart\n\n'
      'def get_config(arg=None):\n  return _tiny_quickstart()\n')
  workdir = tmp_path / 'run'
  command = [sys.executable, '-m', 'viper_jax.cli', 'pipeline', f'--config={config_file}',
             f'--workdir={workdir}']
  events = kill_chain(command, workdir, [('while', 'pipeline/train-tokenizer.json'),
                                         ('while', 'agent/checkpoints/*orbax-checkpoint-tmp*')])
  assert any(e['killed'] for e in events), events
  assert not (workdir / '.viper.lock').exists()
  _check_outputs(workdir)
  _check_rerun_rebuilds_only_the_report(_tiny_quickstart(), workdir)
  _check_reward_agent_evals(workdir)


def _check_outputs(tmp_path):
  for path in ('episodes', 'tokenizer/result.json', 'tokenizer/reconstructions.png',
               'prior/result.json', 'prior/sample.gif', 'reward/expert_stats.json',
               'reward/check.json', 'reward/reward_vs_return.png', 'reward/shape.json',
               'reward/shape.png', 'agent/result.json',
               'report/report.html'):
    assert (tmp_path / path).exists(), path
  for stage in pipeline.STAGES:
    assert (tmp_path / 'pipeline' / f'{stage}.json').exists(), stage
  agent = json.loads((tmp_path / 'agent' / 'result.json').read_text())
  assert agent['counters']['env_steps'] == 48 and agent['reward_source'] == 'viper'
  html = (tmp_path / 'report' / 'report.html').read_text()
  sources = re.findall(r'src="([^"]+)"', html)
  assert len(sources) == 7, 'one figure per section: every stage ran'
  for src in sources:  # embedded (opens offline) ...
    assert src.startswith('data:image/'), src[:40]
  for png in ('reconstructions.png', 'prior_sample.gif', 'reward_along_episodes.png',
              'reward_vs_return.png', 'reward_shape.png', 'learning_curve.png', 'eval_rollout.gif'):
    assert (tmp_path / 'report' / png).exists(), png  # ... and saved beside it as files
  assert 'Not yet' not in html
  shape = json.loads((tmp_path / 'reward' / 'shape.json').read_text())
  assert shape['episodes'] >= 3 and 'episode_spearman' in shape  # held-out episodes, ranked
  assert 'between summed reward and true return' in html


def _check_rerun_rebuilds_only_the_report(config, tmp_path):
  before = {p: (tmp_path / 'pipeline' / f'{p}.json').read_text() for p in pipeline.STAGES}
  (tmp_path / 'report' / 'report.html').unlink()
  lines = []
  pipeline.run(config, tmp_path, log=lines.append)
  assert all('skipped' in line for line in lines[:-1]) and lines[-1].startswith('[report]')
  assert (tmp_path / 'report' / 'report.html').exists()
  assert before == {p: (tmp_path / 'pipeline' / f'{p}.json').read_text() for p in pipeline.STAGES}


def _check_reward_agent_evals(tmp_path):
  """The agent's evaluations are kept losslessly, so a reward model can be checked on them
  (benchmarks/reward_agent_evals.py); here the quickstart's own model on its own agent."""
  out = subprocess.run(
      [sys.executable, 'benchmarks/reward_agent_evals.py', f'--rewards={tmp_path}',
       f'--runs={tmp_path}', '--task=dmc:cartpole-balance', '--config=experiments/quickstart.py',
       '--floors=1,20', f'--pairs={tmp_path}:48:48'], capture_output=True, text=True, check=True)
  evals = json.loads(out.stdout.strip().splitlines()[-1])
  assert evals['episodes'] == evals['lossless'] == 1
  assert set(evals['spearman']) == {'raw', 'p1', 'p20'}
  pair = evals['pairs'][f'{tmp_path}:48:48']
  assert pair['raw'][0] == pair['raw'][1] < 0 and pair['p20'][0] >= 0  # floored: never below it
