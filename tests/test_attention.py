"""Every attention implementation that runs on CPU gives the reference path's numbers
(viper_jax/video/attention.py): forward logits of the AR and MaskGIT priors, and streaming with
the KV cache. 'cudnn' needs a GPU; 'splash' runs in Pallas interpret mode here."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from viper_jax.video import attention, maskgit, presets
from viper_jax.video import transformer as tr

V, N = 16, 4
CPU_PATHS = ('xla', 'splash')


def _cfg(**overrides):
  cfg = presets.prior('tiny')
  cfg.num_tasks = 2
  cfg.dtype = 'float32'
  cfg.update(overrides)
  return cfg


@functools.lru_cache(maxsize=None)
def _prior(kind='ar', attention_impl='reference'):
  module = maskgit.MaskGITPrior if kind == 'maskgit' else tr.VideoPrior
  model = module.from_config(_cfg(attention=attention_impl), vocab_size=V, tokens_per_frame=N)
  codes = jnp.zeros((1, 2, N), jnp.int32)
  params = model.init(jax.random.key(0), codes, jnp.zeros((1,), jnp.int32))['params']
  return model, params


def _codes(seed, shape):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


def test_auto_picks_by_platform():
  assert jax.default_backend() == 'cpu'
  assert attention.resolve('auto', jnp.float32) == 'reference'
  assert _prior(attention_impl='auto')[0].attention == 'reference'
  with pytest.raises(ValueError, match='prior.attention'):
    attention.resolve('flash', jnp.float32)


@pytest.mark.parametrize('impl', CPU_PATHS)
@pytest.mark.parametrize('t', [1, 2, 7])
def test_ar_forward_equals_reference(impl, t):
  ref_model, params = _prior()
  codes, tasks = _codes(t, (2, t, N)), jnp.array([1, 0])
  ref = jax.jit(ref_model.apply)({'params': params}, codes, tasks)
  for frames_per_block in ([None, 1, 3] if impl == 'xla' else [None]):
    model = ref_model.clone(attention=impl, attention_frames_per_step=frames_per_block)
    out = jax.jit(model.apply)({'params': params}, codes, tasks)
    np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=f'{impl} c={frames_per_block}')


@pytest.mark.parametrize('impl', CPU_PATHS)
def test_maskgit_forward_equals_reference(impl):
  ref_model, params = _prior('maskgit')
  codes, tasks = _codes(3, (2, 6, N)), jnp.array([0, 1])
  mask = jax.random.bernoulli(jax.random.key(4), 0.5, codes.shape)
  model = ref_model.clone(attention=impl)
  for m in (None, mask):
    ref = jax.jit(ref_model.apply)({'params': params}, codes, tasks, mask=m)
    out = jax.jit(model.apply)({'params': params}, codes, tasks, mask=m)
    np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize('impl', CPU_PATHS)
def test_streaming_equals_reference_one_pass(impl):
  """A frame at a time through the KV cache (past the ring buffer's length) with `impl` equals the
  reference one-pass forward."""
  ref_model, params = _prior()
  b, t = 2, 7
  codes, tasks = _codes(9, (b, t, N)), jnp.array([0, 1])
  full = jax.jit(ref_model.apply)({'params': params}, codes, tasks).reshape(b, t * N, V)
  model = ref_model.clone(attention=impl)

  def body(cache, tokens):
    logits, cache = model.apply({'params': params}, cache, tokens, tasks,
                                method=tr.VideoPrior.extend)
    return cache, logits
  chunks = tr.input_tokens(codes).reshape(b, t, N).transpose(1, 0, 2)
  _, logits = jax.jit(lambda c, x: jax.lax.scan(body, c, x))(model.init_cache(b), chunks)
  np.testing.assert_allclose(logits.transpose(1, 0, 2, 3).reshape(b, t * N, V), full, atol=1e-5)


def test_fused_gradients_equal_reference():
  """Training goes through the fused kernels too: the loss gradients agree."""
  ref_model, params = _prior()
  codes, tasks = _codes(5, (2, 5, N)), jnp.array([1, 1])

  def grads(model):
    def loss(p):
      logits = model.apply({'params': p}, codes, tasks)
      return tr.log_likelihood_per_frame(logits, codes).sum()
    return jax.jit(jax.grad(loss))(params)
  ref = grads(ref_model)
  for impl in CPU_PATHS:
    out = grads(ref_model.clone(attention=impl))
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)
