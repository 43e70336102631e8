"""oneshot.run: a program compiled for one run gives the jitted program's numbers.
(benchmarks/init_compile.py measures the compile time it saves, and compares the tokenizer's and
the agent's weights too.)"""
import jax
import jax.numpy as jnp
import numpy as np

from viper_jax import oneshot
from viper_jax.video import presets, priors


def test_prior_init_equals_the_jitted_init(tiny_config):
  with tiny_config.unlocked():
    tiny_config.tokenizer = presets.tokenizer('tiny')
    tiny_config.prior = presets.prior('tiny')
  prior = priors.build_prior(tiny_config, 2)
  key = jax.random.key(3)
  got, want = priors.init_params(prior, key), jax.jit(priors.init_fn(prior, 2))(key)
  leaves_got, leaves_want = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(leaves_got) == len(leaves_want) > 0
  for x, y in zip(leaves_got, leaves_want):
    assert x.shape == y.shape and x.dtype == y.dtype
    # Without backend optimisation only the last bits of a float may differ (no fused multiply-add).
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
  assert jax.tree.structure(priors.abstract_params(prior)) == jax.tree.structure(got)


def test_keys_and_integer_leaves_pass_through():
  fn = lambda key: {'w': jax.random.normal(key, (4, 3)), 'n': jnp.arange(3)}  # noqa: E731
  a, b = oneshot.run(fn, jax.random.key(0)), oneshot.run(fn, jax.random.key(1))
  assert not np.allclose(a['w'], b['w'])
  np.testing.assert_array_equal(a['n'], np.arange(3))
  np.testing.assert_allclose(a['w'], jax.random.normal(jax.random.key(0), (4, 3)), rtol=1e-6)
