"""Seconds to trace, lower and compile each video train step: the optimiser over one flat vector
(`optax.flatten`, the default of video/training.make_optimizer) vs per parameter array.

Prints one JSON line: per step (quickstart tokenizer and prior) the trace, lower and
compile seconds of both, their ratio, milliseconds per step once compiled (mean of 3), and the
largest loss difference over 3 steps. Run it with nothing cached (no JAX_COMPILATION_CACHE_DIR).
"""
import json
import time
from unittest import mock

import jax
import numpy as np
import optax

from viper_jax import configs
from viper_jax.video import priors, train_prior, train_tokenizer


def _tokenizer(config):
  cfg = config.tokenizer
  state = train_tokenizer.init_state(cfg, jax.random.key(0), tuple(config.env.size))
  frames = np.random.default_rng(0).integers(0, 255, (cfg.train.batch_size, *config.env.size, 3),
                                             dtype=np.uint8)
  return train_tokenizer.make_train_step(cfg), state, frames


def _prior(config):
  prior, tcfg = priors.build_prior(config, 1), config.prior.train
  state = train_prior.init_state(prior, tcfg, jax.random.key(0), tcfg.window)
  codes = np.random.default_rng(0).integers(
      0, config.tokenizer.codebook_size, (tcfg.batch_size, tcfg.window, prior.tokens_per_frame))
  batch = {'codes': codes.astype(np.int32), 'task_id': np.zeros(tcfg.batch_size, np.int32)}
  return train_prior.make_train_step(prior, tcfg), state, batch


def _measure(build, config):
  step, state, batch = build(config)
  marks = [time.time()]
  traced = jax.jit(step).trace(state, batch, jax.random.key(0))
  marks.append(time.time())
  lowered = traced.lower()
  marks.append(time.time())
  compiled = lowered.compile()
  marks.append(time.time())
  times = {name: later - earlier for name, earlier, later
           in zip(('trace_s', 'lower_s', 'compile_s'), marks, marks[1:])}
  losses = []
  for i in range(3):
    state, metrics = compiled(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
  start = time.time()
  for i in range(3):
    state, _ = compiled(state, batch, jax.random.key(3 + i))
  jax.block_until_ready(state)
  times['step_ms'] = (time.time() - start) / 3 * 1000
  return {k: round(v, 2) for k, v in times.items()}, losses


def main():
  video = configs.load_config('experiments/quickstart.py:dmc:cartpole-swingup')
  result = {'backend': jax.default_backend()}
  for name, build in (('tokenizer', _tokenizer), ('prior', _prior)):
    flat, flat_losses = _measure(build, video)
    with mock.patch.object(optax, 'flatten', lambda tx: tx):  # the per-array optimiser
      per_array, losses = _measure(build, video)
    total = lambda t: t['trace_s'] + t['lower_s'] + t['compile_s']  # noqa: E731
    result[name] = {'flat': flat, 'per_array': per_array,
                    'speedup': round(total(per_array) / total(flat), 2),
                    'max_loss_diff': max(abs(a - b) for a, b in zip(flat_losses, losses))}
  print(json.dumps(result))


if __name__ == '__main__':
  main()
