"""Orbax checkpoints: atomic saves of a train state pytree plus JSON metadata; resume from the newest
checkpoint that reads back whole.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact and unfinished saves are ignored. A finished one can
still be damaged later (a truncated file, a full disk, a bad copy): `restore_latest` then reports it
by path with what failed, moves it (and its sidecar files, e.g. the agent's replay) aside into
`<dir>.damaged/`, never deleting it, and falls back to the previous one. If no checkpoint reads
back, it raises `NoUsableCheckpointError` naming the folder and saying how to start fresh.
Works on local paths and gs:// (every host takes part in a multi-host save).
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class NoUsableCheckpointError(RuntimeError):
  """Every checkpoint of a folder failed to read back; the message says how to start fresh."""


def damaged_dir(directory) -> epath.Path:
  """Where damaged checkpoints of `directory` are set aside: the sibling `<name>.damaged/`."""
  directory = epath.Path(directory)
  return directory.parent / f'{directory.name}.damaged'


def _describe(error: BaseException) -> str:
  text = ' '.join(f'{type(error).__name__}: {error}'.split())
  return text if len(text) <= 300 else text[:297] + '...'


class Checkpointer:
  """Saves {'state': pytree, 'meta': json dict} every call to `save`; keeps the newest N."""

  def __init__(self, directory, max_to_keep: int = 2):
    self.directory = epath.Path(directory)
    self._max_to_keep = max_to_keep
    self._manager = self._make_manager()

  def _make_manager(self) -> ocp.CheckpointManager:
    local = not str(self.directory).startswith('gs://')
    return ocp.CheckpointManager(
        self.directory.resolve() if local else self.directory,
        # Temporary folders of saves killed midway are removed when the folder is opened.
        options=ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True,
                                             cleanup_tmp_directories=True),
        item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(int(s) for s in self._manager.all_steps())

  def save(self, step: int, state, meta: dict | None = None, wait: bool = True) -> None:
    if jax.process_count() == 1:
      # One host: copy the state to host memory in one go. Handed device arrays replicated over
      # several devices, orbax compiles a slice per array shape to split the write among the
      # replicas: 92 compiles and 9 s on the first save of the tiny test tokenizer on 4 devices.
      state = jax.device_get(state)
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta or {})), force=True)
    if wait:
      self._manager.wait_until_finished()

  def restore(self, step: int, template):
    """Restores the state into the structure, dtypes and shardings of `template`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = self._manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'] or {})

  def restore_subtrees(self, step: int, abstract: dict) -> dict:
    """Only some top-level entries of a saved state, e.g. {'params': ...}, nothing else read.

    abstract: {name: pytree of jax.ShapeDtypeStruct} (from `jax.eval_shape`; leaves without a
    sharding land on this process's first device). The other entries of the saved state
    (optimiser states, ...) are neither read nor templated.
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda x: x if getattr(x, 'sharding', None) is not None
        else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
    restored = self._manager.restore(int(step), args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(
            item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True)))
    return dict(restored['state'])

  def restore_meta(self, step: int) -> dict:
    """Only the JSON metadata of a checkpoint (no template needed)."""
    restored = self._manager.restore(int(step), args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))
    return dict(restored['meta'] or {})

  def restore_latest(self, template, check: Callable[[int, dict], None] | None = None,
                     sidecars: Callable[[int], Iterable] = lambda step: ()):
    """(state, meta, step) of the newest checkpoint that reads back whole; (template, {}, None)
    if the folder holds none.

    template: the pytree to restore into, or a function meta -> pytree (when the structure
      depends on what was saved, e.g. the number of tasks).
    check(step, meta): reads the step's sidecar files (e.g. the agent's replay) and raises if they
      are unusable; the checkpoint then counts as damaged too.
    sidecars(step): paths that belong to the step; set aside with it when it is damaged.
    A damaged checkpoint is logged by path with the error and moved into `damaged_dir`; if every
    checkpoint is damaged nothing is moved and NoUsableCheckpointError says how to start fresh.
    """
    failures = []
    for step in reversed(self.all_steps()):
      try:
        state, meta = self.restore(step, template(self.restore_meta(step)) if callable(template)
                                   else template)
        if check is not None:
          check(step, meta)
      except Exception as e:  # noqa: BLE001 -- any failure to read back means damaged
        failures.append((step, e))
        continue
      for bad_step, error in failures:
        self._set_aside(bad_step, error, sidecars(bad_step))
      if failures:
        self._manager.close()
        self._manager = self._make_manager()  # forget the steps that were moved away
      return state, meta, step
    if failures:
      lines = '\n'.join(f'  {self.directory / str(s)}: {_describe(e)}' for s, e in failures)
      raise NoUsableCheckpointError(
          f'no checkpoint in {self.directory} reads back whole:\n{lines}\n'
          f'To start this stage fresh, move the folder aside (e.g. `mv {self.directory} '
          f'{damaged_dir(self.directory)}`) and rerun; nothing was deleted.')
    return template, {}, None

  def _set_aside(self, step: int, error: BaseException, sidecars: Iterable) -> None:
    source = self.directory / str(step)
    target = damaged_dir(self.directory) / f'{step}-{time.strftime("%Y%m%dT%H%M%S")}'
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      source.rename(target)
      for path in sidecars:
        path = epath.Path(path)
        if path.exists():
          path.rename(target.parent / f'{target.name}.{path.name}')
    if jax.process_count() > 1:  # every host reopens the folder after host 0 moved the step
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f'checkpoint_set_aside_{step}')
    logging.warning('damaged checkpoint %s: %s; set aside as %s, using the previous one', source,
                    _describe(error), target)

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
