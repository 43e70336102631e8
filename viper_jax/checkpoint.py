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
