"""The trained tokenizer and prior of a workdir, read back as params only (no train state).

The train stages save whole train states (tokenizer: params, codebook statistics, two optimiser
states, the discriminator; prior: params, EMA params, optimiser state). Reading weights for
scoring needs a small part of that: the templates here come from `jax.eval_shape` of the models'
init (no weights computed) and only the needed subtrees are read from disk
(`Checkpointer.restore_subtrees`). Train states of every version of the stages load, since they
keep the params under the same names.
"""
from __future__ import annotations

import json

import jax
import ml_collections
from etils import epath

from viper_jax import checkpoint
from viper_jax.video import presets, priors, vqgan


def saved_config(stage_dir) -> ml_collections.ConfigDict | None:
  """The experiment config a stage saved beside its checkpoints (`<stage_dir>/config.json`).

  Fields added to the model sections since it was saved get the value that reproduces the
  behaviour of that time (`_SAVED_DEFAULTS`), so the rest of the code reads every field as
  declared in the sections, with no per-use defaults.
  """
  path = epath.Path(stage_dir) / 'config.json'
  if not path.exists():
    return None
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  for name, defaults in _SAVED_DEFAULTS().items():
    if name in config:
      _fill_missing(config[name], defaults)
  return config


def _SAVED_DEFAULTS() -> dict:  # noqa: N802 (a table, built when needed)
  # The 'tiny' presets: every field they add has its old behaviour there (no foreground
  # weighting, the AR prior, conditional likelihood); existing fields are never touched.
  return {'tokenizer': presets.tokenizer('tiny'), 'prior': presets.prior('tiny'),
          'reward': presets.reward()}


def _fill_missing(section: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict):
  with section.unlocked():
    for key, value in defaults.items():
      if key not in section:
        section[key] = value
      elif isinstance(value, ml_collections.ConfigDict) and isinstance(
          section[key], ml_collections.ConfigDict):
        _fill_missing(section[key], value)


def _restore_newest(directory, what: str, abstract_fn) -> tuple[dict, int, dict]:
  """(subtrees, step, meta) of the newest checkpoint in `directory` that reads back; damaged
  newer ones are set aside as `Checkpointer.restore_latest` does. abstract_fn(meta) -> the
  {name: ShapeDtypeStruct tree} to read."""
  checkpointer = checkpoint.Checkpointer(directory)
  failures = []
  try:
    for step in reversed(checkpointer.all_steps()):
      try:
        meta = checkpointer.restore_meta(step)
        tree = checkpointer.restore_subtrees(step, abstract_fn(meta))
      except Exception as e:  # noqa: BLE001 -- any failure to read back means damaged
        failures.append((step, e))
        continue
      for bad_step, error in failures:
        checkpointer._set_aside(bad_step, error, ())  # noqa: SLF001
      return tree, step, meta
  finally:
    checkpointer.close()
  if failures:
    raise checkpoint.NoUsableCheckpointError(
        f'no checkpoint in {directory} reads back whole: '
        + '; '.join(f'{directory / str(s)}: {e}' for s, e in failures))
  raise FileNotFoundError(f'no {what} checkpoint in {directory}: run `viper train-{what}` first')


def tokenizer(workdir, cfg=None) -> tuple[ml_collections.ConfigDict, dict, int]:
  """(cfg, variables {'params', 'vq_stats'}, step) of the newest checkpoint in
  `<workdir>/tokenizer`; cfg defaults to the tokenizer section saved there."""
  out = epath.Path(workdir) / 'tokenizer'
  saved = saved_config(out)
  if cfg is None:
    if saved is None:
      raise FileNotFoundError(f'no tokenizer in {out}: run `viper train-tokenizer` first')
    cfg = saved.tokenizer
  image_size = tuple(saved.env.size) if saved is not None else (64, 64)
  abstract = jax.eval_shape(vqgan.init_fn(cfg, image_size), jax.random.key(0))
  variables, step, _ = _restore_newest(out / 'checkpoints', 'tokenizer',
                                       lambda meta: dict(abstract))
  return cfg, variables, step


def prior(workdir, config) -> tuple[dict, int, dict]:
  """(params, step, meta) of the newest checkpoint in `<workdir>/prior`: the EMA params when the
  prior trained with EMA (config.prior.train.ema_decay > 0), else the raw ones.

  config: the experiment config it was trained with. When the checkpoint's metadata lists the
  tasks it was trained on, config.data.tasks is set to them (task ids are positions in it).
  """
  name = 'ema_params' if config.prior.train.ema_decay > 0 else 'params'

  def abstract(meta):
    tasks = meta.get('tasks')
    names = list(config.data.tasks) if config.data.tasks else [config.task]
    if tasks and list(tasks) != names:
      with config.unlocked():
        config.data.tasks = tuple(tasks)  # the store's tasks at training time, in id order
      names = list(tasks)
    return {name: priors.abstract_params(priors.build_prior(config, len(names)))}

  tree, step, meta = _restore_newest(epath.Path(workdir) / 'prior' / 'checkpoints', 'prior',
                                     abstract)
  return tree[name], step, meta
