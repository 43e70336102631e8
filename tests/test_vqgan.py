"""VQ-GAN tokenizer: quantizer gradients and statistics, dead-code restart, overfitting, shapes,
GAN gating and the optional perceptual loss. Tiny configs; compiled functions are shared through
module-scoped fixtures to keep the file fast on CPU."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from viper_jax.video import perceptual, presets, vqgan


def _key(seed):
  # unsafe_rbg keys: compiling threefry for every parameter shape dominates init time on CPU.
  return jax.random.key(seed, impl='unsafe_rbg')


def shape_frames(n, size=64, seed=0):
  """uint8 [n, size, size, 3]: a flat background with two coloured squares or disks."""
  rng = np.random.RandomState(seed)
  frames = np.zeros((n, size, size, 3), np.uint8)
  yy, xx = np.mgrid[:size, :size]
  for frame in frames:
    frame[:] = rng.randint(0, 256, 3)
    for _ in range(2):
      colour, (x0, y0) = rng.randint(0, 256, 3), rng.randint(0, size - 8, 2)
      side = rng.randint(4, size // 2)
      if rng.rand() < 0.5:
        frame[y0:y0 + side, x0:x0 + side] = colour
      else:
        frame[(yy - y0) ** 2 + (xx - x0) ** 2 < side ** 2 // 2] = colour
  return frames


def tiny_config(**overrides):
  cfg = presets.tokenizer('tiny')
  for name, value in overrides.items():
    cfg[name] = value
  return cfg


@pytest.fixture(scope='module')
def grid8():
  """Tiny config (channel_mult 1,2,2,2: 8x8 codes for 64x64 frames) and its variables."""
  cfg = tiny_config(gan_start_step=10, r1_weight=1.0)
  return (cfg, *vqgan.init_variables(_key(0), cfg))


@pytest.fixture(scope='module')
def grid16():
  """channel_mult 1,2,2: 16x16 codes for 64x64 frames (8x8 for 32x32), no GAN."""
  cfg = tiny_config(channel_mult=(1, 2, 2), gan_weight=0.0)
  return (cfg, *vqgan.init_variables(_key(1), cfg))


def as_straight_through(params, vq_stats):
  """The same model in 'straight_through' mode: the EMA codebook becomes a parameter."""
  params = {**params, 'quantizer': {'codebook': vq_stats['quantizer']['codebook']}}
  return params, {'quantizer': {'usage': vq_stats['quantizer']['usage']}}


def quantizer_variables(params, vq_stats):
  """A VQGAN's variables -> those of its 'quantizer' submodule."""
  variables = {'vq_stats': vq_stats['quantizer']}
  if 'quantizer' in params:
    variables['params'] = params['quantizer']
  return variables


# ----------------------------------------------------------------------------------- quantizer


def test_straight_through_gradients():
  quantizer = vqgan.VectorQuantizer(8, 4, mode='straight_through', commitment=0.25)
  rng = np.random.RandomState(0)
  z = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=z.shape), jnp.float32)
  variables = jax.jit(quantizer.init)(_key(1), z)
  codebook = variables['params']['codebook']

  def apply(codebook, z):
    return quantizer.apply({**variables, 'params': {'codebook': codebook}}, z)

  def downstream(codebook, z):  # a loss on the quantized output only
    return jnp.sum(weights * apply(codebook, z)[0])

  grad_codebook, grad_z = jax.jit(jax.grad(downstream, argnums=(0, 1)))(codebook, z)
  # Identity estimator: d/dz equals d/dz_q (= weights); nothing downstream reaches the codebook.
  np.testing.assert_array_equal(grad_z, weights)
  np.testing.assert_array_equal(grad_codebook, np.zeros_like(codebook))

  # vq_loss = |sg(z) - e|^2 + beta |z - sg(e)|^2 (means): the codebook gets exactly the codebook
  # loss's gradient, the encoder output exactly beta times the commitment loss's.
  z_q, aux = jax.jit(apply)(codebook, z)
  grad_codebook, grad_z = jax.jit(jax.grad(lambda c, z: apply(c, z)[1]['vq_loss'],
                                           argnums=(0, 1)))(codebook, z)
  error = z - z_q  # z_q has the value of the chosen codes
  np.testing.assert_allclose(grad_z, 0.25 * 2 * error / z.size, rtol=1e-5, atol=1e-7)
  expected = jax.ops.segment_sum((-2 * error / z.size).reshape(-1, 4), aux['codes'].reshape(-1), 8)
  np.testing.assert_allclose(grad_codebook, expected, rtol=1e-5, atol=1e-7)
  unused = np.setdiff1d(np.arange(8), np.asarray(aux['codes']))
  assert np.all(np.asarray(grad_codebook)[unused] == 0)


