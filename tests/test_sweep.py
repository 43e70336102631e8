"""launch/sweep.py: every ablation expands into runnable commands; the tiny sweep runs end to end."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'launch'))
import sweep  # noqa: E402

PAPER_SWEEPS = ('context', 'code_grid', 'frame_skip', 'exploration', 'score_mask',
                'task_conditioning', 'prior_kind', 'likelihood')


def _launch(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'sweep.py'), *args],
                        capture_output=True, text=True, cwd=REPO)


def test_list_names_every_sweep():
  out = _launch('--list')
  assert out.returncode == 0, out.stderr
  names = out.stdout.split()
  assert set(PAPER_SWEEPS) <= set(names) and len(names) == len(set(names))


@pytest.mark.parametrize('name', PAPER_SWEEPS)
def test_dry_run_prints_one_valid_command_per_run(name, tmp_path):
  out = _launch(f'--sweep={name}', '--dry-run')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().split('\n')
  sweeps = sweep.load_sweeps()
  runs = sweep.expand(name, sweeps[name])
  assert len(lines) == len(runs) >= 2
  assert len({r['name'] for r in runs}) == len(runs)  # distinct workdirs
  for line, run in zip(lines, runs):
    assert line.startswith('viper pipeline --config=') and f'/{name}/{run["name"]}' in line
    assert f'--stages={",".join(sweeps[name]["stages"])}' in line
    # The overrides name real config fields with values of the right type: save_config checks.
    sweep.save_config(sweeps[name], run, str(tmp_path / run['name']), [])
    saved = json.loads((tmp_path / run['name'] / 'config.json').read_text())
    for key, value in run['overrides'].items():
      node = saved
      for part in key.split('.'):
        node = node[part]
      assert node == (list(value) if isinstance(value, tuple) else value), key


def test_tiny_sweep_runs_end_to_end(tmp_path):
  out = _launch('--sweep=tiny', f'--root={tmp_path}', '--parallel=2')
  assert out.returncode == 0, out.stdout + out.stderr
  summary = json.loads((tmp_path / 'tiny' / 'summary.json').read_text())
  assert [r['done'] for r in summary] == [True, True]
  for row in summary:
    assert row['psnr'] is not None and row['bits_per_token'] is not None
    assert row['spearman'] is not None
    run_dir = tmp_path / 'tiny' / row['run']
    config = json.loads((run_dir / 'config.json').read_text())
    assert config['prior']['context'] == config['prior']['train']['window']
    assert (run_dir / 'reward' / 'reward_vs_return.png').exists()
