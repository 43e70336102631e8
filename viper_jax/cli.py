"""The `viper` command: `viper <command> --config=experiments/FILE.py[:ARG] --config.x.y=V --workdir=DIR`.

Flags are absl flags; the config is an ml_collections config file (`config_flags`), locked, so
an unknown `--config.` key is an error that names it.
"""
from __future__ import annotations

import contextlib
import sys
import textwrap

from absl import app, flags, logging
from ml_collections import config_flags

from viper_jax import configs

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment config file, e.g. experiments/quickstart.py:dmc:cartpole-swingup.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for outputs, checkpoints and logs.')
_SRC = flags.DEFINE_string('src', None, 'import-reference: folder of the reference dataset.')
_SUITE = flags.DEFINE_string('suite', 'dmc', 'import-reference: suite of the imported tasks.')
_RUNS = flags.DEFINE_list('runs', None, 'compare: LABEL=DIR pairs of agent runs (workdirs).')
_OUT = flags.DEFINE_string('out', None, 'compare: path of the PNG to write; reward-shape: path of '
                           'the JSON to write (PNG beside it; default <workdir>/reward/shape.json); '
                           'reward-check: folder for its outputs (default <workdir>/reward).')
_TARGET = flags.DEFINE_float('target', None, 'compare: draw this return as a dashed line.')
_X = flags.DEFINE_enum('x', 'frames', ['frames', 'updates'],
                       'compare: x axis, environment frames or gradient updates.')
_CHECK = flags.DEFINE_bool('check', False, 'config: validate every field (and, with --workdir, the '
                           'episodes and checkpoints it names) without running anything.')
_SOURCE = flags.DEFINE_string(
    'source', None, 'reward-shape: an agent replay (replay_<step>.npz or its folder) to score; '
    'default: the experiment store\'s test split.')
_MAX_STEPS = flags.DEFINE_integer('max_steps', None, 'reward-shape: score at most this many steps.')
_STAGES = flags.DEFINE_list('stages', None, 'pipeline: stages to run, in order (default: all of '
                            'collect, train-tokenizer, train-prior, reward-stats, reward-check, '
                            'train-agent).')


def _require_config(command: str):
  if _CONFIG.value is None:
    raise app.UsageError(f'viper {command} needs --config=experiments/FILE.py[:ARG], e.g. '
                         '--config=experiments/quickstart.py')
  return _CONFIG.value


def _workdir(command: str) -> str:
  if _WORKDIR.value is None:
    raise app.UsageError(f'viper {command} needs --workdir=DIR (where its outputs go)')
  return _WORKDIR.value


def _collect():
  from viper_jax import pipeline
  from viper_jax.data import collect
  config = _require_config('collect')
  collect.run(config, _workdir('collect'), pipeline.policy_loaders(config))


def _train_tokenizer():
  from viper_jax.video import train_tokenizer
  result = train_tokenizer.run(_require_config('train-tokenizer'), _workdir('train-tokenizer'))
  print(f"tokenizer: step {result['step']}, test PSNR {result['psnr']:.2f} dB, "
        f"codebook usage {result['usage']:.2f}")


def _train_prior():
  from viper_jax.video import train_prior
  result = train_prior.run(_require_config('train-prior'), _workdir('train-prior'))
  print(f"prior: step {result['step']}, validation NLL {result['val_bits_per_token']:.3f} "
        f"bits/token (uniform: {result['uniform_bits_per_token']:.3f})")


def _train_agent():
  config = _require_config('train-agent')
  from viper_jax import pipeline
  try:
    summary = pipeline.train_agent(config, _workdir('train-agent'))
  except ValueError as e:
    raise app.UsageError(str(e))
  counters = summary['counters']
  eval_return = summary['eval_return']
  print(f"agent: {counters['env_steps']} env steps, {counters['updates']} updates, "
        f"eval return {float('nan') if eval_return is None else eval_return:.1f}")


def _reward_stats():
  from viper_jax.reward import expert_stats
  stats = expert_stats.run(_require_config('reward-stats'), _workdir('reward-stats'))
  print(f"reward stats over {stats['episodes']} expert episodes ({stats['count']} steps): "
        f"mean {stats['mean']:.2f}, std {stats['std']:.2f}, p1 {stats['min']:.2f}, "
        f"p99 {stats['max']:.2f} nats")