def test_ema_codebook_moves_towards_assigned_outputs():
  quantizer = vqgan.VectorQuantizer(4, 2, mode='ema', commitment=0.25, ema_decay=0.8)
  centres = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0]])
  z = centres[:, None] + 0.1 * np.random.RandomState(0).normal(size=(3, 50, 2))
  z = jnp.asarray(z.reshape(-1, 2), jnp.float32)
  variables = jax.jit(quantizer.init)(_key(1), z)
  assert 'params' not in variables  # the EMA codebook is not trained by gradients
  start = variables['vq_stats']['codebook']

  @jax.jit
  def update(stats):
    (_, aux), new = quantizer.apply({'vq_stats': stats}, z, train=True, mutable=['vq_stats'])
    return new['vq_stats'], aux

  stats, aux = update(variables['vq_stats'])
  assigned = np.unique(np.asarray(aux['codes']))
  for _ in range(30):
    stats, _ = update(stats)
  codebook = np.asarray(stats['codebook'])
  # Each code that won points moves towards the mean of the points it wins.
  new_codes = np.asarray(quantizer.apply({'vq_stats': stats}, z)[1]['codes'])
  for code in np.unique(new_codes):
    target = np.asarray(z)[new_codes == code].mean(0)
    assert np.linalg.norm(codebook[code] - target) < 0.05
  for code in assigned:
    target = np.asarray(z)[np.asarray(aux['codes']) == code].mean(0)
    assert np.linalg.norm(codebook[code] - target) < np.linalg.norm(start[code] - target)
  never = np.setdiff1d(np.arange(4), np.concatenate([assigned, new_codes]))
  # Codes that win nothing stay put (up to the slow shrink from Laplace smoothing).
  np.testing.assert_allclose(codebook[never], np.asarray(start)[never], rtol=2e-2)
  np.testing.assert_allclose(stats['usage'].sum(), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------- usage and dead codes


@pytest.fixture(scope='module')
def varied(grid8):
  """Varied frames and their encoder outputs under the grid8 model."""
  cfg, params, _, _ = grid8
  frames = jnp.asarray(shape_frames(16, 64, seed=3))
  return frames, jax.jit(functools.partial(vqgan.encoder_outputs, cfg=cfg))(params, frames)


def test_codebook_usage_on_varied_frames(grid8, varied):
  cfg, params, vq_stats, _ = grid8
  frames, _ = varied
  model = vqgan.VQGAN.from_config(cfg)
  aux = jax.jit(lambda p, s, x: model.apply({'params': p, 'vq_stats': s}, x)[1])(
      params, vq_stats, frames)
  assert aux['usage'] > 0.3, aux['usage']  # > 10 of 32 codes at initialisation
  assert aux['perplexity'] > 3.0


@pytest.mark.parametrize('mode', ['ema', 'straight_through'])
def test_dead_code_restart(grid8, varied, mode):
  cfg, params, vq_stats, _ = grid8
  cfg = tiny_config(quantizer=mode)
  _, z = varied
  k = cfg.codebook_size
  # Collapse: every code but code 0 is far away and was never used.
  codebook = vq_stats['quantizer']['codebook'].at[1:].add(1e3)
  usage = jnp.zeros(k).at[0].set(1.0)
  vq_stats = {'quantizer': {**vq_stats['quantizer'], 'codebook': codebook,
                            'embed_sum': codebook, 'usage': usage}}
  if mode == 'straight_through':
    params, vq_stats = as_straight_through(params, vq_stats)
  quantizer = vqgan.VectorQuantizer(k, cfg.code_dim, mode=mode)
  before = quantizer.apply(quantizer_variables(params, vq_stats), z)[1]
  assert before['usage'] == 1 / k

  new_params, new_stats = jax.jit(functools.partial(vqgan.restart_dead_codes, cfg=cfg))(
      params, vq_stats, z, _key(2))
  variables = quantizer_variables(new_params, new_stats)
  after = quantizer.apply(variables, z)[1]
  assert after['usage'] > 0.3, after['usage']
  new_codebook = np.asarray(quantizer.apply(variables, method='lookup', codes=jnp.arange(k)))
  flat_z = np.asarray(z).reshape(-1, cfg.code_dim)
  distance_to_batch = np.abs(new_codebook[:, None] - flat_z[None]).max(-1).min(-1)  # [K]
  np.testing.assert_array_equal(distance_to_batch[1:], 0.0)  # restarted codes are batch outputs
  assert len(np.unique(new_codebook[1:], axis=0)) > k // 2  # varied ones
  np.testing.assert_array_equal(new_codebook[0], codebook[0])  # the live code stays
  np.testing.assert_allclose(new_stats['quantizer']['usage'][1:], 1 / k)
  assert not np.any(vqgan.dead_codes(new_stats, cfg))
  if mode == 'ema':
    np.testing.assert_array_equal(new_stats['quantizer']['embed_sum'][1:], new_codebook[1:])
  else:
    assert jax.tree.structure(new_params) == jax.tree.structure(params)
  # A threshold at the uniform share would restart healthy codes: refused.
  cfg.dead_code_threshold = 1 / k
  with pytest.raises(ValueError, match='dead_code_threshold'):
    vqgan.restart_dead_codes(params, vq_stats, z, _key(2), cfg)
  # Disabled by config: a no-op.
  cfg.restart_dead_codes = False
  same = vqgan.restart_dead_codes(params, vq_stats, z, _key(2), cfg)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), same, (params, vq_stats)))


