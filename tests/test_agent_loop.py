"""Tiny end-to-end agent runs on dmc:cartpole-balance: every reward source, resume, NaN handling.

Sizes are 'xs' with 50-step episodes; each run is a few hundred env steps. The first run of each
reward source compiles its train step (tens of seconds on 2 cores); repeats hit the jit cache.
"""
import json
import math

import jax
import numpy as np
import pytest

from viper_jax import configs, metrics
from viper_jax.agent import agent_config, labelling, loop
from viper_jax.agent import policy as agent_policy
from viper_jax.data import policies
from viper_jax.data.store import EpisodeStore
from viper_jax.errors import NonFiniteLossError

from conftest import saved_state, synthetic_episode


def tiny_config(source: str, env_steps: int = 150):
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-balance')
  with config.unlocked():
    config.agent = agent_config('xs')
  config.env.time_limit = 50
  a = config.agent
  a.reward_source = source
  a.env_steps, a.prefill, a.log_every = env_steps, 50, 50
  # One update per 8 env steps (xs: one per 2): every path still runs, and the updates, which
  # dominate a tiny run's time after compiling, are a quarter.
  a.train_ratio = 2
  a.checkpoint_every, a.eval_every = 100, 1000  # eval only at the end
  a.replay_capacity = 1000
  return config


def mean_pixel(frames):
  """A fake, causal likelihood_fn: each frame's mean pixel value [B, T]."""
  return np.asarray(frames, np.float32).mean((2, 3, 4))


def _check_finished(workdir, result, config):
  assert result['counters']['env_steps'] == config.agent.env_steps
  assert result['counters']['updates'] > 0
  rows = metrics.read_metrics(workdir)
  train_rows = [r for r in rows if 'loss' in r]
  assert train_rows and all(math.isfinite(v) for r in train_rows for v in r.values())
  assert any('eval/return' in r for r in rows) and any('episode/return' in r for r in rows)
  # Each evaluation row carries the update count so far; the last one is the run's total.
  eval_updates = [r['eval/updates'] for r in rows if 'eval/return' in r]
  assert eval_updates == sorted(eval_updates) and eval_updates[-1] == result['counters']['updates']
  assert list((workdir / 'videos').glob('eval_*.gif'))
  # ... and each evaluation's first episode losslessly, with its true return.
  last = [r for r in rows if 'eval/return' in r][-1]
  saved = np.load(workdir / 'videos' / f"eval_{last['step']:08d}.npz")
  assert saved['image'].dtype == np.uint8 and len(saved['image']) == last['eval/length']
  assert np.isfinite(saved['true_return'])
  if config.agent.eval_episodes == 1:
    assert np.isclose(saved['true_return'], last['eval/return'])
  assert (workdir / 'checkpoints' / str(config.agent.env_steps)).exists()


@pytest.fixture(scope='module')
def env_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('agent_env')
  config = tiny_config('env')
  return workdir, config, loop.run(config, workdir)


def test_env_reward_run_finishes_and_logs_true_return(env_run):
  workdir, config, result = env_run
  _check_finished(workdir, result, config)
  assert result['eval']['eval/return'] > 0  # cartpole-balance pays every upright step


def test_trained_agent_is_a_collect_policy(env_run):
  workdir, config, _ = env_run
  from viper_jax import envs
  env = envs.make(config.task, time_limit=5)
  from viper_jax import pipeline
  spec = f'agent:{workdir / "checkpoints"}'
  with config.unlocked():
    config.collect.policy = spec
  loader = policies.loader_for(spec, pipeline.policy_loaders(config))
  policy = policies.make_policy(spec, env, config.task, loader=loader)
  # It holds what acting reads, the trained values, and nothing else (no optimiser states).
  assert sorted(policy.state) == sorted(agent_policy.ACTING_PARAMS)
  _, whole = saved_state(workdir / 'checkpoints')
  for name in agent_policy.ACTING_PARAMS:
    jax.tree.map(np.testing.assert_array_equal, policy.state[name], whole['agent'][name])
  obs, info = env.reset(seed=0)
  policy.reset(0)
  for _ in range(3):
    action = policy(obs, info)
    assert env.action_space.contains(np.asarray(action, np.float32))
    obs, _, _, _, info = env.step(action)
  env.close()


def test_viper_disag_run_finishes(tmp_path):
  config = tiny_config('viper+disag')
  result = loop.run(config, tmp_path, likelihood_fn=mean_pixel)
  _check_finished(tmp_path, result, config)
  rows = metrics.read_metrics(tmp_path)
  assert any('ac/disag_return' in r and 'ac/density_return' in r for r in rows)
  assert any('episode/viper_return' in r for r in rows)