def _reward_check():
  from viper_jax.reward import check
  result = check.run(_require_config('reward-check'), _workdir('reward-check'), _OUT.value)
  low, high = result['spearman_interval90']
  print(f"reward check on {result['episodes']} test episodes: Spearman(mean reward, true return) "
        f"{result['spearman']:.3f} (bootstrap 90% [{low:.2f}, {high:.2f}]; at most "
        f"{result['spearman_ceiling']:.3f} with these returns' ties), AUROC expert vs random "
        f"{result['auroc_expert_vs_random']:.3f}")
  for group, g in result['groups'].items():
    print(f"  {group:<10} {g['episodes']:>3} episodes  mean reward {g['mean_reward']:9.2f}  "
          f"true return {g['true_return']:8.1f}")


def _reward_shape():
  from viper_jax.reward import shape
  result = shape.run(_require_config('reward-shape'), _workdir('reward-shape'), _SOURCE.value,
                     _MAX_STEPS.value, out=_OUT.value)
  print(f"reward shape over {result['steps']} steps of {result['source']}: per-step Spearman "
        f"{result['spearman']:.3f} (away from expert, {result['low_steps']} steps: "
        f"{result['spearman_low']:.3f})")
  for b in result['bins']:
    mean = 'n/a' if b['mean'] is None else f"{b['mean']:9.2f}"
    print(f"  true reward {b['lo']:6.2f}-{b['hi']:6.2f}  {b['count']:>6} steps  "
          f"mean VIPER reward {mean}")


def _quickstart():
  import os
  from viper_jax import pipeline
  config = _CONFIG.value
  if config is None:  # the embedded default: experiments/quickstart.py of this checkout
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'experiments', 'quickstart.py')
    config = configs.load_config(path)
  pipeline.run(config, _WORKDIR.value or 'runs/quickstart')


def _pipeline():
  from viper_jax import pipeline
  stages = tuple(_STAGES.value or pipeline.STAGES)
  unknown = [s for s in stages if s not in pipeline.STAGES]
  if unknown:
    raise app.UsageError(f'unknown stages {unknown}; choose from {", ".join(pipeline.STAGES)}')
  pipeline.run(_require_config('pipeline'), _workdir('pipeline'), stages=stages)


def _report():
  from viper_jax import report
  print(f'report: {report.build(_workdir("report"))}')


def _compare():
  from viper_jax import report
  if not _RUNS.value or not _OUT.value:
    raise app.UsageError('viper compare needs --runs=LABEL=DIR,LABEL=DIR and --out=FILE.png')
  pairs = [r.split('=', 1) for r in _RUNS.value]
  bad = [r for r, p in zip(_RUNS.value, pairs) if len(p) != 2]
  if bad:
    raise app.UsageError(f'--runs entries must be LABEL=DIR, got {bad}')
  title = 'true task return' + (f' ({_CONFIG.value.task})' if _CONFIG.value else '')
  out = report.compare_agents(dict(pairs), _OUT.value, _TARGET.value, title=title, x=_X.value)
  print(f'compare: {out}')
  for label, run in pairs:
    t = report.reward_tracking(run)
    if t is not None:
      print(f"compare: {label}: VIPER return {t['viper_first']:.4g} -> {t['viper_last3']:.4g}, "
            f"true return {t['true_first']:.4g} -> {t['true_last3']:.4g} (first evaluation -> "
            f"mean of the last three); Spearman over {t['evaluations']} evaluations "
            f"{t['spearman']:.2f}" + ('  <- the agent climbs a reward that does not track the '
                                     'task' if t['spearman'] < 0 else ''))


def _import_reference():
  from viper_jax.data import reference_import
  from viper_jax.data.store import EpisodeStore
  if _SRC.value is None:
    raise app.UsageError('viper import-reference needs --src=FOLDER (the reference dataset)')
  store = EpisodeStore(_WORKDIR.value or 'episodes')
  counts = reference_import.import_reference_dataset(_SRC.value, store, suite=_SUITE.value)
  for task, count in sorted(counts.items()):
    print(f'{task}: {count} episodes in {store.root}')


