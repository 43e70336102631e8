"""The MaskGIT prior (viper_jax/video/maskgit.py): attention pattern properties, training loss,
sampling, training stage end to end, and scoring through the reward library."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import synthetic_episode
from viper_jax import configs, reward
from viper_jax.video import maskgit, presets, priors, train_prior, train_tokenizer

V, N = 16, 4  # vocabulary, codes per frame
CONTEXT = presets.prior('tiny').context  # 3
ATOL = 2e-4  # reward library tolerance (float32, reordered sums)


def make_model(**overrides):
  cfg = presets.prior('tiny')
  cfg.kind = 'maskgit'
  cfg.num_tasks = 3
  cfg.dtype = 'float32'
  return maskgit.MaskGITPrior.from_config(cfg, vocab_size=V, tokens_per_frame=N).clone(**overrides)


def random_codes(seed, shape):
  return jax.random.randint(jax.random.key(seed), shape, 0, V)


@functools.lru_cache(maxsize=None)
def model_and_params(num_layers=2):
  """A task-conditioned model whose (zero-initialised) task modulation is perturbed."""
  model = make_model(num_layers=num_layers)
  params = model.init(jax.random.key(0), random_codes(0, (1, 2, N)), jnp.zeros((1,), jnp.int32))

  def perturb(path, x):
    if 'task_' in jax.tree_util.keystr(path):
      return x + 0.5 * jax.random.normal(jax.random.key(len(jax.tree_util.keystr(path))), x.shape)
    return x
  return model, jax.tree_util.tree_map_with_path(perturb, params['params'])


@functools.lru_cache(maxsize=None)
def jitted_apply(model):
  return jax.jit(model.apply)


def forward(model, params, codes, task_ids=None, mask=None):
  return np.asarray(jitted_apply(model)({'params': params}, codes, task_ids, mask=mask))


@pytest.mark.parametrize('t', [1, 2, 5])
def test_two_stream_attention_matches_a_dense_mask(t):
  """The per-frame window attention equals attention over all 2 * T * N tokens under the mask of
  the module docstring, with RoPE on absolute frame indices."""
  from viper_jax.video.transformer import rope
  h, d = 2, 8
  q, k, v = jax.random.normal(jax.random.key(t), (3, 1, t, 2 * N, h, d))
  out = maskgit._two_stream_attention(q, k, v, CONTEXT, 10_000.0)
  frame = np.repeat(np.arange(t), 2 * N)  # token i of the flattened [T, 2N]
  query = np.tile(np.arange(2 * N) >= N, t)
  df = frame[:, None] - frame[None]  # query frame - key frame
  window = (df >= 0) & (df < CONTEXT)
  mask = np.where(query[:, None], np.where(query[None], df == 0, window & (df > 0)),
                  ~query[None] & window)
  flat = lambda x: x.reshape(t * 2 * N, h, d).transpose(1, 0, 2)  # [H, L, d]
  qr, kr = rope(flat(q), frame, 10_000.0), rope(flat(k), frame, 10_000.0)
  scores = jnp.where(mask, jnp.einsum('hqd,hkd->hqk', qr, kr) / np.sqrt(d), -np.inf)
  ref = jnp.einsum('hqk,hkd->hqd', jax.nn.softmax(scores, -1), flat(v))
  np.testing.assert_allclose(np.asarray(out).reshape(t * 2 * N, h, d).transpose(1, 0, 2), ref,
                             atol=1e-5)


def test_scoring_is_causal_and_blind_to_the_scored_frame():
  """mask=None: logits of frame t depend on frames < t only (not on t itself, nor later)."""
  model, params = model_and_params()
  codes = random_codes(1, (1, 6, N))
  tasks = jnp.array([1])
  base = forward(model, params, codes, tasks)
  assert base.shape == (1, 6, N, V) and base.dtype == np.float32
  for j in [0, 2, 5]:
    changed = codes.at[:, j].set((codes[:, j] + 1) % V)
    out = forward(model, params, changed, tasks)
    np.testing.assert_allclose(out[:, :j + 1], base[:, :j + 1], atol=1e-6)
    if j + 1 < 6:
      assert np.abs(out[:, j + 1] - base[:, j + 1]).max() > 1e-4


def test_training_mask_shows_only_the_unmasked_codes_of_the_frame():
  model, params = model_and_params()
  codes = random_codes(2, (1, 4, N))
  mask = jnp.array([[True, False, True, False]] * 4)[None]  # codes 1 and 3 of each frame given
  base = forward(model, params, codes, None, mask)
  t = 2
  hidden = codes.at[0, t, 0].set((codes[0, t, 0] + 1) % V)  # a masked code of frame t
  out = forward(model, params, hidden, None, mask)
  np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6)
  assert np.abs(out[:, t + 1] - base[:, t + 1]).max() > 1e-4  # clean copy: context for t + 1
  given = codes.at[0, t, 1].set((codes[0, t, 1] + 1) % V)  # a given code of frame t
  out = forward(model, params, given, None, mask)
  np.testing.assert_allclose(out[:, :t], base[:, :t], atol=1e-6)
  assert np.abs(out[:, t] - base[:, t]).max() > 1e-4
  # A fully masked frame scores like mask=None.
  np.testing.assert_allclose(forward(model, params, codes, None, jnp.ones_like(mask)),
                             forward(model, params, codes), atol=1e-6)


@pytest.mark.parametrize('num_layers', [1, 2])
def test_receptive_field(num_layers):
  """Frame t sees frames back to t - layers * (context - 1), nothing older; the reward library's
  chunk warm-up (`receptive_field`) covers it."""
  model, params = model_and_params(num_layers=num_layers)
  t = 7
  oldest = t - num_layers * (CONTEXT - 1)
  assert t - oldest <= reward.receptive_field(model)
  codes = random_codes(3, (1, 8, N))
  base = forward(model, params, codes)[:, t]

  def changed(frame):
    new = codes.at[0, frame].set((codes[0, frame] + 1) % V)
    return np.abs(forward(model, params, new)[:, t] - base).max()

  assert changed(oldest) > 1e-4 and changed(t - 1) > 1e-4
  for frame in range(oldest):
    assert changed(frame) < 1e-6, frame


def test_relative_time():
  """The same codes at later absolute frames give the same logits (RoPE on frame offsets)."""
  model, params = model_and_params()
  codes = random_codes(4, (2, 7, N))
  tasks = jnp.array([0, 2])
  base = forward(model, params, codes, tasks)[:, 4:]  # frames >= 2 * (3 - 1): whole field inside
  for prefix in [1, 5]:
    longer = jnp.concatenate([random_codes(prefix, (2, prefix, N)), codes], axis=1)
    np.testing.assert_allclose(forward(model, params, longer, tasks)[:, prefix + 4:], base,
                               atol=1e-5)


def test_batch_independence_and_task_conditioning():
  model, params = model_and_params()
  codes = random_codes(5, (3, 4, N))
  tasks = jnp.array([0, 1, 2])
  base = forward(model, params, codes, tasks)
  other = codes.at[1:].set(random_codes(6, (2, 4, N)))
  np.testing.assert_allclose(forward(model, params, other, jnp.array([0, 2, 1]))[0], base[0],
                             atol=1e-6)
  np.testing.assert_allclose(forward(model, params, codes[:1], tasks[:1])[0], base[0], atol=1e-5)
  assert np.abs(forward(model, params, codes, jnp.array([1, 1, 2]))[0] - base[0]).max() > 1e-3
  # Zero-initialised task modulation: an untrained conditioned model ignores the task.
  fresh = model.init(jax.random.key(1), codes, tasks)['params']
  np.testing.assert_allclose(forward(model, fresh, codes, tasks), forward(model, fresh, codes),
                             atol=1e-6)


def test_random_mask_follows_the_cosine_schedule():
  mask = np.asarray(maskgit.random_mask(jax.random.key(0), (64, 32, 16)))
  counts = mask.sum(-1)
  assert mask.dtype == bool and counts.min() >= 1 and counts.max() == 16
  # E[ceil(16 cos(u pi / 2))] / 16 is a little above E[cos(u pi / 2)] = 2 / pi.
  assert 2 / np.pi < counts.mean() / 16 < 2 / np.pi + 1 / 16 + 0.02
  assert np.any(mask[0, 0] != mask[0, 1])  # positions differ between frames
  full = maskgit.random_mask(jax.random.key(0), (2, 3, 16), min_ratio=1.0)
  assert bool(jnp.all(full))


def test_loss_only_on_masked_codes_and_nll_dispatch():
  model, params = model_and_params()
  batch = {'codes': random_codes(7, (2, 3, N)), 'task_id': jnp.array([0, 1])}
  key = jax.random.key(8)
  loss = maskgit.maskgit_loss(model, params, batch, key)
  # By hand, with the same mask.
  mask = maskgit.random_mask(jax.random.split(key)[0], (2, 3, N))
  logits = model.apply({'params': params}, batch['codes'], batch['task_id'], mask=mask)
  logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                            np.asarray(batch['codes'])[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(loss), -logp[np.asarray(mask)].mean(), rtol=1e-5)
  # train_prior: training uses the masked loss, evaluation the scoring NLL.
  np.testing.assert_allclose(
      float(train_prior.nll_per_token(model, params, batch, train=True, key=key)), float(loss),
      rtol=1e-6)
  scoring = model.apply({'params': params}, batch['codes'], batch['task_id'])
  expected = -np.take_along_axis(np.asarray(jax.nn.log_softmax(scoring)),
                                 np.asarray(batch['codes'])[..., None], -1).mean()
  np.testing.assert_allclose(float(train_prior.nll_per_token(model, params, batch)), expected,
                             rtol=1e-5)


def test_overfits_tiny_batch():
  model = make_model()
  batch = {'codes': random_codes(9, (2, 4, N)), 'task_id': jnp.array([0, 1])}
  params = model.init(jax.random.key(0), batch['codes'], batch['task_id'])['params']
  opt = optax.adam(3e-3)

  @jax.jit
  def train(params):
    def step(carry, key):
      params, opt_state = carry
      loss, grads = jax.value_and_grad(
          lambda p: maskgit.maskgit_loss(model, p, batch, key))(params)
      updates, opt_state = opt.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(
        jax.random.key(1), 150))
    return params, losses

  params, losses = train(params)
  assert float(losses[-20:].mean()) < float(losses[0]) / 5, (float(losses[0]), losses[-20:])
  scoring = float(train_prior.nll_per_token(model, params, batch))  # fully masked frames
  assert scoring < float(losses[0]) / 3, scoring


def test_sample():
  model, params = model_and_params()
  tasks = jnp.array([0, 2])
  key = jax.random.key(3)
  codes = maskgit.sample(params, model, key, tasks, num_frames=4, steps=3)
  assert codes.shape == (2, 4, N) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < V
  np.testing.assert_array_equal(codes, maskgit.sample(params, model, key, tasks, 4, steps=3))
  assert np.any(codes != maskgit.sample(params, model, jax.random.key(4), tasks, 4, steps=3))
  # One greedy step fills a frame with the argmax of its scoring logits given the frames before.
  prompt = random_codes(10, (2, 2, N))
  greedy = maskgit.sample(params, model, key, tasks, 4, prompt_codes=prompt, temperature=0.0,
                          steps=1)
  np.testing.assert_array_equal(greedy[:, :2], prompt)
  np.testing.assert_array_equal(greedy[:, 2:],
                                np.argmax(forward(model, params, greedy, tasks)[:, 2:], -1))


def test_from_config_and_build_prior(video_config):
  video_config.prior.kind = 'maskgit'
  prior = priors.build_prior(video_config, num_tasks=2)
  assert isinstance(prior, maskgit.MaskGITPrior) and prior.num_tasks == 2
  assert prior.tokens_per_frame == 16 and prior.vocab_size == 32
  video_config.prior.kind = 'diffusion'
  with pytest.raises(ValueError, match='prior.kind'):
    priors.build_prior(video_config, 1)
  cfg = presets.prior('tiny')
  cfg.maskgit_min_mask_ratio = 1.5
  with pytest.raises(ValueError, match='min_mask_ratio'):
    maskgit.MaskGITPrior.from_config(cfg, V, N)
  with pytest.raises(ValueError, match='codes per frame'):
    make_model().init(jax.random.key(0), random_codes(0, (1, 2, N + 1)))


def test_train_prior_end_to_end(video_config, tmp_path):
  video_config.prior.kind = 'maskgit'
  t, p = video_config.tokenizer.train, video_config.prior.train
  t.steps = t.checkpoint_every = t.image_every = t.log_every = 2  # the tokenizer hardly matters
  p.steps, p.eval_every, p.sample_every, p.checkpoint_every = 4, 2, 4, 4
  train_tokenizer.run(video_config, tmp_path)
  result = train_prior.run(video_config, tmp_path)
  assert np.isfinite(result['val_bits_per_token']) and result['val_bits_per_token'] > 0
  assert (tmp_path / 'prior' / 'sample.gif').exists()
  # The trained workdir loads as a reward model with the MaskGIT prior.
  model = reward.load(tmp_path)
  assert isinstance(model._m.prior, maskgit.MaskGITPrior)
  lp = np.asarray(model.log_likelihood(synthetic_episode(0, length=5)['image'][None]))
  assert lp.shape == (1, 5) and np.all(np.isfinite(lp))


# ------------------------------------------------------------------------------ reward library


def _reward_config():
  config = configs.load_config('experiments/quickstart.py:dmc:synthetic')
  config.env.size = (32, 32)
  with config.unlocked():
    config.tokenizer = presets.tokenizer('tiny')
    config.prior = presets.prior('tiny')  # 2 layers, context 3: receptive field 5 frames
    config.prior.kind = 'maskgit'
    config.prior.dtype = 'float32'
    config.tokenizer.dtype = 'float32'
  return config


def _frames(batch=2, length=10, seed=0):
  return np.stack([synthetic_episode(seed + i, length, 32)['image'] for i in range(batch)])


@pytest.fixture(scope='module')
def reward_model():
  return reward.RewardModel.init(_reward_config(), seed=1)


def test_reward_scores_are_finite_causal_and_batch_independent(reward_model):
  frames = _frames()
  base = np.asarray(reward_model.log_likelihood(frames))
  assert base.shape == (2, 10) and base.dtype == np.float32
  assert np.all(np.isfinite(base)) and np.all(base <= 0)
  for t in (0, 6):
    changed = frames.copy()
    changed[:, t + 1:] = 255 - changed[:, t + 1:]
    out = np.asarray(reward_model.log_likelihood(changed))
    np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=ATOL)
    assert not np.allclose(out[:, t + 1:], base[:, t + 1:], atol=ATOL)
  alone = np.asarray(reward_model.log_likelihood(frames[1:]))
  np.testing.assert_allclose(alone[0], base[1], atol=ATOL)
  # Window mode: same numbers while the history fits the window.
  window = np.asarray(reward_model.log_likelihood(frames, mode='window'))
  np.testing.assert_allclose(window[:, :CONTEXT], base[:, :CONTEXT], atol=ATOL)


def test_reward_chunked_equals_one_pass(reward_model):
  long = _frames(batch=2, length=20)
  whole = np.asarray(reward_model.log_likelihood(long))
  config = _reward_config()
  config.reward.chunk_frames = 6  # receptive field 5 < 6: chunks of 6 with 5 frames of warm-up
  chunked = reward.RewardModel(config, reward_model.params).log_likelihood(long)
  np.testing.assert_allclose(np.asarray(chunked), whole, atol=ATOL)


def test_reward_streaming_is_refused(reward_model):
  with pytest.raises(ValueError, match=r"prior.kind='ar'.*log_likelihood"):
    reward_model.init_stream(2)
