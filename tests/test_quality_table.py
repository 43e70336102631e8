"""`viper quality-table` on a tiny two-task store (one DMC, one Atari task): every row finishes, the
multi-task model's conditioning matrix has one row and column per task, a rerun resumes; and the
Atari reward ignores the score region exactly when data.mask_score is set."""
import json
import os

import numpy as np
import pytest

from viper_jax import cli, configs, quality_table, reward
from viper_jax.data.store import EpisodeStore
from viper_jax.envs import score_masks

TASKS = ('dmc:cartpole-balance', 'atari:pong')

TINY = {  # every stage a few steps, 16x16 frames, episodes of 10 agent steps
    'env.size': (16, 16), 'table.tasks': TASKS, 'table.multitask': TASKS,
    'table.study_task': 'dmc:cartpole-balance', 'table.study_episodes': (2,),
    'table.dmc.time_limit': 10, 'table.atari.time_limit': 10,
    'table.atari.action_repeat': 2,  # one video model needs one frame rate (the multi-task one)
    'table.dmc.train_episodes': 2, 'table.atari.train_episodes': 2,
    'table.dmc.tokenizer_channel_mult': (1, 2), 'table.atari.tokenizer_channel_mult': (1, 2),
    # One tokenizer program for every row (test_rows_take_their_suites_tokenizer checks the real
    # per-suite weights): a weight is a compile-time constant, and each program compiles for ~10 s.
    'table.atari.tokenizer_foreground_weight': 10.0, 'table.dmc.tokenizer_foreground_weight': 10.0,
    'table.dmc.tokenizer_steps': 3, 'table.atari.tokenizer_steps': 3,
    'table.multitask_tokenizer_steps': 3, 'table.multitask_prior_steps': 3,
    'collect.test_episodes': 1, 'collect.test_noise_levels': (0.0, 0.5),
    'collect.random_test_episodes': 1, 'collect.workers': 1,
    'tokenizer.channels': 8, 'tokenizer.channel_mult': (1, 2), 'tokenizer.codebook_size': 16,
    'tokenizer.code_dim': 4, 'tokenizer.attention_in_middle': False,
    'tokenizer.train.steps': 3, 'tokenizer.train.batch_size': 4,
    'tokenizer.train.image_every': 3, 'tokenizer.train.checkpoint_every': 3,
    'prior.num_layers': 1, 'prior.width': 16, 'prior.num_heads': 2, 'prior.mlp_dim': 32,
    'prior.context': 2, 'prior.train.window': 2, 'prior.train.steps': 3,
    'prior.train.batch_size': 4, 'prior.train.eval_every': 3, 'prior.train.sample_every': 3,
    'prior.train.checkpoint_every': 3, 'prior.train.log_every': 1,
}


def _format(value, inner=False) -> str:
  """A config value as a command-line override (strings quoted only inside tuples)."""
  if isinstance(value, tuple):
    return '(' + ','.join(_format(v, True) for v in value) + (',)' if len(value) == 1 else ')')
  return repr(value) if isinstance(value, str) and inner else str(value)


def test_rows_take_their_suites_tokenizer():
  config = configs.load_config('experiments/quality.py')
  pong, cartpole = (quality_table.row_config(config, t) for t in ('atari:pong', 'dmc:cartpole-balance'))
  assert pong.tokenizer.channel_mult == config.table.atari.tokenizer_channel_mult == (1, 2, 2)
  assert pong.tokenizer.train.steps == config.table.atari.tokenizer_steps
  assert cartpole.tokenizer.channel_mult == config.table.dmc.tokenizer_channel_mult == (1, 2, 2, 2)
  assert cartpole.tokenizer.foreground_weight == config.table.dmc.tokenizer_foreground_weight


def test_a_task_with_its_own_grading_gets_it_in_every_row():
  config = configs.load_config('experiments/quality.py')
  graded = config.table.test_noise_levels['dmc:pendulum-swingup']
  assert graded != config.collect.test_noise_levels  # else this test checks nothing
  assert configs.load_config('experiments/quality.py:dmc:pendulum-swingup').collect.test_noise_levels == graded
  assert quality_table.row_config(config, 'dmc:cartpole-balance').collect.test_noise_levels == (
      config.collect.test_noise_levels)
  multitask = next(r for r in quality_table.plan(config, 'runs/q') if r['model'] == 'multitask')
  assert 'dmc:pendulum-swingup' in multitask['tasks']  # run_model collects each task by row_config
  assert quality_table.row_config(multitask['config'], 'dmc:pendulum-swingup').collect.test_noise_levels == graded


@pytest.fixture(scope='module')
def table(tmp_path_factory):
  """The tiny table, run once through the `viper quality-table` command."""
  workdir = tmp_path_factory.mktemp('quality')
  argv = ['viper', 'quality-table', '--config=experiments/quality.py', f'--workdir={workdir}']
  argv += [f'--config.{k}={_format(v)}' for k, v in TINY.items()]
  assert cli.main(argv) == 0
  return workdir