# -------------------------------------------------------------------------------- overfitting


def test_tiny_model_overfits_tiny_batch(grid16):
  cfg, params, vq_stats, _ = grid16  # 32x32 frames -> 8x8 codes
  frames = jnp.asarray(shape_frames(4, 32, seed=1))
  optimizer = optax.adam(3e-3)
  loss_fn = jax.value_and_grad(functools.partial(vqgan.tokenizer_loss, cfg=cfg), has_aux=True)

  @jax.jit
  def train_step(params, vq_stats, opt_state, step):
    (_, (metrics, vq_stats)), grads = loss_fn(params, vq_stats, None, frames, step, None)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), vq_stats, opt_state, metrics

  opt_state = optimizer.init(params)
  l1 = []
  for step in range(150):
    params, vq_stats, opt_state, metrics = train_step(params, vq_stats, opt_state, step)
    l1.append(float(metrics['l1']))
  assert np.all(np.isfinite(l1))
  assert l1[-1] < l1[0] / 5, (l1[0], l1[-1])


# ------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize('fixture, grid', [('grid8', 8), ('grid16', 16)])
def test_shapes_dtypes_and_round_trip(request, fixture, grid):
  cfg, params, vq_stats, _ = request.getfixturevalue(fixture)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((params, vq_stats)))
  model = vqgan.VQGAN.from_config(cfg)
  variables = {'params': params, 'vq_stats': vq_stats}
  frames = jnp.asarray(shape_frames(2, 64, seed=5))

  @jax.jit
  def run(frames):
    recon, aux = model.apply(variables, frames)
    codes = model.apply(variables, frames, method='encode')
    return recon, aux, codes, model.apply(variables, codes, method='decode')

  recon, aux, codes, decoded = run(frames)
  assert recon.shape == (2, 64, 64, 3) and recon.dtype == jnp.float32
  assert codes.shape == (2, grid, grid) and codes.dtype == jnp.int32
  assert aux['encoder_outputs'].shape == (2, grid, grid, cfg.code_dim)
  for name in ('vq_loss', 'commitment_loss', 'perplexity', 'usage'):
    assert aux[name].shape == () and aux[name].dtype == jnp.float32
  assert float(jnp.abs(recon).max()) <= 1.0
  np.testing.assert_array_equal(codes, aux['codes'])
  np.testing.assert_allclose(decoded, recon, atol=1e-5)
  uint8 = vqgan.frames_to_uint8(recon)
  assert uint8.dtype == jnp.uint8 and uint8.shape == recon.shape

  # bfloat16 compute: params and outputs stay float32 (traced only, no compile).
  cfg16 = tiny_config(channel_mult=cfg.channel_mult, dtype='bfloat16')
  model16 = vqgan.VQGAN.from_config(cfg16)
  assert model16.dtype == jnp.bfloat16
  shapes = jax.eval_shape(lambda: model16.init(_key(0), frames))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(shapes))
  recon16, aux16 = jax.eval_shape(model16.apply, shapes, frames)
  assert recon16.dtype == jnp.float32 and aux16['vq_loss'].dtype == jnp.float32

  factor = 64 // grid
  with pytest.raises(ValueError, match='divisible'):
    jax.eval_shape(lambda: model.apply(variables, frames[:, :64 - factor // 2]))
  with pytest.raises(ValueError, match='uint8'):
    jax.eval_shape(lambda: model.apply(variables, frames.astype(jnp.float32)))


# ----------------------------------------------------------------------------------------- GAN


def test_gan_term_is_zero_before_start_and_discriminator_loss(grid8):
  cfg, params, vq_stats, disc_params = grid8
  frames = jnp.asarray(shape_frames(2, 64, seed=6))
  loss_fn = jax.jit(functools.partial(vqgan.tokenizer_loss, cfg=cfg))
  before = loss_fn(params, vq_stats, disc_params, frames, cfg.gan_start_step - 1, _key(0))
  after = loss_fn(params, vq_stats, disc_params, frames, cfg.gan_start_step, _key(0))
  m0, m1 = before[1][0], after[1][0]
  assert float(m0['gan_term']) == 0.0 and float(m0['gan_weight']) == 0.0
  assert float(m1['gan_term']) > 0.0
  np.testing.assert_allclose(m1['gan_weight'], cfg.gan_weight)
  np.testing.assert_allclose(before[0], m0['reconstruction'] + cfg.vq_weight * m0['vq'],
                             rtol=1e-6)
  np.testing.assert_allclose(after[0] - before[0], cfg.gan_weight * m1['gan_generator'],
                             rtol=1e-4)
  for name in ('l1', 'l2', 'psnr', 'vq', 'commitment', 'perplexity', 'usage'):
    assert np.isfinite(m0[name]), name

  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      functools.partial(vqgan.disc_loss_fn, cfg=cfg), has_aux=True))(
          disc_params, params, vq_stats, frames)
  assert np.isfinite(loss) and metrics['r1'] > 0
  np.testing.assert_allclose(loss, metrics['disc_loss'] + 0.5 * cfg.r1_weight * metrics['r1'],
                             rtol=1e-5)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert vqgan.discriminator_loss(jnp.full(3, 10.0), jnp.full(3, -10.0)) < 1e-3
  assert vqgan.generator_loss(jnp.full(3, 10.0)) < vqgan.generator_loss(jnp.full(3, -10.0))


# ---------------------------------------------------------------------------------- perceptual


def write_perceptual_weights(path, widths=(4, 8, 8, 8, 8), drop=()):
  rng = np.random.RandomState(0)
  arrays, channels = {}, 3
  for b, (n, width) in enumerate(zip(perceptual.VGG16_BLOCKS, widths)):
    for i in range(n):
      arrays[f'conv{b + 1}_{i + 1}/kernel'] = rng.normal(0, 0.5, (3, 3, channels, width))
      arrays[f'conv{b + 1}_{i + 1}/bias'] = rng.normal(0, 0.1, width)
      channels = width
    arrays[f'lin{b}'] = rng.uniform(0, 1, (1, width, 1, 1))  # torch layout is accepted
  for key in drop:
    del arrays[key]
  np.savez(path, **arrays)
  return path


def test_perceptual_loss_from_local_weights(tmp_path):
  distance = perceptual.load_perceptual_fn(write_perceptual_weights(tmp_path / 'lpips.npz'))
  a = jnp.asarray(shape_frames(3, 32, seed=7))
  b = jnp.asarray(shape_frames(3, 32, seed=8))
  d_ab, d_aa = jax.jit(lambda a, b: (distance(a, b), distance(a, a)))(a, b)
  assert d_ab.shape == (3,) and d_ab.dtype == jnp.float32
  assert np.all(d_ab > 0)
  np.testing.assert_allclose(d_aa, 0.0, atol=1e-6)
  np.testing.assert_allclose(jax.jit(distance)(vqgan.frames_to_float(a), b), d_ab, rtol=1e-5)

  with pytest.raises(FileNotFoundError, match='perceptual_weights_path'):
    perceptual.load_perceptual_fn(tmp_path / 'missing.npz')
  with pytest.raises(ValueError, match='lin2'):
    perceptual.load_perceptual_fn(write_perceptual_weights(tmp_path / 'a.npz', drop=['lin2']))
  bad = write_perceptual_weights(tmp_path / 'b.npz')
  arrays = dict(np.load(bad))
  arrays['conv2_1/kernel'] = arrays['conv2_1/kernel'][:, :, :2]
  np.savez(bad, **arrays)
  with pytest.raises(ValueError, match='conv2_1/kernel'):
    perceptual.load_perceptual_fn(bad)
  (tmp_path / 'c.npz').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='npz'):
    perceptual.load_perceptual_fn(tmp_path / 'c.npz')

  # The tokenizer loss asks for the function when the config turns the loss on.
  cfg = tiny_config(perceptual_weight=0.1, gan_weight=0.0)
  variables = jax.eval_shape(lambda: vqgan.VQGAN.from_config(cfg).init(_key(0), a))
  params, vq_stats = variables['params'], variables['vq_stats']
  with pytest.raises(ValueError, match='perceptual_fn'):
    jax.eval_shape(functools.partial(vqgan.tokenizer_loss, cfg=cfg), params, vq_stats, None, a,
                   0, None)
  loss, (metrics, _) = jax.eval_shape(
      functools.partial(vqgan.tokenizer_loss, cfg=cfg, perceptual_fn=distance),
      params, vq_stats, None, a, 0, None)
  assert metrics['perceptual'].shape == ()


