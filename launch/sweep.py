"""Expand the ablation sweeps of experiments/ablations.py into runs, and run them.

  python launch/sweep.py --list                          # every sweep, one a line
  python launch/sweep.py --sweep=context --dry-run       # one shell command per run
  python launch/sweep.py --sweep=context --parallel=2    # run locally, 2 runs at a time
  python launch/sweep.py --sweep=context --summary       # table of the finished runs
  python launch/sweep.py --sweep=context -- --config.prior.train.steps=1000   # extra overrides
  python launch/sweep.py --sweep=score_mask --base=experiments/quality.py:atari:pong   # CPU size

Each run gets its own workdir <root>/<sweep>/<run> holding config.json (the full resolved config)
beside its results and a log per run (sweep.log). A run is one `viper pipeline --stages=...`
command; finished stages are skipped and a killed one resumes, so rerunning a sweep finishes what
is missing.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import itertools
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def load_sweeps() -> dict:
  spec = importlib.util.spec_from_file_location('ablations',
                                                os.path.join(REPO, 'experiments', 'ablations.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.SWEEPS


def format_value(value) -> str:
  """A config value as config_flags parses it from the command line."""
  if isinstance(value, (tuple, list)):
    return '(' + ', '.join(format_value(v) for v in value) + (',)' if len(value) == 1 else ')')
  return str(value)


def _slug(value) -> str:
  if isinstance(value, (tuple, list)):
    return 'x'.join(_slug(v) for v in value)
  return str(value).replace('/', '_').replace(' ', '')


def expand(name: str, sweep: dict) -> list[dict]:
  """The runs of a sweep: [{'name', 'overrides': {field: value}}], in a stable order."""
  axes = sweep['axes']
  fields = list(axes)
  zipped = sweep.get('zip_axes', {})
  runs = []
  for index, values in enumerate(itertools.product(*(axes[f] for f in fields))):
    overrides = dict(sweep.get('overrides', {}))
    overrides.update(zip(fields, values))
    for tied, source in sweep.get('tie', {}).items():
      overrides[tied] = overrides[source]
    for field, options in zipped.items():  # zip_axes go along with the (single) main axis
      overrides[field] = options[index]
    run_name = '-'.join(f'{f.split(".")[-1]}_{_slug(v)}' for f, v in zip(fields, values))
    runs.append({'name': run_name, 'overrides': overrides})
  return runs


def run_argv(sweep: dict, run: dict, workdir: str, extra: list[str]) -> list[str]:
  """`viper` arguments of a run: one pipeline command doing the sweep's stages in order."""
  return (['pipeline', f'--config={sweep["base"]}', f'--stages={",".join(sweep["stages"])}']
          + [f'--config.{k}={format_value(v)}' for k, v in run['overrides'].items()]
          + list(extra) + [f'--workdir={workdir}'])


def run_command(sweep: dict, run: dict, workdir: str, extra: list[str]) -> str:
  """The shell line of a run."""
  return 'viper ' + ' '.join(shlex.quote(a) for a in run_argv(sweep, run, workdir, extra))


def save_config(sweep: dict, run: dict, workdir: str, extra: list[str]) -> None:
  """Writes the run's full resolved config beside its results (also validates the overrides)."""
  from viper_jax import configs
  config = configs.load_config(sweep['base'])
  overrides = dict(run['overrides'])
  for arg in extra:
    if arg.startswith('--config.') and '=' in arg:
      key, value = arg[len('--config.'):].split('=', 1)
      overrides[key] = value
  with config.unlocked():
    for key, value in overrides.items():
      configs.check_key(config, key)
      node = config
      *parents, leaf = key.split('.')
      for part in parents:
        node = node[part]
      node[leaf] = _parse(value, node[leaf]) if isinstance(value, str) else value
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))


def _parse(text: str, current):
  import ast
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text if not isinstance(current, bool) else text.lower() == 'true'