def test_table_rows_and_files(table):
  rows = json.loads((table / 'quality_table.json').read_text())
  models = [(r['model'], r['task']) for r in rows]
  assert models == [('single', TASKS[0]), ('single', TASKS[1]), ('2 expert episodes', TASKS[0]),
                    ('multitask', TASKS[0]), ('multitask', TASKS[1])]
  for row in rows:
    assert row['done'], row
    assert row['psnr'] is not None and row['val_bits'] is not None and row['seconds'] > 0
    assert row['train_bits'] is not None and row['auroc'] is not None
    assert row['test_episodes'] == 3  # one per test noise level (0.0, 0.5) and one random
  # The study row with the table's own episode count is the table's row, not a second model.
  assert rows[2]['workdir'] == rows[0]['workdir']
  # The multi-task model's episodes are the single-task rows' files, linked, not collected again.
  for task, single in zip(TASKS, rows[:2]):
    ours = EpisodeStore(table / 'multitask' / 'episodes').paths(task, 'train')
    theirs = EpisodeStore(single['workdir'] + '/episodes').paths(task, 'train')
    assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == 2
    assert all(os.path.samefile(a, b) for a, b in zip(ours, theirs))
  markdown = (table / 'quality_table.md').read_text()
  assert markdown.count('\n') == 2 + len(rows) and '`atari:pong`' in markdown


def test_conditioning_matrix_shape_and_task_names(table):
  result = json.loads((table / 'multitask' / 'reward' / 'conditioning.json').read_text())
  assert result['tasks'] == sorted(TASKS)  # task-id order of the trained model
  matrix = np.array(result['matrix'])
  assert matrix.shape == (2, 2) and np.isfinite(matrix).all()
  assert len(result['diagonal_highest']) == 2
  assert set(result['per_task']) == set(TASKS)
  assert (table / 'multitask' / 'reward' / 'conditioning.png').stat().st_size > 0
  check = json.loads((table / 'multitask' / 'reward' / 'check.json').read_text())
  assert check['conditioning']['matrix'] == result['matrix']


def _tiny_config(**overrides):
  """experiments/quality.py with TINY and then `overrides` ({'a.b': value}) applied."""
  config = configs.load_config('experiments/quality.py')
  with config.unlocked():
    for key, value in {**TINY, **overrides}.items():
      node = config
      *parents, leaf = key.split('.')
      for part in parents:
        node = node[part]
      node[leaf] = value
  return config


def test_rerun_resumes_without_training(table):
  before = (table / 'quality_table.json').read_text()
  markers = sorted(table.glob('**/pipeline/*.json'))
  stamps = [p.stat().st_mtime_ns for p in markers]
  lines = []
  quality_table.run(_tiny_config(), table, log=lines.append)
  assert [p.stat().st_mtime_ns for p in markers] == stamps, 'no stage ran again'
  assert not any(line.endswith('running') for line in lines)
  assert json.loads((table / 'quality_table.json').read_text()) == json.loads(before)


def test_more_test_episodes_rescore_without_retraining(table):
  """A config that plans more test episodes reopens collect and reward-check of every model, not
  the training stages; one that plans more train episodes refuses to reuse the trained models."""
  models = [table / 'dmc_cartpole-balance', table / 'atari_pong', table / 'multitask']
  trained = {p: p.stat().st_mtime_ns for m in models
             for p in (m / 'pipeline' / 'train-tokenizer.json', m / 'pipeline' / 'train-prior.json')}
  first = json.loads((table / 'quality_table.json').read_text())
  quality_table.run(_tiny_config(**{'collect.random_test_episodes': 2}), table, log=lambda _: None)
  assert {p: p.stat().st_mtime_ns for p in trained} == trained, 'no model was retrained'
  for model in models[:2]:
    scored = json.loads((model / 'reward' / 'check.json').read_text())['per_episode']
    assert sum(e['group'] == 'random' for e in scored) == 2, model
  for task in TASKS:  # the shared model scores its tasks' new episodes too (linked or collected)
    assert len(EpisodeStore(table / 'multitask' / 'episodes').paths(task, 'test')) == 4
  rows = json.loads((table / 'quality_table.json').read_text())
  assert all(b['seconds'] > a['seconds'] for a, b in zip(first, rows)), 'wall time counts both runs'
  with pytest.raises(ValueError, match='train episodes that its store lacks.*train-tokenizer'):
    quality_table.run(_tiny_config(**{'collect.random_test_episodes': 2,
                                      'table.dmc.train_episodes': 3}), table, log=lambda _: None)