def _quality_table():
  from viper_jax import quality_table
  config = _require_config('quality-table')
  if 'table' not in config:
    raise app.UsageError('viper quality-table needs a config with a `table` section, e.g. '
                         '--config=experiments/quality.py')
  quality_table.run(config, _workdir('quality-table'))
  print(f"quality table: {_workdir('quality-table')}/quality_table.md")


def _envs():
  from viper_jax import envs
  print('\n'.join(envs.env_names()))


def _config():
  config = _require_config('config')
  if not _CHECK.value:
    print(config)
    return
  from viper_jax import validation
  validation.validate(config, workdir=_WORKDIR.value)  # a ConfigError exits with status 2
  print(f'config OK: every field of {config.task} is valid for all stages'
        + (f' and the data in {_WORKDIR.value}' if _WORKDIR.value else ''))


# name -> (function, one-line description); `viper --help` lists these.
COMMANDS = {
    'quickstart': (_quickstart, 'the whole method end to end on one DMC task, CPU-sized: collect, '
                   'tokenizer, prior, reward check, agent, report (default --workdir=runs/quickstart)'),
    'pipeline': (_pipeline, 'run the stages of an experiment in one workdir, skipping finished '
                 'ones (--stages=a,b,...), then the report'),
    'report': (_report, 'write <workdir>/report/report.html (+ PNGs) from what the stages wrote'),
    'compare': (_compare, 'plot the true return of several agent runs on one axis '
                '(--runs=LABEL=DIR,... --out=FILE.png [--target=900] [--x=frames|updates])'),
    'collect': (_collect, 'collect expert/noisy/random episodes of a task into <workdir>/episodes'),
    'train-tokenizer': (_train_tokenizer,
                        'train the VQ-GAN tokenizer on expert frames (<workdir>/tokenizer)'),
    'train-prior': (_train_prior,
                    'tokenize the episodes and train the video prior (<workdir>/prior)'),
    'train-agent': (_train_agent, 'train the DreamerV3 agent with config.agent.reward_source '
                    '(env, viper, viper+disag, amp) (<workdir>/agent)'),
    'reward-stats': (_reward_stats, 'expert statistics of the VIPER reward for reward.scale '
                     '(<workdir>/reward/expert_stats.json)'),
    'reward-check': (_reward_check, 'score held-out expert/noisy/random episodes: Spearman, AUROC '
                     '(<workdir>/reward/check.json, or --out=DIR; --config.data.root=STORE '
                     'scores another store)'),
    'quality-table': (_quality_table, 'collect, tokenizer, prior and reward check for every task '
                      'of config.table (one workdir each) -> <workdir>/quality_table.{md,json}'),
    'reward-shape': (_reward_shape, 'per-step Spearman of VIPER vs true reward and the reward '
                     'binned by true reward, on a replay (--source) or the test episodes '
                     '(<workdir>/reward/shape.json)'),
    'import-reference': (_import_reference,
                         'import the reference VIPER dataset layout (--src) into an episode store'),
    'envs': (_envs, 'list every environment name (dmc:<domain>-<task>, atari:<game>)'),
    'config': (_config, 'print the resolved config (with --config and overrides); --check '
               'validates it instead, without running anything'),
}


# name -> the flags it reads, for `viper <command> --help`; commands not listed read these two.
DEFAULT_FLAGS = ('config', 'workdir')
COMMAND_FLAGS = {
    'pipeline': ('config', 'workdir', 'stages'),
    'report': ('workdir',),
    'compare': ('runs', 'out', 'target', 'x', 'config'),
    'import-reference': ('src', 'suite', 'workdir'),
    'envs': (),
    'config': ('config', 'check', 'workdir'),
    'reward-shape': ('config', 'workdir', 'source', 'max_steps', 'out'),
    'reward-check': ('config', 'workdir', 'out'),
}
HELP_FLAGS = ('-h', '--help', '-help', '--helpshort', '-?')