def test_amp_run_finishes(tmp_path):
  store = EpisodeStore(tmp_path / 'experts')
  for i in range(2):
    store.save(synthetic_episode(i, length=20, size=64, task='dmc:cartpole-balance'), 'train',
               f'ep{i}')
  config = tiny_config('amp')
  config.agent.amp.expert_root = str(store.root)
  result = loop.run(config, tmp_path / 'run')
  _check_finished(tmp_path / 'run', result, config)
  assert any('amp/disc_loss' in r for r in metrics.read_metrics(tmp_path / 'run'))


def test_viper_run_resumes_with_same_counters_and_replay_and_aligned_rewards(tmp_path):
  config = tiny_config('viper', env_steps=200)
  lengths = []  # frames per scoring call: whole episodes (51) and the cut prefix, padded to 51

  def recorded(frames):
    lengths.append(frames.shape[1])
    return mean_pixel(frames)

  assert labelling.viper_pad_length(config) == 51  # default: a full episode, reset frame included
  # "Killed" after 130 steps: the last checkpoint is at 100, mid-episode (episodes are 51 steps).
  first = loop.run(config, tmp_path, likelihood_fn=recorded, stop_after=130)
  assert first['counters']['env_steps'] == 130
  second = loop.run(config, tmp_path, likelihood_fn=recorded)
  assert lengths and set(lengths) == {51}
  assert second['resumed_from']['env_steps'] == 100
  assert second['resumed_from']['updates'] == pytest.approx(
      (100 - config.agent.prefill + 1) * config.agent.train_ratio / 16, abs=1)
  assert second['counters']['env_steps'] == 200
  old, new = first['replay'], second['replay']
  for key in ('image', 'action', 'reward', 'is_first', 'density'):
    np.testing.assert_array_equal(new.data[key][:, :100], old.data[key][:, :100])
  assert new.count[0] == 200 and new.data['is_first'][0, 100]  # envs restart after a resume
  # Alignment: every step's label is likelihood_fn(its episode)[t] = the mean pixel of frame t,
  # including the partial episode cut by the interruption (scored on resume).
  # The episode still running at the end (from step 151) is labelled when it ends: not yet.
  labelled = int(new.ready[0])
  assert labelled == 151
  frames = new.data['image'][0, :labelled]
  np.testing.assert_allclose(new.data['density'][0, :labelled], mean_pixel(frames[None])[0],
                             rtol=1e-6)
  # The killed run's rows past the checkpoint (steps 101..130) were replaced, not repeated.
  steps = [row['step'] for row in metrics.read_metrics(tmp_path)]
  assert steps == sorted(steps) and steps.count(150) == 1
  assert not (tmp_path / 'replay' / 'replay_100.npz').exists() or len(
      list((tmp_path / 'replay').glob('replay_*.npz'))) <= config.agent.keep_checkpoints


def test_non_finite_rewards_stop_the_run_and_keep_the_last_checkpoint(tmp_path):
  config = tiny_config('viper', env_steps=200)
  config.agent.checkpoint_every = 50
  calls = []

  def breaks_on_third_episode(frames):
    calls.append(1)
    out = mean_pixel(frames)
    return out * np.nan if len(calls) >= 3 else out

  with pytest.raises(NonFiniteLossError, match='non-finite'):
    loop.run(config, tmp_path, likelihood_fn=breaks_on_third_episode)
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps and steps[-1] < 153  # saved before the third episode ended, not after
  resumed = loop.run(config, tmp_path, likelihood_fn=mean_pixel, stop_after=1)
  assert resumed['resumed_from']['env_steps'] == steps[-1]


def test_train_agent_command(tmp_path, capsys):
  from viper_jax import cli
  assert cli.main(['viper', '--help']) == 0
  assert 'train-agent' in capsys.readouterr().out
  base = ['viper', 'train-agent', '--config=experiments/quickstart.py:dmc:cartpole-balance',
          f'--workdir={tmp_path}']
  # The viper sources need a reward model: a clear usage error, not a crash mid-run.
  assert cli.main(base + ['--config.agent.reward_source=viper']) != 0
  code = cli.main(base + ['--config.agent.reward_source=env',
                          '--config.env.time_limit=20', '--config.agent.env_steps=60',
                          '--config.agent.prefill=40', '--config.agent.replay_capacity=1000'])
  assert code == 0
  assert 'agent: 60 env steps' in capsys.readouterr().out
  assert (tmp_path / 'agent' / 'checkpoints' / '60').exists()
  assert json.loads((tmp_path / 'agent' / 'result.json').read_text())['counters']['env_steps'] == 60
