"""`viper quality-table`: how good is the reward, task by task? One command, one table.

For every task of `config.table.tasks` it runs the pipeline's collect, train-tokenizer,
train-prior and reward-check stages in `<workdir>/<task dir>/` (each its own workdir, so a row can
also be run alone with `viper pipeline`), then the expert-episode study (`table.study_task` with
each of `table.study_episodes` expert episodes, in `<workdir>/study/<task dir>-<N>ep/`) and one
task-conditioned model over `table.multitask` (`<workdir>/multitask/`, whose reward check also
writes the conditioning matrix). It writes `<workdir>/quality_table.md` (for the README) and
`quality_table.json`, one row per model and task:

  test_episodes  how many graded held-out episodes the Spearman and AUROC are over
  spearman       Spearman(mean reward per step, true return) over the graded held-out episodes
  auroc          AUROC of expert (noise 0) vs random held-out episodes by mean reward
  psnr           tokenizer PSNR on held-out expert frames (dB)
  train_bits     prior bits/token on training batches (mean of the last logged tenth of steps)
  val_bits       prior bits/token on held-out expert episodes
  seconds        wall time of the row's stages (sum of their pipeline markers)

Stages resume and finished ones are skipped, so a rerun continues where it stopped; rows not yet
run appear with their figures missing. Episodes are planned with fixed seeds, so a row whose
episodes another row already collected (the study, the multi-task model) hard-links them instead
of rendering them again. A config that plans more test episodes than a finished row has reopens
only its collect and reward-check (`pipeline.reopen_collect`): the models are kept.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
import uuid
from typing import Callable

from etils import epath

from viper_jax import atomic

TABLE_STAGES = ('collect', 'train-tokenizer', 'train-prior', 'reward-check')
COLUMNS = ('model', 'task', 'episodes', 'test_episodes', 'spearman', 'auroc', 'psnr', 'train_bits',
           'val_bits', 'seconds')


def suite(task: str) -> str:
  return task.split(':', 1)[0]


def row_config(config, task: str, tasks=(), train_episodes: int | None = None):
  """A copy of the table config for one row: `task` with its suite's env and episode settings.

  tasks: the tasks of one task-conditioned model (then `task` is its first and the tokenizer and
  prior train for table.multitask_*_steps); train_episodes: expert episodes (default: the
  suite's table setting).
  """
  # A deep, unlocked copy that keeps placeholder types (to_dict() would turn a None-valued
  # `data.root` into a field no command-line override can set).
  config = copy.deepcopy(config)
  config.unlock()
  settings = config.table[suite(task)]
  config.task = task
  config.data.tasks = tuple(tasks)
  config.env.action_repeat = settings.action_repeat
  config.env.time_limit = settings.time_limit
  config.collect.train_episodes = train_episodes or settings.train_episodes
  config.tokenizer.channel_mult = settings.tokenizer_channel_mult
  config.tokenizer.train.steps = settings.tokenizer_steps
  config.tokenizer.foreground_weight = settings.tokenizer_foreground_weight
  grading = config.table.test_noise_levels.get(task)
  if grading is not None:  # a task whose returns the suite's noise levels do not grade
    config.collect.test_noise_levels = tuple(grading)
  if tasks:
    config.tokenizer.train.steps = config.table.multitask_tokenizer_steps
    config.prior.train.steps = config.table.multitask_prior_steps
  config.lock()
  return config


def task_dirname(task: str) -> str:
  from viper_jax.data.store import task_dirname as dirname
  return dirname(task)


def plan(config, workdir) -> list[dict]:
  """The table's models in run order: [{'model', 'workdir', 'config', 'tasks', 'sources'}].

  sources: episode stores whose files a model may hard-link instead of collecting them again.
  """
  root = epath.Path(workdir)
  table = config.table
  rows = [dict(model='single', workdir=root / task_dirname(t), config=row_config(config, t),
               tasks=(t,), sources=()) for t in table.tasks]
  single = {r['tasks'][0]: r['workdir'] / 'episodes' for r in rows}
  task = table.study_task

  def study_dir(count):  # the table's own row of the task when it has that many episodes
    same = task in single and count == row_config(config, task).collect.train_episodes
    return root / task_dirname(task) if same else root / 'study' / f'{task_dirname(task)}-{count}ep'
  for count in table.study_episodes:
    rows.append(dict(model=f'{count} expert episodes', workdir=study_dir(count),
                     config=row_config(config, task, train_episodes=count), tasks=(task,),
                     sources=tuple(study_dir(c) / 'episodes' for c in table.study_episodes
                                   if c != count)))
  if table.multitask:
    tasks = tuple(table.multitask)
    rows.append(dict(model='multitask', workdir=root / 'multitask', tasks=tasks,
                     config=row_config(config, tasks[0], tasks=tasks),
                     sources=tuple(single[t] for t in tasks if t in single)))
  return rows


def link_episodes(sources, root, task: str, wanted: set[str]) -> int:
  """Hard-links (or copies) the episode files of `task` found in `sources` into store `root`
  where `root` lacks them, only those named in `wanted` ('<split>/<file name>': the row's own
  planned episodes, so a row with fewer episodes never gets a larger row's extra ones); returns
  how many. Token caches are not shared (they belong to one tokenizer)."""
  count = 0
  for source in sources:
    for split in ('train', 'test'):
      folder = epath.Path(source) / task_dirname(task) / split
      if not folder.exists():
        continue
      target = epath.Path(root) / task_dirname(task) / split
      for path in folder.glob('*.npz'):
        destination = target / path.name
        if f'{split}/{path.name}' not in wanted or destination.exists():
          continue
        target.mkdir(parents=True, exist_ok=True)
        temp = target / f'{path.name}.tmp-{uuid.uuid4().hex}'
        try:
          os.link(path, temp)
        except OSError:  # another file system: copy
          shutil.copyfile(path, temp)
        temp.replace(destination)
        count += 1
  return count


def run_model(row: dict, log: Callable[[str], None] = print) -> None:
  """Runs (or resumes) one model's stages in its workdir."""
  from viper_jax import pipeline
  from viper_jax.data import collect
  from viper_jax.data.store import EpisodeStore
  workdir, config = row['workdir'], row['config']
  store = collect.store_root(config, workdir)
  task_configs = ([config] if len(row['tasks']) == 1 else
                  [row_config(config, task) for task in row['tasks']])
  # Before linking: episodes linked in would hide that the finished reward-check never scored them.
  pipeline.reopen_collect(task_configs, workdir, log)
  for task, task_config in zip(row['tasks'], task_configs):
    wanted = {f'{job.split}/{epath.Path(job.path).name}'
              for job in collect.plan_jobs(task_config, EpisodeStore(store))}
    linked = link_episodes(row['sources'], store, task, wanted)
    if linked:
      log(f'[{workdir.name}] {linked} episodes of {task} linked from finished rows')
  marker = workdir / 'pipeline' / 'collect.json'
  if len(row['tasks']) > 1 and not marker.exists():
    start = time.time()  # one collect per task into the shared store, then the shared model
    for task_config in task_configs:
      collect.run(task_config, str(workdir), pipeline.policy_loaders(task_config))
    atomic.write_json(marker, {'stage': 'collect', 'seconds': time.time() - start, 'result': {}})
  pipeline.run(config, workdir, stages=TABLE_STAGES, log=log)


def _read_json(path) -> dict:
  try:
    return json.loads(epath.Path(path).read_text())
  except (OSError, ValueError):
    return {}


def train_bits(prior_dir) -> float | None:
  """Mean training bits/token over the last tenth of the logged steps (None if none logged)."""
  path = epath.Path(prior_dir) / 'metrics.jsonl'
  rows = []
  if path.exists():
    for line in path.read_text().splitlines():
      row = json.loads(line) if line.strip() else {}
      if 'bits_per_token' in row:
        rows.append((row['step'], row['bits_per_token']))
  if not rows:
    return None
  last = max(step for step, _ in rows)
  tail = [bits for step, bits in rows if step >= 0.9 * last]
  return float(sum(tail) / len(tail))


def _finite(value):
  return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def model_figures(row: dict) -> list[dict]:
  """The table rows of one model (one per task), from what its stages wrote."""
  workdir = row['workdir']
  markers = [_read_json(workdir / 'pipeline' / f'{s}.json') for s in TABLE_STAGES]
  reopened = _read_json(workdir / 'pipeline' / 'reopened.json')  # see pipeline.reopen_collect
  common = dict(
      model=row['model'], episodes=int(row['config'].collect.train_episodes),
      psnr=_read_json(workdir / 'tokenizer' / 'result.json').get('psnr'),
      train_bits=train_bits(workdir / 'prior'),
      val_bits=_read_json(workdir / 'prior' / 'result.json').get('val_bits_per_token'),
      seconds=sum(m.get('seconds', 0.0) for m in markers + [reopened]) if markers[-1] else None,
      done=bool(markers[-1]), workdir=str(workdir))
  if len(row['tasks']) == 1:
    check = _read_json(workdir / 'reward' / 'check.json')
    per_task = {row['tasks'][0]: check}
  else:
    per_task = _read_json(workdir / 'reward' / 'conditioning.json').get('per_task', {})
  return [dict(common, task=task, test_episodes=per_task.get(task, {}).get('episodes'),
               spearman=_finite(per_task.get(task, {}).get('spearman')),
               auroc=_finite(per_task.get(task, {}).get('auroc_expert_vs_random')))
          for task in row['tasks']]


def _cell(value, column: str) -> str:
  if value is None:
    return '-'
  if column == 'seconds':
    return f'{value / 60:.1f}'
  if isinstance(value, float):
    if column in ('spearman', 'auroc'):  # 3 places: 0.798 must not print as the bar's 0.80
      return f'{value:.3f}'
    return f'{value:.1f}' if column == 'psnr' else f'{value:.2f}'
  return f'`{value}`' if column == 'task' else str(value)


def format_markdown(rows: list[dict]) -> str:
  """The table as markdown; rows of the same task sit together, single-task model first."""
  header = ('model', 'task', 'expert episodes', 'scored episodes', 'Spearman', 'AUROC',
            'PSNR (dB)', 'train bits/token', 'val bits/token', 'wall (min)')
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * 2 + '---:|' * 8]
  order = {task: i for i, task in enumerate(dict.fromkeys(r['task'] for r in rows))}
  for row in sorted(rows, key=lambda r: order[r['task']]):
    lines.append('| ' + ' | '.join(_cell(row[c], c) for c in COLUMNS) + ' |')
  return '\n'.join(lines) + '\n'


def write_table(config, workdir) -> list[dict]:
  """Writes <workdir>/quality_table.{md,json} from whatever the models have finished."""
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  rows = [r for model in plan(config, root) for r in model_figures(model)]
  atomic.write_json(root / 'quality_table.json', rows, indent=2)
  atomic.write(root / 'quality_table.md', format_markdown(rows))
  return rows


def run(config, workdir, log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or resumes) every model of the table in order, rewriting the table after each."""
  for row in plan(config, workdir):
    log(f'[quality-table] {row["model"]}: {", ".join(row["tasks"])} in {row["workdir"]}')
    run_model(row, log)
    write_table(config, workdir)
  return write_table(config, workdir)
