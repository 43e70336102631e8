"""Damaged checkpoints: each stage restores the newest one that reads back whole.

A file inside the newest checkpoint (or the agent's replay sidecar) is truncated; the rerun reports
it, sets it aside in `<checkpoints>.damaged/` and resumes from the previous one, ending where an
undamaged run ends. With every checkpoint damaged the error names the folder and how to start fresh.
"""
import logging

import jax
import numpy as np
import pytest

from viper_jax import checkpoint
from viper_jax.agent import loop
from viper_jax.video import priors, train_prior, train_tokenizer

from conftest import synthetic_video_config
from test_agent_loop import tiny_config as agent_tiny_config


def truncate_newest_file(step_dir) -> str:
  """Cuts the largest array file of an orbax step folder to half its size; returns its path."""
  files = [p for p in step_dir.rglob('*') if p.is_file() and '/d/' in str(p)]
  target = max(files, key=lambda p: p.stat().st_size)
  data = target.read_bytes()
  target.write_bytes(data[:len(data) // 2])
  return str(target)


def truncate_array_files(step_dir) -> None:
  """Cuts every array file of an orbax step folder to half its size. A params-only restore reads
  some of them and not others, and which file holds the params varies with orbax's layout."""
  for p in step_dir.rglob('*'):
    if p.is_file() and '/d/' in str(p):
      truncate(p)


def truncate(path) -> None:
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def _state(ckpt_dir, template):
  c = checkpoint.Checkpointer(ckpt_dir)
  state, _, step = c.restore_latest(template)
  c.close()
  return jax.device_get(state), step


def _assert_bitwise(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope='module')
def video_run(tmp_path_factory):
  root = tmp_path_factory.mktemp('damage_video')
  config = synthetic_video_config(root)
  train_tokenizer.run(config, root)
  train_prior.run(config, root)
  return root, config


def _tokenizer_template(config):
  return train_tokenizer.init_state(config.tokenizer, jax.random.key(0), (32, 32))


def _prior_template(config):
  prior = priors.build_prior(config, 1)
  return train_prior.init_state(prior, config.prior.train, jax.random.key(0),
                                config.prior.train.window)


@pytest.mark.parametrize('stage', ['tokenizer', 'prior'])
def test_damaged_newest_checkpoint_is_set_aside_and_the_previous_one_resumed(
    video_run, stage, caplog):
  root, config = video_run
  ckpt_dir = root / stage / 'checkpoints'
  template = (_tokenizer_template if stage == 'tokenizer' else _prior_template)(config)
  before, step = _state(ckpt_dir, template)
  assert step == 6
  damaged_file = truncate_newest_file(ckpt_dir / '6')
  run = train_tokenizer.run if stage == 'tokenizer' else train_prior.run
  with caplog.at_level(logging.WARNING):
    run(config, root)
  # Reported by path with what failed, moved aside (not deleted), resumed from step 4 to 6.
  assert any(str(ckpt_dir / '6') in r.getMessage() and 'set aside' in r.getMessage()
             for r in caplog.records)
  aside = list(checkpoint.damaged_dir(ckpt_dir).glob('6-*'))
  assert len(aside) == 1 and (aside[0] / damaged_file.split('/6/', 1)[1]).exists()
  after, step = _state(ckpt_dir, template)
  assert step == 6
  _assert_bitwise(before, after)  # deterministic: resuming from 4 gives the same step-6 state


def test_reward_load_falls_back_past_a_damaged_prior_checkpoint(video_run):
  from viper_jax import reward
  root, config = video_run
  ckpt_dir = root / 'prior' / 'checkpoints'
  truncate_array_files(ckpt_dir / '6')
  model = reward.load(root)
  frames = np.zeros((1, 4, 32, 32, 3), np.uint8)
  assert np.all(np.isfinite(model.log_likelihood(frames, np.zeros(1, np.int32))))
  assert checkpoint.Checkpointer(ckpt_dir).all_steps() == [4]


def test_no_usable_checkpoint_names_the_folder_and_how_to_start_fresh(video_run):
  root, config = video_run
  ckpt_dir = root / 'tokenizer' / 'checkpoints'
  steps = checkpoint.Checkpointer(ckpt_dir).all_steps()
  assert steps
  for step in steps:
    truncate_newest_file(ckpt_dir / str(step))
  with pytest.raises(checkpoint.NoUsableCheckpointError) as error:
    train_tokenizer.run(config, root)
  message = str(error.value)
  assert str(ckpt_dir) in message and 'mv ' in message and 'start this stage fresh' in message
  assert all(str(ckpt_dir / str(s)) in message for s in steps)
  assert checkpoint.Checkpointer(ckpt_dir).all_steps() == steps  # nothing moved or deleted


def test_agent_damaged_replay_sidecar_falls_back_to_the_previous_pair(tmp_path, caplog):
  config = agent_tiny_config('env', env_steps=100)
  config.agent.checkpoint_every = 50
  first = loop.run(config, tmp_path)
  assert first['counters']['env_steps'] == 100
  truncate(tmp_path / 'replay' / 'replay_100.npz')
  with caplog.at_level(logging.WARNING):
    second = loop.run(config, tmp_path)
  assert second['resumed_from']['env_steps'] == 50
  assert second['counters']['env_steps'] == 100
  assert second['counters']['updates'] == first['counters']['updates']
  np.testing.assert_array_equal(second['replay'].data['image'][:, :50],
                                first['replay'].data['image'][:, :50])
  aside = checkpoint.damaged_dir(tmp_path / 'checkpoints')
  assert len(list(aside.glob('100-*.replay_100.npz'))) == 1
  assert len([p for p in aside.glob('100-*') if p.is_dir()]) == 1
  assert any('replay_100.npz' in r.getMessage() or 'checkpoints/100' in r.getMessage()
             for r in caplog.records)
