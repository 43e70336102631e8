"""Device meshes and shardings for data parallelism (jax.sharding; multi-host safe).

The batch axis of every input is split over the mesh axis 'data'; parameters and optimiser state
are replicated. Under jit, XLA then inserts the gradient all-reduce itself, so one train step
written for one device runs unchanged on N devices (and N hosts).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(**kwargs) -> bool:
  """Joins a multi-host run when the launcher asks for it; returns whether it did.

  With keyword arguments (coordinator_address, num_processes, process_id) they are passed on.
  Without, it runs only when the environment says this is a multi-host job: VIPER_DISTRIBUTED=1
  (set by launch/tpu_pod.sh and launch/gpu.sh), where `jax.distributed.initialize()` finds the
  coordinator itself on TPU pods, and from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
  JAX_PROCESS_ID elsewhere. On CPU, cross-process collectives use gloo.
  """
  import os
  if not kwargs and os.environ.get('VIPER_DISTRIBUTED', '0') != '1':
    return False
  if not kwargs and 'JAX_NUM_PROCESSES' in os.environ:  # jax reads only the coordinator itself
    kwargs = dict(coordinator_address=os.environ['JAX_COORDINATOR_ADDRESS'],
                  num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                  process_id=int(os.environ['JAX_PROCESS_ID']))
  # Only the CPU backend reads this, and asking for the backend here would start it too early.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  return True


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: every device of every host)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', the rest replicated."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_divisible(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  if batch_size % mesh.size:
    raise ValueError(f'{what}={batch_size} must be divisible by the number of devices in the mesh '
                     f'({mesh.size}) so that every device gets the same share')


def local_device_count(mesh: Mesh) -> int:
  """Devices of the mesh on this host: how many parts this host's rows are split into."""
  return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def pad_rows(host_batch, mesh: Mesh):
  """Pads this host's rows (a pytree of numpy arrays, leading axis B) to a multiple of its devices
  on the mesh by repeating the last row. Returns (padded tree, weight float32 [B + pad]: 1 for a
  real row, 0 for padding); drop the padding from row-wise results with [:B]."""
  leaves = jax.tree.leaves(host_batch)
  rows = len(leaves[0])
  pad = -rows % local_device_count(mesh)
  padded = jax.tree.map(
      lambda x: np.concatenate([np.asarray(x), np.repeat(np.asarray(x)[-1:], pad, 0)]), host_batch)
  return padded, np.concatenate([np.ones(rows, np.float32), np.zeros(pad, np.float32)])


def host_shard(num_items: int) -> slice:
  """This host's contiguous share of a global batch of `num_items` (equal shares per host)."""
  count, index = jax.process_count(), jax.process_index()
  if num_items % count:
    raise ValueError(f'global batch {num_items} is not divisible by {count} hosts')
  per_host = num_items // count
  return slice(index * per_host, (index + 1) * per_host)


def put_batch(host_batch, mesh: Mesh):
  """Turns this host's share of a batch (a pytree of numpy arrays) into global sharded arrays."""
  sharding = data_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)


def put_replicated(tree, mesh: Mesh):
  """Places a pytree (identical on every host) replicated on the mesh."""
  return jax.device_put(tree, replicated(mesh))
