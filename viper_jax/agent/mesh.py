"""The agent on a 'data' mesh (config section `agent.mesh`).

  devices           devices of each host in the mesh (0: all of them; default 1: one device)
  hosts             processes the run expects (jax.process_count(); default 1)
  per_device_batch  replay sequences per device; None: agent.batch_size is each host's batch

Each host steps its own environments and keeps its own replay; its batch of
`host_batch_size` sequences is its share of the global batch (the hosts' batches together).
The train step is jitted with the batch split over the mesh's devices and params and optimiser
states replicated, so the gradient of the global batch's loss is summed by the sharded program
and one set of params is trained. The policy runs on the same mesh (environments split over the
devices when they divide, else replicated), and so does the VIPER labelling (pass `build(...)`
as the reward model's `mesh=`).
"""
from __future__ import annotations

import jax
import numpy as np

from viper_jax import parallel


def build(agent_cfg) -> jax.sharding.Mesh:
  """The mesh of `agent_cfg.mesh`: the first `devices` devices of every host."""
  cfg = agent_cfg.mesh
  if cfg.hosts != jax.process_count():
    raise ValueError(f'agent.mesh.hosts={cfg.hosts}, but this run has {jax.process_count()} '
                     'processes (hosts); set agent.mesh.hosts to match the launcher')
  local = jax.local_device_count()
  if not 0 <= cfg.devices <= local:
    raise ValueError(f'agent.mesh.devices={cfg.devices} must lie in [0, {local}] (0: all of '
                     f"this host's {local} devices)")
  per_host = cfg.devices or local
  devices = [d for p in range(jax.process_count())
             for d in sorted((d for d in jax.devices() if d.process_index == p),
                             key=lambda d: d.id)[:per_host]]
  return parallel.make_mesh(devices)


def host_batch_size(agent_cfg, mesh) -> int:
  """Sequences per train step from this host's replay (a multiple of its devices)."""
  local = parallel.local_device_count(mesh)
  per_device = agent_cfg.mesh.per_device_batch
  if per_device is not None:
    return int(per_device) * local
  if agent_cfg.batch_size % local:
    raise ValueError(f'agent.batch_size={agent_cfg.batch_size} must be divisible by the {local} '
                     'devices of this host in agent.mesh, or set agent.mesh.per_device_batch')
  return int(agent_cfg.batch_size)


def jit_train_step(agent, mesh):
  """agent.train_step jitted on the mesh: (state, batch, key) -> (state, metrics).

  state: replicated (see `put_state`), donated; batch: global arrays split over 'data' (see
  `put_batch`); metrics come back replicated.
  """
  replicated, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(agent.train_step, in_shardings=(replicated, data, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def put_state(state, mesh):
  """The agent state (identical on every host) replicated on the mesh."""
  return parallel.put_replicated(state, mesh)


def put_batch(host_batch: dict, mesh) -> dict:
  """This host's replay batch (numpy) as global arrays split over 'data'."""
  return parallel.put_batch(host_batch, mesh)


def host_rows(x) -> np.ndarray:
  """This host's rows of a global array split over 'data' (everything on one host)."""
  if jax.process_count() == 1:
    return np.asarray(x)
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  starts, rows = set(), []
  for s in shards:  # replicated copies of a row block appear once per device: keep one
    if (s.index[0].start or 0) not in starts:
      starts.add(s.index[0].start or 0)
      rows.append(np.asarray(s.data))
  return np.concatenate(rows)


def jit_policy(agent, mesh, num_envs: int):
  """agent.policy on the mesh for this host's `num_envs` environments.

  Returns policy(state, carry, obs, key, mode) -> (action numpy [num_envs, A], carry): obs is
  this host's numpy batch, carry whatever the previous call returned (or agent.initial_carry).
  Environments are split over the host's devices when they divide, else each device runs all.
  """
  split = num_envs % parallel.local_device_count(mesh) == 0
  rows = parallel.data_sharding(mesh) if split else parallel.replicated(mesh)
  replicated = parallel.replicated(mesh)
  fn = jax.jit(agent.policy, in_shardings=(replicated, rows, rows, replicated, replicated),
               out_shardings=(rows, rows))

  def place(tree):
    if jax.process_count() == 1:
      return jax.device_put(tree, rows)  # a no-op for the carry this function returned
    if not split:
      raise ValueError(f'agent.num_envs={num_envs} must be divisible by the devices of each '
                       'host in agent.mesh on a multi-host run')
    return jax.tree.map(lambda x: x if isinstance(x, jax.Array) and not x.is_fully_addressable
                        else parallel.put_batch(np.asarray(x), mesh), tree)

  def policy(state, carry, obs, key, mode=False):
    action, carry = fn(state, place(carry), place(obs), key, np.asarray(mode))
    return host_rows(action), carry

  return policy
