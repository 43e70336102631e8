"""Orbax checkpoints: atomic saves of a train state pytree plus JSON metadata; resume from latest.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact; `restore_latest` ignores unfinished saves.
Works on local paths and gs:// (every host takes part in a multi-host save).
"""
from __future__ import annotations

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves {'state': pytree, 'meta': json dict} every call to `save`; keeps the newest N."""

  def __init__(self, directory, max_to_keep: int = 2):
    self.directory = epath.Path(directory)
    self._manager = ocp.CheckpointManager(
        self.directory.resolve() if not str(directory).startswith('gs://') else self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state, meta: dict | None = None, wait: bool = True) -> None:
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

  def restore_latest(self, template):
    """(state, meta, step) of the newest finished checkpoint, or (template, {}, None) if none."""
    step = self.latest_step()
    if step is None:
      return template, {}, None
    state, meta = self.restore(step, template)
    return state, meta, step

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()
