"""Train-step speed and model FLOP utilisation of the tokenizer and the prior at `dmc` size.

  python benchmarks/video_train.py [--tokenizer_batch=16] [--prior_batch=8] [--repeats=3]

Prints one JSON line. FLOPs per step: for the tokenizer, XLA's cost analysis of the compiled
train step (forward + backward + optimiser); for the prior, an analytic count of the needed work
(see prior_train_flops; XLA undercounts its loop-based CPU attention). Utilisation = achieved FLOP/s / the matmul peak measured in the
same run, in the dtype the model computes in (float32 on CPU, bfloat16 on accelerators).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import common  # noqa: E402

_SIZE = flags.DEFINE_string('size', 'dmc', 'Preset size of tokenizer and prior.')
_TOK_BATCH = flags.DEFINE_integer('tokenizer_batch', None, 'Frames per step (default: CPU 16, '
                                  'accelerator: the preset batch).')
_PRIOR_BATCH = flags.DEFINE_integer('prior_batch', None, 'Windows per step (default: CPU 8, '
                                    'accelerator: the preset batch).')
_REPEATS = flags.DEFINE_integer('repeats', None, 'Timed steps (default: CPU 3, accelerator 20).')
_PARTS = flags.DEFINE_list('parts', ['tokenizer', 'prior'], 'What to time: tokenizer, prior.')
_ATTENTION = flags.DEFINE_string('prior_attention', 'auto', 'prior.attention (video/attention.py).')


def bench_tokenizer(size, batch, repeats, peak):
  from viper_jax.video import presets, train_tokenizer
  cfg = presets.tokenizer(size)
  cfg.gan_start_step = 0  # time the full step, discriminator included
  state = train_tokenizer.init_state(cfg, jax.random.key(0, impl='rbg'), (64, 64))
  frames = jnp.asarray(np.random.default_rng(0).integers(0, 255, (batch, 64, 64, 3), np.uint8))
  step = jax.jit(train_tokenizer.make_train_step(cfg))
  key = jax.random.key(1)
  flops = common.compiled_flops(step, state, frames, key)
  seconds = common.time_calls(lambda s: step(s, frames, key)[1], state, repeats=repeats)
  return {'batch': batch, 'steps_per_s': 1 / seconds, 'frames_per_s': batch / seconds,
          'gflops_per_step': flops / 1e9, 'utilisation': flops / seconds / peak,
          'dtype': str(jnp.dtype(presets.compute_dtype(cfg.dtype)))}


def prior_train_flops(prior, batch: int, window: int) -> float:
  """Analytic FLOPs of one prior train step (2 per multiply-add; backward = 2x forward).

  Counts the projections, MLP and output head for every token, and QK^T + PV over exactly the
  keys a query may see (causal inside the frame, `context` frames back): the work the model needs,
  not what an implementation happens to execute. XLA's cost analysis undercounts loops
  (lax.map / while bodies count once), so it is not used for the prior.
  """
  d, n, v, c = prior.width, prior.tokens_per_frame, prior.vocab_size, prior.context
  per_token = prior.num_layers * (4 * d * d + 2 * d * prior.mlp_dim) + d * v
  keys = sum(min(t, c - 1) * n + i + 1 for t in range(window) for i in range(n))
  forward = 2 * batch * (window * n * per_token + prior.num_layers * 2 * d * keys)
  return 3.0 * forward


def bench_prior(size, batch, repeats, peak):
  import ml_collections
  from viper_jax.video import presets, priors, train_prior
  config = ml_collections.ConfigDict({'tokenizer': presets.tokenizer(size),
                                      'prior': presets.prior(size), 'env': {'size': (64, 64)}})
  config.prior.attention = _ATTENTION.value
  prior = priors.build_prior(config, num_tasks=16)
  tcfg = config.prior.train
  window = tcfg.window
  state = train_prior.init_state(prior, tcfg, jax.random.key(0, impl='rbg'), window)
  rng = np.random.default_rng(0)
  batch_data = {'codes': jnp.asarray(rng.integers(0, prior.vocab_size,
                                                  (batch, window, prior.tokens_per_frame)),
                                     jnp.int32),
                'task_id': jnp.asarray(rng.integers(0, 16, batch), jnp.int32)}
  step = jax.jit(train_prior.make_train_step(prior, tcfg))
  key = jax.random.key(1)
  flops = prior_train_flops(prior, batch, window)
  seconds = common.time_calls(lambda s: step(s, batch_data, key)[1], state, repeats=repeats)
  tokens = batch * window * prior.tokens_per_frame
  return {'batch': batch, 'window': window, 'steps_per_s': 1 / seconds,
          'tokens_per_s': tokens / seconds, 'gflops_per_step_analytic': flops / 1e9,
          'utilisation': flops / seconds / peak, 'dtype': str(jnp.dtype(prior.dtype)),
          'attention': prior.attention}


def main(_):
  from viper_jax.video import presets
  on_cpu = jax.default_backend() == 'cpu'
  repeats = _REPEATS.value or (3 if on_cpu else 20)
  dtype = presets.compute_dtype('auto')
  peak = common.matmul_peak_flops(dtype)
  tok_batch = _TOK_BATCH.value or (16 if on_cpu else presets.tokenizer(_SIZE.value).train.batch_size)
  prior_batch = _PRIOR_BATCH.value or (8 if on_cpu else presets.prior(_SIZE.value).train.batch_size)
  report = {'benchmark': 'video_train', 'device': common.device_description(), 'size': _SIZE.value,
            'matmul_peak_gflops': peak / 1e9, 'matmul_dtype': str(jnp.dtype(dtype)),
            **({'tokenizer': bench_tokenizer(_SIZE.value, tok_batch, repeats, peak)}
               if 'tokenizer' in _PARTS.value else {}),
            **({'prior': bench_prior(_SIZE.value, prior_batch, repeats, peak)}
               if 'prior' in _PARTS.value else {})}
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