def test_foreground_weights_single_out_thin_moving_parts():
  """A 1-pixel 'pole' that moves between frames over a fixed background gets the extra weight;
  the background does not; weights average to 1 so the loss scale is unchanged."""
  cfg = presets.tokenizer('tiny')
  cfg.foreground_weight, cfg.foreground_threshold = 9.0, 0.1
  frames = np.full((5, 16, 16, 3), 60, np.uint8)
  for i in range(5):
    frames[i, 2:12, 3 + 2 * i] = (230, 180, 120)  # a vertical pole at a different column each frame
  weights = np.asarray(vqgan.foreground_weights(jnp.asarray(frames), cfg))[..., 0]
  assert weights.shape == (5, 16, 16)
  np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-5)
  pole = np.zeros((5, 16, 16), bool)
  for i in range(5):
    pole[i, 2:12, 3 + 2 * i] = True
  np.testing.assert_allclose(weights[pole] / weights[~pole].mean(), 10.0, rtol=1e-5)
  # The weighted loss counts a missing pole far more than the plain L1 does.
  recon = jnp.asarray(np.full_like(frames, 60), jnp.float32) / 127.5 - 1.0
  plain = vqgan.reconstruction_loss(jnp.asarray(frames), recon, presets.tokenizer('tiny'))
  weighted = vqgan.reconstruction_loss(jnp.asarray(frames), recon, cfg)
  assert weighted > 5 * plain
  # Sequences [B, T, H, W, 3] (the agent's world model) are weighted as one batch of B*T frames.
  seq = np.asarray(vqgan.foreground_weights(jnp.asarray(frames[None]), cfg))
  assert seq.shape == (1, 5, 16, 16, 1)
  np.testing.assert_allclose(seq[0, ..., 0], weights, rtol=1e-6)


@pytest.mark.parametrize('count', [1, 6, 7, 256])
def test_median_uint8_matches_numpy_for_odd_and_even_counts(count):
  """The sort-free median (bitwise search on counts) equals np.median, including the extremes
  0 and 255 and the mean of the two middle values for an even count."""
  rng = np.random.default_rng(count)
  frames = rng.integers(0, 256, (count, 5, 7, 3), dtype=np.uint8)
  frames[:, 0, 0] = 0
  frames[:, 0, 1] = 255
  np.testing.assert_array_equal(np.asarray(vqgan.median_uint8(jnp.asarray(frames))),
                                np.median(frames.astype(np.float64), axis=0))