def command_help(command: str) -> str:
  """`viper <command> --help`: what the command does and the flags it reads."""
  names = COMMAND_FLAGS.get(command, DEFAULT_FLAGS)
  lines = [f'usage: viper {command}' + ''.join(f' [--{n}=...]' for n in names), '',
           textwrap.fill(COMMANDS[command][1], 100)]
  if names:
    lines += ['', 'flags:']
  for name in names:
    flag = flags.FLAGS[name]
    default = '' if flag.default is None else f' (default: {flag.default_as_str})'
    lines.append(textwrap.fill(f'--{name}: {flag.help}{default}', 100, initial_indent='  ',
                               subsequent_indent='      '))
  if 'config' in names:
    lines.append('  --config.KEY=VALUE: override any config field (`viper config '
                 '--config=FILE` prints them all)')
  lines += ['', f'Run `viper {command} --helpfull` for every flag, absl\'s included.']
  return '\n'.join(lines)


# Commands that write into --workdir; each takes the workdir's lock (one writer per workdir).
WRITERS = ('quickstart', 'pipeline', 'collect', 'train-tokenizer', 'train-prior', 'train-agent',
           'reward-stats', 'reward-check', 'reward-shape', 'quality-table')


def _workdir_lock(command: str):
  import jax
  from viper_jax import workdir_lock
  workdir = _WORKDIR.value or ('runs/quickstart' if command == 'quickstart' else None)
  if command not in WRITERS or workdir is None or jax.process_index() != 0:
    return contextlib.nullcontext()
  return workdir_lock.hold(workdir, command=f'viper {command}')


def usage() -> str:
  lines = ['usage: viper <command> --config=experiments/FILE.py[:ARG] [--config.KEY=VALUE ...] '
           '[--workdir=DIR]', '', 'commands:']
  lines += [f'  {name:<18}{description}' for name, (_, description) in COMMANDS.items()]
  lines += ['', 'Run `viper <command> --help` for the flags of a command.']
  return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help', 'help'):
    print(usage())
    return 0
  command = argv[1]
  if command not in COMMANDS:
    print(f'viper: unknown command {command!r}\n\n{usage()}', file=sys.stderr)
    return 2
  # absl exits 1 after printing help; a help request is a success, so answer it here.
  if any(a in HELP_FLAGS for a in argv[2:]):
    print(command_help(command))
    return 0
  if '--helpfull' in argv[2:]:
    print(f'{command_help(command)}\n\nall flags:\n{flags.FLAGS.get_help()}')
    return 0
  try:
    configs.check_overrides(argv[2:])
  except configs.ConfigError as e:
    print(textwrap.fill(f'viper {command}: {e}', 100), file=sys.stderr)
    return 2
  function = COMMANDS[command][0]

  def run_command(unused_argv):
    if not any(a.startswith(('--verbosity', '-v')) for a in argv[2:]):
      logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    if len(unused_argv) > 1:
      raise app.UsageError(f'unexpected arguments {unused_argv[1:]}')
    from viper_jax import parallel
    parallel.initialize_distributed()  # multi-host jobs only (VIPER_DISTRIBUTED=1), see launch/
    from viper_jax import workdir_lock
    try:
      with _workdir_lock(command):
        function()
    except workdir_lock.WorkdirLockedError as e:
      print(f'viper {command}: {e}', file=sys.stderr)
      sys.exit(3)
    except configs.ConfigError as e:  # a bad value: nothing was run
      print(textwrap.fill(f'viper {command}: {e}', 100), file=sys.stderr)
      sys.exit(2)

  # config_flags finds `--config.x=` overrides in sys.argv itself, so it must hold this argv.
  saved_argv, sys.argv = sys.argv, [f'viper {command}'] + configs.resolve_config_in_argv(argv[2:])
  defined = set(flags.FLAGS)
  for flag in flags.FLAGS.get_flags_for_module(__name__):  # absl keeps values between main()s
    flag.unparse()
  try:
    app.run(run_command, argv=sys.argv)
  except SystemExit as e:
    return int(e.code or 0) if not isinstance(e.code, str) else 1
  finally:
    sys.argv = saved_argv
    # config_flags defines one absl flag per override key; forget them so that another
    # main() in this process (tests, notebooks) may override the same keys again. Only those:
    # flags that libraries define when the command first imports them (grain's) must stay.
    for name in set(flags.FLAGS) - defined:
      if name.startswith(f'{_CONFIG.name}.'):
        delattr(flags.FLAGS, name)
  return 0


def console_main():
  sys.exit(main())


if __name__ == '__main__':
  console_main()
