"""The agent on a 'data' mesh (viper_jax/agent/mesh.py), on 4 fake CPU devices: train steps on 4
devices equal those on 1 with the same global batch, and `viper train-agent` runs on 4 devices."""
import json

import jax
import numpy as np
import pytest

from benchmarks.agent_train_step import random_batch
from viper_jax.agent import agent as agent_lib
from viper_jax.agent import agent_config
from viper_jax.agent import mesh as agent_mesh

STEPS = 3


def _agent_cfg(devices: int):
  cfg = agent_config('xs')
  cfg.reward_source = 'viper'
  cfg.mesh.devices = devices
  return cfg


def _train(devices: int, batches):
  cfg = _agent_cfg(devices)
  agent = agent_lib.Agent(cfg, action_dim=2, discrete=False, image_size=(16, 16))
  mesh = agent_mesh.build(cfg)
  assert mesh.size == devices
  state = agent_mesh.put_state(jax.jit(agent.init)(jax.random.key(0)), mesh)
  step = agent_mesh.jit_train_step(agent, mesh)
  losses = []
  for i, batch in enumerate(batches):
    state, metrics = step(state, agent_mesh.put_batch(batch, mesh), jax.random.key(i))
    losses.append({k: float(v) for k, v in metrics.items()})
  return jax.device_get(state), losses


def test_four_devices_equal_one():
  assert jax.device_count() >= 4
  rng = np.random.default_rng(0)
  batches = [random_batch(rng, 4, 4, 2, 16) for _ in range(STEPS)]
  one, losses1 = _train(1, batches)
  four, losses4 = _train(4, batches)
  for a, b in zip(losses1, losses4):
    for key in a:
      np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
  # Params: only the order of the cross-device gradient sums differs (float32 round-off). Adam
  # turns round-off in near-zero gradients into update differences of up to lr per step, so
  # every element lies within STEPS * lr of the 1-device run, and on average 1000 times closer.
  lr = max(_agent_cfg(1).opt.wm_lr, _agent_cfg(1).opt.ac_lr)
  diffs = np.concatenate([np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).ravel()
                          for x, y in zip(jax.tree.leaves(one), jax.tree.leaves(four))
                          if np.issubdtype(np.asarray(x).dtype, np.floating)])
  assert diffs.max() <= STEPS * lr, diffs.max()
  assert diffs.mean() <= STEPS * lr / 1000, diffs.mean()


def test_batch_and_device_checks():
  cfg = _agent_cfg(4)
  mesh = agent_mesh.build(cfg)
  cfg.batch_size = 6
  with pytest.raises(ValueError, match='divisible'):
    agent_mesh.host_batch_size(cfg, mesh)
  cfg.mesh.per_device_batch = 2
  assert agent_mesh.host_batch_size(cfg, mesh) == 8
  cfg.mesh.hosts = 2
  with pytest.raises(ValueError, match='hosts'):
    agent_mesh.build(cfg)


def test_train_agent_on_four_devices(tmp_path, capsys):
  from viper_jax import cli
  code = cli.main(['viper', 'train-agent', '--config=experiments/quickstart.py:dmc:cartpole-balance',
                   f'--workdir={tmp_path}', '--config.agent.reward_source=env',
                   '--config.env.time_limit=20', '--config.agent.env_steps=60',
                   '--config.agent.prefill=40', '--config.agent.replay_capacity=1000',
                   '--config.agent.mesh.devices=4', '--config.agent.mesh.per_device_batch=1'])
  assert code == 0
  result = json.loads((tmp_path / 'agent' / 'result.json').read_text())
  assert result['counters']['env_steps'] == 60 and result['counters']['updates'] > 0
