"""The training loop shared by the tokenizer and the prior: resume, log, checkpoint, stop on NaN.

A stage provides a jitted `step_fn(state, batch, key) -> (state, metrics)` and `batch_fn(step)`
(this host's numpy batch for a step; a pure function of the step, see data/loaders.py). The loop
restores the newest checkpoint, runs to `steps`, logs every `log_every`, calls hooks (evaluation,
images, samples) and checkpoints every `checkpoint_every` and at the end. The step's RNG key is
fold_in(seed key, step), so a resumed run reproduces an uninterrupted one exactly.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import jax
import numpy as np
import tqdm
from etils import epath

from viper_jax import checkpoint, metrics as metrics_lib, parallel
from viper_jax.errors import NonFiniteLossError


# Metrics shown on the progress bar when a step reports them (all go to metrics.jsonl/TensorBoard).
_PROGRESS_KEYS = ('loss', 'psnr', 'usage', 'bits_per_token', 'steps_per_second')


def train_loop(*, name: str, workdir, state, step_fn: Callable, batch_fn: Callable[[int], dict],
               steps: int, seed: int, log_every: int, checkpoint_every: int,
               keep_checkpoints: int, mesh, hooks: Sequence[tuple[int, Callable]] = (),
               meta: dict | None = None, stop_after: int | None = None):
  """Runs (or resumes) training to `steps`; returns the final state.

  hooks: (every, fn(state, step) -> dict of scalars or None); run at multiples of `every` and at
    the end, their scalars are logged.
  stop_after: stop after this many steps of this call (tests use it to simulate a kill).
  """
  workdir = epath.Path(workdir)
  checkpointer = checkpoint.Checkpointer(workdir / 'checkpoints', keep_checkpoints)
  state, _, start = checkpointer.restore_latest(state)
  start = start or 0
  if start >= steps:
    checkpointer.close()
    return state
  writer = metrics_lib.MetricWriter(workdir, resume_step=start)
  key = jax.random.key(seed)
  last_saved = start
  window_start, window_steps = time.time(), 0
  with tqdm.tqdm(total=steps, initial=start, desc=name, unit='step', dynamic_ncols=True,
                 disable=jax.process_index() != 0) as bar:
    for step in range(start, steps):
      batch = parallel.put_batch(batch_fn(step), mesh)
      state, step_metrics = step_fn(state, batch, jax.random.fold_in(key, step))
      done, window_steps = step + 1, window_steps + 1
      bar.update(1)
      if done % log_every == 0 or done == steps:
        values = {k: float(np.asarray(v)) for k, v in jax.device_get(step_metrics).items()}
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
          writer.close()
          checkpointer.close()
          raise NonFiniteLossError(
              f'{name}: non-finite {bad} at step {done}; stopped without saving. The last good '
              f'checkpoint is step {last_saved} in {workdir / "checkpoints"}. Lower the learning '
              'rate or check the data.')
        values['steps_per_second'] = window_steps / max(time.time() - window_start, 1e-9)
        window_start, window_steps = time.time(), 0
        writer.write(done, values)
        shown = [k for k in _PROGRESS_KEYS if k in values] or list(values)[:4]
        bar.set_postfix({k: f'{values[k]:.3g}' for k in shown})
      for every, hook in hooks:
        if done % every == 0 or done == steps:
          extra = hook(state, done)
          if extra:
            writer.write(done, extra)
      if done % checkpoint_every == 0 or done == steps:
        checkpointer.save(done, state, meta)
        last_saved = done
      if stop_after is not None and done - start >= stop_after:
        break
  writer.close()
  checkpointer.close()
  return state


def warmup_schedule(learning_rate: float, warmup_steps: int, decay: str = 'constant',
                    steps: int = 0):
  """Linear warm-up from learning_rate / warmup_steps to learning_rate, then constant
  (decay='constant') or a cosine down to a tenth of it at `steps` (decay='cosine').

  (Starting at a non-zero rate means step 0 already trains, which the resume tests rely on.)
  Why cosine: briefly trained tokenizers at a constant rate got worse after their best step (the
  gradient norm grew 3-10x while codes spread out; README, 'Reward quality across tasks').
  """
  import optax
  from viper_jax.validation import LR_DECAYS
  if decay not in LR_DECAYS:
    raise ValueError(f"train.decay must be {' or '.join(map(repr, LR_DECAYS))}, got {decay!r}")
  warmup_steps = max(int(warmup_steps), 1)
  start = learning_rate / warmup_steps
  if decay == 'constant':
    if warmup_steps == 1:
      return optax.constant_schedule(learning_rate)
    return optax.linear_schedule(start, learning_rate, warmup_steps - 1)
  return optax.warmup_cosine_decay_schedule(
      start, learning_rate, warmup_steps - 1, max(int(steps), warmup_steps), learning_rate / 10)


def make_optimizer(train_cfg, learning_rate: float | None = None):
  """Clip by global norm, then AdamW (b1 0.9, b2 0.99) with the warm-up schedule above, over the
  parameters flattened into one vector.

  train_cfg: a stage's `train` section (grad_clip, warmup_steps, weight_decay, learning_rate,
    steps, decay);
  learning_rate overrides train_cfg.learning_rate (the tokenizer's discriminator has its own).
  """
  import optax
  rate = train_cfg.learning_rate if learning_rate is None else learning_rate
  # Flattened: the update runs on one vector of all parameters (its state is flat too). Per leaf,
  # Adam, clipping and decay are ~25 ops for each of a VQGAN's ~150 arrays, half of its train
  # step's program; flat, the tiny tokenizer's step traces, lowers and compiles in 10.4 s instead
  # of 15.5 s on CPU, with the same loss. The price is one concatenate and split per step.
  return optax.flatten(optax.chain(
      optax.clip_by_global_norm(train_cfg.grad_clip),
      optax.adamw(warmup_schedule(rate, train_cfg.warmup_steps, train_cfg.decay, train_cfg.steps),
                  b1=0.9, b2=0.99,
                  weight_decay=train_cfg.weight_decay)))