def test_reward_check_out_scores_another_store_and_leaves_the_models_check(table, tmp_path):
  from viper_jax.reward import check
  row = quality_table.plan(_tiny_config(), table)[0]
  config, own = row['config'], row['workdir'] / 'reward' / 'check.json'
  before = (own.read_text(), os.stat(own).st_mtime_ns)
  with config.unlocked():
    config.data.root = str(table / 'multitask' / 'episodes')  # the same task's files, linked
  result = check.run(config, row['workdir'], out_dir=tmp_path / 'other')
  assert (own.read_text(), os.stat(own).st_mtime_ns) == before
  written = json.loads((tmp_path / 'other' / 'check.json').read_text())
  assert written['spearman_ceiling'] == result['spearman_ceiling'] <= 1.0
  assert len(written['spearman_interval90']) == 2
  assert (tmp_path / 'other' / 'shape.json').exists()
  assert (tmp_path / 'other' / 'reward_vs_return.png').stat().st_size > 0
  # The shared model on a store of one of its tasks: scored, without a conditioning matrix.
  shared = quality_table.plan(_tiny_config(), table)[-1]
  config = shared['config']
  with config.unlocked():
    config.data.root = str(row['workdir'] / 'episodes')
  result = check.run(config, shared['workdir'], out_dir=tmp_path / 'shared')
  held_out = EpisodeStore(row['workdir'] / 'episodes').paths(TASKS[0], 'test')
  assert 'conditioning' not in result and result['episodes'] == len(held_out) >= 3
  assert not (tmp_path / 'shared' / 'conditioning.json').exists()


def test_atari_reward_ignores_the_score_region_only_when_masked(table):
  model = reward.load(table / 'atari_pong')
  assert model.config.data.mask_score
  store = EpisodeStore(table / 'atari_pong' / 'episodes')
  frames = store.load(store.paths('atari:pong', 'test')[0])['image'][None]  # [1, T, 16, 16, 3]
  region = ~score_masks.score_mask('atari:pong', frames.shape[2:4])  # True on the score
  assert 0 < region.sum() < region.size / 4
  changed = frames.copy()
  changed[:, :, region] = 255 - changed[:, :, region]  # a different score, nothing else
  assert (changed != frames).any()
  masked = np.asarray(model.log_likelihood(changed))
  np.testing.assert_allclose(masked, np.asarray(model.log_likelihood(frames)), atol=1e-4)

  unmasked_config = model.config.copy_and_resolve_references()
  with unmasked_config.unlocked():
    unmasked_config.data.mask_score = False
  unmasked = reward.RewardModel(unmasked_config, model.params)
  difference = np.abs(np.asarray(unmasked.log_likelihood(changed))
                      - np.asarray(unmasked.log_likelihood(frames)))
  assert difference.max() > 1e-3, 'without the mask the score region reaches the reward'


def test_a_rows_store_can_be_set_from_the_command_line(capsys):
  """Row configs keep the placeholder types: `--config.data.root=...` once failed to parse on
  them (None-typed), so a row's model could not score another store."""
  argv = ['viper', 'config', '--config=experiments/quality.py:dmc:pendulum-swingup',
          '--config.data.root=/elsewhere/episodes', '--config.collect.root=/elsewhere/episodes']
  assert cli.main(argv) == 0
  assert capsys.readouterr().out.count('/elsewhere/episodes') == 2


def test_every_row_of_the_full_table_is_a_valid_experiment(tmp_path):
  from viper_jax import validation
  config = configs.load_config('experiments/quality.py')
  rows = quality_table.plan(config, tmp_path)
  assert [r['tasks'][0] for r in rows if r['model'] == 'single'] == list(config.table.tasks)
  for row in rows:
    validation.validate(row['config'])
    atari = row['config'].task.startswith('atari:')
    assert row['config'].env.action_repeat == (4 if atari else 2)
  multitask = rows[-1]['config']
  assert multitask.data.tasks == config.table.multitask and rows[-1]['model'] == 'multitask'
  assert multitask.prior.task_conditioning


def test_linking_takes_only_the_rows_own_planned_episodes(tmp_path):
  """A study row with fewer episodes than a finished row links only its own planned files (the
  8-episode reacher row once trained on 16 linked ones)."""
  source = tmp_path / 'big' / 'dmc_cartpole-balance' / 'train'
  source.mkdir(parents=True)
  for index in range(4):
    (source / f'expert-noise0.00-{index:04d}.npz').write_bytes(b'x')
  wanted = {f'train/expert-noise0.00-{index:04d}.npz' for index in range(2)}
  linked = quality_table.link_episodes([tmp_path / 'big'], tmp_path / 'small',
                                       'dmc:cartpole-balance', wanted)
  names = sorted(p.name for p in (tmp_path / 'small' / 'dmc_cartpole-balance' / 'train').iterdir())
  assert linked == 2 and names == sorted(w.split('/')[1] for w in wanted)


def test_markdown_never_rounds_a_miss_up_to_the_bar():
  row = dict(model='single', task='dmc:pendulum-swingup', episodes=16, test_episodes=None,
             spearman=0.7979,
             auroc=0.9496, psnr=28.47, train_bits=0.12, val_bits=0.2, seconds=600.0)
  line = quality_table.format_markdown([row]).splitlines()[-1]
  assert '| 16 | - | 0.798 | 0.950 | 28.5 |' in line and '0.80 |' not in line
  assert '| 10.0 |' in line  # wall time in minutes
