"""Tests for the block-causal video prior (viper_jax/video/transformer.py) at 'tiny' size."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from viper_jax.video import presets
from viper_jax.video import transformer as tr

V, N = 16, 4  # vocabulary, codes per frame
CONTEXT = presets.prior('tiny').context  # 3


def make_model(**overrides):
  cfg = presets.prior('tiny')
  cfg.num_tasks = 3
  cfg.dtype = 'float32'  # the tolerances below are float32's, also on accelerators
  model = tr.VideoPrior.from_config(cfg, vocab_size=V, tokens_per_frame=N)
  return model.clone(**overrides)


def random_codes(seed, shape):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


def perturb_task_params(params, scale=0.5):
  """Non-zero task modulation, so conditioning actually matters."""
  def perturb(path, x):
    if 'task_' in jax.tree_util.keystr(path):
      return x + scale * jax.random.normal(jax.random.key(len(jax.tree_util.keystr(path))), x.shape)
    return x
  return jax.tree_util.tree_map_with_path(perturb, params)


@functools.lru_cache(maxsize=None)
def model_and_params(num_layers=2):
  """A task-conditioned model whose task modulation is not zero."""
  model = make_model(num_layers=num_layers)
  params = model.init(jax.random.key(0), random_codes(0, (1, 2, N)), jnp.zeros((1,), jnp.int32))
  return model, perturb_task_params(params['params'])


@functools.lru_cache(maxsize=None)
def jitted_apply(model):
  return jax.jit(model.apply)


def forward(model, params, codes, task_ids=None):
  return jitted_apply(model)({'params': params}, codes, task_ids)


def test_input_tokens_and_log_likelihood():
  codes = random_codes(1, (2, 3, N))
  inputs = tr.input_tokens(codes)
  assert inputs.shape == (2, 3 * N)
  np.testing.assert_array_equal(inputs[:, 0], tr.BOS)
  np.testing.assert_array_equal(inputs[:, 1:], codes.reshape(2, -1)[:, :-1])
  logits = jax.random.normal(jax.random.key(2), (2, 3, N, V))
  logp = jax.nn.log_softmax(logits)
  expected = np.take_along_axis(np.asarray(logp), np.asarray(codes)[..., None], -1)[..., 0].sum(-1)
  np.testing.assert_allclose(tr.log_likelihood_per_frame(logits, codes), expected, rtol=1e-6)


def test_causal_per_slot():
  model, params = model_and_params()
  codes = random_codes(3, (1, 6, N))
  tasks = jnp.array([1])
  base = forward(model, params, codes, tasks).reshape(1, 6 * N, V)
  for j in [0, 5, 11, 17, 23]:  # change code j: slots <= j predict codes <= j from codes < j
    flat = codes.reshape(1, -1)
    changed = flat.at[0, j].set((flat[0, j] + 1) % V).reshape(codes.shape)
    out = forward(model, params, changed, tasks).reshape(1, 6 * N, V)
    np.testing.assert_allclose(out[:, :j + 1], base[:, :j + 1], atol=1e-6)
    if j + 1 < 6 * N:
      assert np.abs(out[:, j + 1] - base[:, j + 1]).max() > 1e-4


@pytest.mark.parametrize('num_layers', [1, 2])
def test_window_receptive_field(num_layers):
  """Frame t sees codes back to frame t - layers * (context - 1), plus (through the input shift)
  the last code of the frame before that; nothing older."""
  model, params = model_and_params(num_layers=num_layers)
  t_frames, t = 8, 7
  oldest = t - num_layers * (CONTEXT - 1)  # 5 for one layer, 3 for two
  codes = random_codes(4, (1, t_frames, N))
  base = forward(model, params, codes)[:, t]

  def changed(frame, index):
    new = codes.at[0, frame, index].set((codes[0, frame, index] + 1) % V)
    return np.abs(forward(model, params, new)[:, t] - base).max()

  assert changed(oldest, 0) > 1e-4  # inside the window
  assert changed(oldest - 1, N - 1) > 1e-4  # the shifted-in last code of the frame before
  assert changed(oldest - 1, 0) < 1e-6
  for frame in range(oldest - 1):
    for index in range(N):
      assert changed(frame, index) < 1e-6, (frame, index)


@pytest.mark.parametrize('frames_per_step', [0, 2])
def test_relative_time(frames_per_step):
  """The same codes at later absolute frames give the same logits (RoPE on relative time only)."""
  model, params = model_and_params()
  model = model.clone(attention_frames_per_step=frames_per_step)
  codes = random_codes(5, (2, 7, N))
  tasks = jnp.array([0, 2])
  # Frames >= 2 * (context - 1) + 1 = 5 have their whole receptive field inside `codes`.
  base = forward(model, params, codes, tasks)[:, 5:]
  for prefix in [1, 4, 9]:
    longer = jnp.concatenate([random_codes(prefix, (2, prefix, N)), codes], axis=1)
    out = forward(model, params, longer, tasks)[:, prefix + 5:]
    np.testing.assert_allclose(out, base, atol=1e-5)


@pytest.mark.parametrize('t', [1, 2, 7, 12])
def test_blocked_attention_matches_vectorised(t):
  model, params = model_and_params()
  codes = random_codes(6, (2, t, N))
  tasks = jnp.array([2, 0])
  ref = forward(model.clone(attention_frames_per_step=0), params, codes, tasks)
  for frames_per_step in [1, 2, 5]:
    out = forward(model.clone(attention_frames_per_step=frames_per_step), params, codes, tasks)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_kv_cache_matches_forward():
  """extend() token by token, frame by frame and in uneven chunks (all wrapping the ring buffer:
  T > context) equals the one-pass forward, with task conditioning on."""
  model, params = model_and_params()
  b, t = 2, 7
  codes = random_codes(7, (b, t, N))
  tasks = jnp.array([1, 2])
  full = forward(model, params, codes, tasks).reshape(b, t * N, V)
  inputs = tr.input_tokens(codes)
  extend = jax.jit(lambda cache, tokens: model.apply(
      {'params': params}, cache, tokens, tasks, method=tr.VideoPrior.extend))

  def scan_extend(k):  # K slots per call, as lax.scan (fixed K)
    def body(cache, tokens):
      logits, cache = model.apply({'params': params}, cache, tokens, tasks,
                                  method=tr.VideoPrior.extend)
      return cache, logits
    chunks = inputs.reshape(b, -1, k).transpose(1, 0, 2)
    cache, logits = jax.jit(lambda c, x: jax.lax.scan(body, c, x))(model.init_cache(b), chunks)
    return cache, logits.transpose(1, 0, 2, 3).reshape(b, t * N, V)

  for k in [1, N]:
    cache, logits = scan_extend(k)
    np.testing.assert_allclose(logits, full, atol=1e-5)
    assert int(cache['index']) == t * N
    assert cache['k'].shape == (2, b, CONTEXT * N, 2, 16)  # bounded: context * N slots
    # The ring holds exactly the last context * N slots.
    np.testing.assert_array_equal(np.sort(cache['slots']), np.arange(t * N - CONTEXT * N, t * N))
  # Uneven chunks (crossing frame boundaries) and one chunk longer than the buffer.
  for sizes in [(5, 5, 5, 13)]:
    cache, outs, start = model.init_cache(b), [], 0
    for size in sizes:
      logits, cache = extend(cache, inputs[:, start:start + size])
      outs.append(logits)
      start += size
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-5)


def test_batch_independence():
  model, params = model_and_params()
  codes = random_codes(8, (3, 5, N))
  tasks = jnp.array([0, 1, 2])
  base = forward(model, params, codes, tasks)
  other = codes.at[1:].set(random_codes(9, (2, 5, N)))
  np.testing.assert_allclose(forward(model, params, other, jnp.array([0, 2, 1]))[0], base[0],
                             atol=1e-6)
  np.testing.assert_allclose(forward(model, params, codes[:1], tasks[:1])[0], base[0], atol=1e-5)


def test_task_conditioning():
  model = make_model()
  codes = random_codes(10, (2, 4, N))
  tasks = jnp.array([0, 2])
  params = model.init(jax.random.key(1), codes, tasks)['params']
  # Zero-initialised modulation: conditioned == unconditioned path == an unconditioned model.
  def strip(tree):  # the same params without the task modulation
    return {k: strip(v) if isinstance(v, dict) else v for k, v in tree.items()
            if not k.startswith('task_')}
  conditioned = forward(model, params, codes, tasks)
  np.testing.assert_allclose(conditioned, forward(model, params, codes), atol=1e-6)
  plain = make_model(task_conditioning=False)
  np.testing.assert_allclose(conditioned, forward(plain, strip(params), codes), atol=1e-6)
  # Trained (perturbed) modulation: the task id changes the logits.
  params = perturb_task_params(params)
  a = forward(model, params, codes, tasks)
  b = forward(model, params, codes, jnp.array([1, 2]))
  assert np.abs(a[0] - b[0]).max() > 1e-3
  np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_dropout_only_in_training():
  model = make_model(dropout=0.5)
  codes = random_codes(11, (2, 3, N))
  params = model.init(jax.random.key(0), codes)['params']
  eval_a = model.apply({'params': params}, codes)
  eval_b = model.apply({'params': params}, codes, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  train = model.apply({'params': params}, codes, train=True, rngs={'dropout': jax.random.key(1)})
  assert np.abs(train - eval_a).max() > 1e-3


def test_overfits_tiny_batch():
  model = make_model()
  codes = random_codes(12, (2, 4, N))
  tasks = jnp.array([0, 1])
  params = model.init(jax.random.key(0), codes, tasks)['params']
  opt = optax.adam(3e-3)

  def loss_fn(params):
    logits = model.apply({'params': params}, codes, tasks)
    return -tr.log_likelihood_per_frame(logits, codes).mean() / N

  @jax.jit
  def train(params):
    def step(carry, _):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt_state = opt.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=300)
    return params, losses

  params, losses = train(params)
  final = float(loss_fn(params))
  assert final < float(losses[0]) / 5, (float(losses[0]), final)


def test_sample():
  model, params = model_and_params()
  tasks = jnp.array([0, 2])
  key = jax.random.key(3)
  codes = tr.sample(params, model, key, tasks, num_frames=5)
  assert codes.shape == (2, 5, N) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < V
  np.testing.assert_array_equal(codes, tr.sample(params, model, key, tasks, num_frames=5))
  assert np.any(codes != tr.sample(params, model, jax.random.key(4), tasks, num_frames=5))
  # Temperature 0 is greedy: every code is the argmax of the one-pass logits given the previous.
  prompt = random_codes(13, (2, 2, N))
  greedy = tr.sample(params, model, key, tasks, num_frames=5, prompt_codes=prompt, temperature=0.0)
  np.testing.assert_array_equal(greedy[:, :2], prompt)
  logits = forward(model, params, greedy, tasks)
  np.testing.assert_array_equal(greedy[:, 2:], jnp.argmax(logits[:, 2:], -1))
  # ... and the limit of low temperatures.
  cold = tr.sample(params, model, key, tasks, num_frames=5, prompt_codes=prompt, temperature=1e-4)
  np.testing.assert_array_equal(cold, greedy)
  # An unconditioned model takes the batch size explicitly.
  plain = make_model(task_conditioning=False)
  plain_params = plain.init(jax.random.key(0), prompt)
  codes = tr.sample(plain_params, plain, key, None, num_frames=2, batch_size=3)
  assert codes.shape == (3, 2, N)


def test_from_config_validates():
  cfg = presets.prior('tiny')
  cfg.num_heads = 3
  with pytest.raises(ValueError, match='heads'):
    tr.VideoPrior.from_config(cfg, V, N)
  model = make_model()
  with pytest.raises(ValueError, match='codes per frame'):
    model.init(jax.random.key(0), random_codes(0, (1, 2, N + 1)))