def execute(sweep: dict, run: dict, workdir: str, extra: list[str]) -> tuple[str, int]:
  """Runs a run's stages (one `viper pipeline` process); returns (name, exit code)."""
  save_config(sweep, run, workdir, extra)
  log_path = os.path.join(workdir, 'sweep.log')
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))
  argv = [sys.executable, '-m', 'viper_jax.cli'] + run_argv(sweep, run, workdir, extra)
  with open(log_path, 'a') as log:
    log.write(f'$ {" ".join(shlex.quote(a) for a in argv)}\n')
    log.flush()
    code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
  return run['name'], code


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def summary_rows(sweep: dict, runs: list[dict], root: str) -> list[dict]:
  rows = []
  for run in runs:
    workdir = os.path.join(root, run['name'])
    tok = _read_json(os.path.join(workdir, 'tokenizer', 'result.json'))
    prior = _read_json(os.path.join(workdir, 'prior', 'result.json'))
    check = _read_json(os.path.join(workdir, 'reward', 'check.json'))
    agent = _read_json(os.path.join(workdir, 'agent', 'result.json'))
    done = all(os.path.exists(os.path.join(workdir, p)) for p in _stage_outputs(sweep['stages']))
    rows.append({'run': run['name'], 'done': done, 'psnr': tok.get('psnr'),
                 'bits_per_token': prior.get('val_bits_per_token'),
                 'spearman': check.get('spearman'), 'auroc': check.get('auroc_expert_vs_random'),
                 'eval_return': agent.get('eval_return')})
  return rows


def _stage_outputs(stages) -> list[str]:
  outputs = {'collect': 'episodes', 'train-tokenizer': 'tokenizer/result.json',
             'train-prior': 'prior/result.json', 'reward-check': 'reward/check.json',
             'train-agent': 'agent/result.json'}
  return [outputs[s] for s in stages if s in outputs]


def format_table(rows: list[dict]) -> str:
  columns = ['run', 'done', 'psnr', 'bits_per_token', 'spearman', 'auroc', 'eval_return']

  def cell(value):
    if value is None:
      return '-'
    return f'{value:.3f}' if isinstance(value, float) else str(value)
  widths = {c: max(len(c), *(len(cell(r[c])) for r in rows)) for c in columns}
  lines = ['  '.join(c.ljust(widths[c]) for c in columns)]
  lines += ['  '.join(cell(r[c]).ljust(widths[c]) for c in columns) for r in rows]
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--list', action='store_true', help='print every sweep name, one a line')
  parser.add_argument('--sweep', help='name of a sweep in experiments/ablations.py')
  parser.add_argument('--dry-run', action='store_true', help='print one command per run')
  parser.add_argument('--summary', action='store_true', help='table of the finished runs')
  parser.add_argument('--parallel', type=int, default=1, help='runs at a time (local)')
  parser.add_argument('--root', default='runs/sweeps', help='workdirs go to ROOT/SWEEP/RUN')
  parser.add_argument('--base', help="another base config for the sweep's runs (FILE.py:ARG), "
                      'e.g. a CPU-sized one; the axes and overrides stay the same')
  args, extra = parser.parse_known_args(argv)
  extra = [a for a in extra if a != '--']
  sweeps = load_sweeps()
  if args.list:
    print('\n'.join(sweeps))
    return 0
  if args.sweep not in sweeps:
    parser.error(f'--sweep must be one of: {", ".join(sweeps)} (got {args.sweep!r})')
  sweep = dict(sweeps[args.sweep], **({'base': args.base} if args.base else {}))
  runs = expand(args.sweep, sweep)
  root = os.path.join(args.root, args.sweep)
  if args.dry_run:
    for run in runs:
      print(run_command(sweep, run, os.path.join(root, run['name']), extra))
    return 0
  if not args.summary:
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
      futures = [pool.submit(execute, sweep, run, os.path.join(root, run['name']), extra)
                 for run in runs]
      failed = []
      for future in concurrent.futures.as_completed(futures):
        name, code = future.result()
        status = 'done' if code == 0 else f'FAILED (exit {code}; see {root}/{name}/sweep.log)'
        print(f'{args.sweep}/{name}: {status}', flush=True)
        if code:
          failed.append(name)
  os.makedirs(root, exist_ok=True)
  rows = summary_rows(sweep, runs, root)
  table = format_table(rows)
  print(table)
  with open(os.path.join(root, 'summary.json'), 'w') as f:
    json.dump(rows, f, indent=2)
  return 1 if not args.summary and failed else 0


if __name__ == '__main__':
  sys.exit(main())
