"""VQ-GAN tokenizer: frames uint8 [B, H, W, 3] <-> codes int32 [B, h, w], and its losses.

Modules (flax.linen): `Encoder`, `Decoder`, `VectorQuantizer`, `VQGAN`, `PatchDiscriminator`,
built from `presets.tokenizer(size)` with `VQGAN.from_config(cfg)` and
`PatchDiscriminator.from_config(cfg)`.
A frame of H x W becomes an (H / f) x (W / f) code grid with f = 2 ** (len(channel_mult) - 1).

Variables of a VQGAN:
  'params'    encoder, pre_quant (1x1 conv to code_dim), decoder; plus quantizer/codebook [K, D]
              in 'straight_through' mode.
  'vq_stats'  quantizer/usage [K] (EMA of each code's share of assignments, for dead-code restart);
              in 'ema' mode also quantizer/{codebook [K, D], cluster_size [K], embed_sum [K, D]}.
Training forward passes (`train=True`) update 'vq_stats': apply with `mutable=['vq_stats']`.

Losses are pure functions over (params, vq_stats, disc_params, frames): `tokenizer_loss` for the
autoencoder, `disc_loss_fn` for the discriminator. Jit them with the config closed over, e.g.
`jax.jit(functools.partial(tokenizer_loss, cfg=cfg))`.

Dead-code restart is a separate pure step, called after the optimizer update (see
`restart_dead_codes`):

  (loss, (metrics, vq_stats)), grads = jax.value_and_grad(tokenizer_loss, has_aux=True)(
      params, vq_stats, disc_params, frames, step, key, cfg=cfg)
  params = optax.apply_updates(params, updates)
  if cfg.restart_dead_codes:  # static config: decided at trace time
    z = encoder_outputs(params, frames, cfg)  # [B, h, w, D], or reuse a forward pass's
    params, vq_stats = restart_dead_codes(params, vq_stats, z, key, cfg)
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from viper_jax import oneshot, parallel
from viper_jax.video import presets

Array = jax.Array
QUANTIZER_MODES = ('straight_through', 'ema')


# ------------------------------------------------------------------------------------ helpers


def frames_to_float(frames: Array, dtype=jnp.float32) -> Array:
  """uint8 [..., 3] in [0, 255] -> dtype in [-1, 1]."""
  return frames.astype(dtype) / 127.5 - 1.0


def frames_to_uint8(images: Array) -> Array:
  """float [..., 3] in [-1, 1] (e.g. a reconstruction) -> uint8 in [0, 255], rounded, clipped."""
  return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def _num_groups(channels: int) -> int:
  """GroupNorm groups: 32 for wide layers, groups of >= 4 channels for the narrow test sizes."""
  groups = max(1, min(32, channels // 4))
  while channels % groups:
    groups -= 1
  return groups


def _norm(channels: int, dtype) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=_num_groups(channels), epsilon=1e-6, dtype=dtype,
                      param_dtype=jnp.float32)


def _conv(features: int, kernel: int, dtype, stride: int = 1, name: str | None = None) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding='SAME',
                 dtype=dtype, param_dtype=jnp.float32, name=name)


def _clip_straight_through(x: Array) -> Array:
  """Clips to [-1, 1] in the forward pass, identity gradient: outputs stay in range without the
  dead gradients of a hard clip (a pixel pushed past the range can still come back)."""
  return x + jax.lax.stop_gradient(jnp.clip(x, -1.0, 1.0) - x)


# ---------------------------------------------------------------------------- building blocks


class ResBlock(nn.Module):
  """GroupNorm + SiLU + conv, twice, with a 1x1 projection on the skip when widths differ."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = _conv(self.features, 3, self.dtype)(nn.silu(_norm(x.shape[-1], self.dtype)(x)))
    h = _conv(self.features, 3, self.dtype)(nn.silu(_norm(self.features, self.dtype)(h)))
    if x.shape[-1] != self.features:
      x = _conv(self.features, 1, self.dtype, name='skip')(x)
    return x + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over the h*w positions of a feature map, residual."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, h, w, c = x.shape
    y = _norm(c, self.dtype)(x).reshape(b, h * w, c)
    dense = functools.partial(nn.Dense, c, dtype=self.dtype, param_dtype=jnp.float32)
    q, k, v = dense(name='query')(y), dense(name='key')(y), dense(name='value')(y)
    logits = jnp.einsum('bqc,bkc->bqk', q, k).astype(jnp.float32) / jnp.sqrt(c)
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)  # softmax in f32 for bf16 runs
    y = dense(name='out')(jnp.einsum('bqk,bkc->bqc', weights, v))
    return x + y.reshape(b, h, w, c)


class MiddleBlock(nn.Module):
  """Bottleneck: res block, optional attention, res block."""
  features: int
  attention: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = ResBlock(self.features, self.dtype)(x)
    if self.attention:
      x = AttentionBlock(self.dtype)(x)
    return ResBlock(self.features, self.dtype)(x)


class Encoder(nn.Module):
  """Images [B, H, W, 3] in [-1, 1] -> features [B, H/f, W/f, channels * channel_mult[-1]].

  One level per entry of channel_mult (num_res_blocks res blocks each), a stride-2 conv between
  levels, then the middle block and a final GroupNorm + SiLU.
  """
  channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int = 1
  attention_in_middle: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = _conv(self.channels, 3, self.dtype)(x.astype(self.dtype))
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        x = ResBlock(self.channels * mult, self.dtype)(x)
      if level < len(self.channel_mult) - 1:
        x = _conv(x.shape[-1], 3, self.dtype, stride=2)(x)
    width = self.channels * self.channel_mult[-1]
    x = MiddleBlock(width, self.attention_in_middle, self.dtype)(x)
    return nn.silu(_norm(width, self.dtype)(x))


class Decoder(nn.Module):
  """Quantized codes [B, h, w, D] -> images [B, h*f, w*f, 3] (unbounded; VQGAN clips).

  Mirrors the encoder: conv in, middle block, levels from widest to narrowest with
  num_res_blocks + 1 res blocks each and a nearest-neighbour 2x upsample + conv between levels.
  """
  channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int = 1
  attention_in_middle: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z: Array) -> Array:
    width = self.channels * self.channel_mult[-1]
    x = _conv(width, 3, self.dtype)(z.astype(self.dtype))
    x = MiddleBlock(width, self.attention_in_middle, self.dtype)(x)
    for level in reversed(range(len(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        x = ResBlock(self.channels * self.channel_mult[level], self.dtype)(x)
      if level > 0:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        x = _conv(x.shape[-1], 3, self.dtype)(x)
    x = nn.silu(_norm(x.shape[-1], self.dtype)(x))
    return _conv(3, 3, self.dtype)(x)


# ---------------------------------------------------------------------------------- quantizer


class VectorQuantizer(nn.Module):
  """Nearest-neighbour vector quantization of z [..., D] against a codebook [K, D], in float32.

  mode 'straight_through': the codebook is a parameter trained by the codebook loss
    |sg(z) - e|^2; the encoder gets the commitment loss |z - sg(e)|^2 and, through the
    straight-through estimator z_q = z + sg(e - z), the gradient of everything downstream.
  mode 'ema': the codebook lives in 'vq_stats' and moves to the EMA mean of the encoder outputs
    assigned to each code (cluster sizes with Laplace smoothing, so rarely used codes don't
    divide by ~0); only the commitment loss is a loss. A code that wins nothing keeps its value
    while its EMA count is well above the smoothing epsilon and then drifts to the origin;
    dead-code restart moves such codes long before.
  Both modes keep vq_stats['usage'] [K], an EMA of each code's share of the assignments.
  """
  codebook_size: int
  code_dim: int
  mode: str = 'ema'
  commitment: float = 0.25
  ema_decay: float = 0.99
  epsilon: float = 1e-5  # Laplace smoothing of the EMA cluster sizes

  def setup(self):
    if self.mode not in QUANTIZER_MODES:
      raise ValueError(f'quantizer must be one of {QUANTIZER_MODES}, got {self.mode!r}')
    shape = (self.codebook_size, self.code_dim)
    # Unit-variance codes, like the encoder outputs at init, so most codes win some assignments
    # from the start (the tiny uniform(-1/K, 1/K) init collapses onto a few codes).
    init = nn.initializers.normal(stddev=1.0)
    if self.mode == 'straight_through':
      self._codebook = self.param('codebook', init, shape, jnp.float32)
    else:
      self._codebook_var = self.variable(
          'vq_stats', 'codebook', lambda: init(self.make_rng('params'), shape, jnp.float32))
      # Pseudo-count 1 per code holding its own initial value: codebook = embed_sum / size
      # is then well defined from the first update on.
      self.cluster_size = self.variable('vq_stats', 'cluster_size', jnp.ones,
                                        (self.codebook_size,), jnp.float32)
      self.embed_sum = self.variable('vq_stats', 'embed_sum', lambda: self._codebook_var.value)
    self.usage = self.variable('vq_stats', 'usage', jnp.full, (self.codebook_size,),
                               1.0 / self.codebook_size, jnp.float32)

  @property
  def codebook(self) -> Array:
    """[K, D] float32."""
    if self.mode == 'straight_through':
      return self._codebook
    return self._codebook_var.value

  def lookup(self, codes: Array) -> Array:
    """codes int [...] -> code vectors float32 [..., D]."""
    return jnp.take(self.codebook, codes, axis=0)

  def nearest(self, z: Array) -> Array:
    """z [..., D] -> index of the nearest code, int32 [...]."""
    return _nearest_codes(z.astype(jnp.float32), self.codebook)

  def __call__(self, z: Array, train: bool = False) -> tuple[Array, dict[str, Array]]:
    """z [..., D] -> (z_q float32 [..., D] with straight-through gradient, aux).

    aux: codes int32 [...], vq_loss (what to add to the loss, times cfg.vq_weight),
    commitment_loss (mean squared distance to the chosen code), perplexity, usage (share of the
    codebook used by this batch).
    """
    z = z.astype(jnp.float32)
    codebook = self.codebook
    codes = _nearest_codes(z, codebook)
    quantized = jnp.take(codebook, codes, axis=0)
    commitment_loss = jnp.mean(jnp.square(z - jax.lax.stop_gradient(quantized)))
    if self.mode == 'straight_through':
      codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - quantized))
      vq_loss = codebook_loss + self.commitment * commitment_loss
    else:
      vq_loss = self.commitment * commitment_loss
    z_q = z + jax.lax.stop_gradient(quantized - z)

    flat_codes = codes.reshape(-1)
    flat_z = jax.lax.stop_gradient(z.reshape(-1, self.code_dim))
    counts = jax.ops.segment_sum(jnp.ones_like(flat_codes, jnp.float32), flat_codes,
                                 self.codebook_size)  # [K]
    share = counts / flat_codes.shape[0]
    if train and not self.is_initializing():
      decay = self.ema_decay
      self.usage.value = decay * self.usage.value + (1 - decay) * share
      if self.mode == 'ema':
        sums = jax.ops.segment_sum(flat_z, flat_codes, self.codebook_size)  # [K, D]
        size = decay * self.cluster_size.value + (1 - decay) * counts
        embed_sum = decay * self.embed_sum.value + (1 - decay) * sums
        total = jnp.sum(size)
        smoothed = (size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.cluster_size.value = size
        self.embed_sum.value = embed_sum
        self._codebook_var.value = embed_sum / smoothed[:, None]
    aux = dict(
        codes=codes,
        vq_loss=vq_loss,
        commitment_loss=commitment_loss,
        perplexity=jnp.exp(-jnp.sum(share * jnp.log(jnp.maximum(share, 1e-10)))),
        usage=jnp.mean((counts > 0).astype(jnp.float32)),
    )
    return z_q, aux


def _nearest_codes(z: Array, codebook: Array) -> Array:
  """z float32 [..., D], codebook [K, D] -> int32 [...]. HIGHEST precision: on TPU the default
  f32 matmul rounds to bf16, which can flip near-ties between codes."""
  distances = (jnp.sum(jnp.square(z), -1, keepdims=True)
               - 2 * jnp.einsum('...d,kd->...k', z, codebook,
                                precision=jax.lax.Precision.HIGHEST)
               + jnp.sum(jnp.square(codebook), -1))
  return jnp.argmin(distances, axis=-1).astype(jnp.int32)


# -------------------------------------------------------------------------------------- VQGAN


class VQGAN(nn.Module):
  """Frames uint8 [B, H, W, 3] -> encoder -> 1x1 conv to code_dim -> quantizer -> decoder.

  Params are float32; convolutions run in `dtype`; the quantizer and the outputs are float32.
  H and W must be divisible by the downsampling factor 2 ** (len(channel_mult) - 1).
  """
  channels: int
  channel_mult: tuple[int, ...]
  num_res_blocks: int
  attention_in_middle: bool
  codebook_size: int
  code_dim: int
  quantizer_mode: str = 'ema'
  commitment: float = 0.25
  ema_decay: float = 0.99
  dtype: Any = jnp.float32

  @classmethod
  def from_config(cls, cfg) -> 'VQGAN':
    """From a `presets.tokenizer(...)` ConfigDict."""
    return cls(
        channels=cfg.channels, channel_mult=tuple(cfg.channel_mult),
        num_res_blocks=cfg.num_res_blocks, attention_in_middle=cfg.attention_in_middle,
        codebook_size=cfg.codebook_size, code_dim=cfg.code_dim, quantizer_mode=cfg.quantizer,
        commitment=cfg.commitment, ema_decay=cfg.ema_decay,
        dtype=presets.compute_dtype(cfg.dtype))

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.channel_mult) - 1)

  def setup(self):
    kwargs = dict(channels=self.channels, channel_mult=tuple(self.channel_mult),
                  num_res_blocks=self.num_res_blocks,
                  attention_in_middle=self.attention_in_middle, dtype=self.dtype)
    self.encoder = Encoder(**kwargs)
    self.pre_quant = _conv(self.code_dim, 1, self.dtype)
    self.quantizer = VectorQuantizer(self.codebook_size, self.code_dim, self.quantizer_mode,
                                     self.commitment, self.ema_decay)
    self.decoder = Decoder(**kwargs)

  def _check_frames(self, frames: Array) -> None:
    chex.assert_rank(frames, 4)
    f = self.downsample_factor
    if frames.dtype != jnp.uint8 or frames.shape[-1] != 3:
      raise ValueError(f'frames must be uint8 [B, H, W, 3], got {frames.dtype} {frames.shape}')
    if frames.shape[1] % f or frames.shape[2] % f:
      raise ValueError(f'frame size {frames.shape[1:3]} must be divisible by the downsampling '
                       f'factor {f} (channel_mult={tuple(self.channel_mult)})')

  def encode_continuous(self, frames: Array) -> Array:
    """uint8 [B, H, W, 3] -> encoder outputs before quantization, float32 [B, h, w, code_dim]."""
    self._check_frames(frames)
    x = self.encoder(frames_to_float(frames, self.dtype))
    return self.pre_quant(x).astype(jnp.float32)

  def decode_latents(self, z_q: Array) -> Array:
    """Code vectors [B, h, w, D] -> frames float32 [B, H, W, 3] in [-1, 1]."""
    return _clip_straight_through(self.decoder(z_q).astype(jnp.float32))

  def __call__(self, frames: Array, train: bool = False) -> tuple[Array, dict[str, Array]]:
    """uint8 [B, H, W, 3] -> (recon float32 [B, H, W, 3] in [-1, 1], aux).

    aux: codes int32 [B, h, w], encoder_outputs float32 [B, h, w, D] and the quantizer's scalars
    vq_loss, commitment_loss, perplexity, usage. train=True updates 'vq_stats' (mutable).
    """
    z = self.encode_continuous(frames)
    z_q, aux = self.quantizer(z, train=train)
    aux['encoder_outputs'] = z
    return self.decode_latents(z_q), aux

  def encode(self, frames: Array) -> Array:
    """uint8 [B, H, W, 3] -> codes int32 [B, h, w]."""
    return self.quantizer.nearest(self.encode_continuous(frames))

  def decode(self, codes: Array) -> Array:
    """codes int [B, h, w] -> frames float32 [B, H, W, 3] in [-1, 1]."""
    chex.assert_rank(codes, 3)
    return self.decode_latents(self.quantizer.lookup(codes))


# ------------------------------------------------------------------------------ discriminator


class PatchDiscriminator(nn.Module):
  """PatchGAN: images [B, H, W, 3] (float in [-1, 1], or uint8) -> logits float32 [B, h', w'].

  `num_layers` stride-2 4x4 convs (widths channels * 1, 2, 4, ... capped at 8x), a stride-1 conv,
  and a 1-channel stride-1 conv; LeakyReLU(0.2). Per-sample GroupNorm instead of BatchNorm so a
  logit depends only on its own image (needed for a meaningful R1 penalty).
  """
  channels: int = 64
  num_layers: int = 3
  dtype: Any = jnp.float32

  @classmethod
  def from_config(cls, cfg) -> 'PatchDiscriminator':
    return cls(channels=cfg.disc_channels, num_layers=cfg.disc_layers,
               dtype=presets.compute_dtype(cfg.dtype))

  @nn.compact
  def __call__(self, images: Array) -> Array:
    chex.assert_rank(images, 4)
    if images.dtype == jnp.uint8:
      images = frames_to_float(images)
    x = _conv(self.channels, 4, self.dtype, stride=2)(images.astype(self.dtype))
    x = nn.leaky_relu(x, 0.2)
    for i in range(1, self.num_layers + 1):
      width = self.channels * min(2 ** i, 8)
      x = _conv(width, 4, self.dtype, stride=2 if i < self.num_layers else 1)(x)
      x = nn.leaky_relu(_norm(width, self.dtype)(x), 0.2)
    return _conv(1, 4, self.dtype)(x)[..., 0].astype(jnp.float32)


# -------------------------------------------------------------------------- init and restart


def init_fn(cfg, image_size: tuple[int, int]) -> Callable:
  """key -> the VQGAN's variables {'params', 'vq_stats'} for frames of image_size (H, W); jit it,
  or `jax.eval_shape` it for the shapes alone."""
  frames = jnp.zeros((1, *image_size, 3), jnp.uint8)
  return lambda key: VQGAN.from_config(cfg).init(key, frames, train=False)


def init_variables(key: Array, cfg, image_size: tuple[int, int] = (64, 64)):
  """-> (params, vq_stats, disc_params): the 'params' and 'vq_stats' collections of the VQGAN
  and the discriminator's 'params', for frames of image_size (H, W)."""
  frames = jnp.zeros((1, *image_size, 3), jnp.uint8)

  def init(key):  # one compiled program, not op-by-op dispatch (much faster on CPU)
    model_key, disc_key = jax.random.split(key)
    variables = init_fn(cfg, image_size)(model_key)
    disc_params = PatchDiscriminator.from_config(cfg).init(
        disc_key, frames_to_float(frames))['params']
    return variables['params'], variables['vq_stats'], disc_params

  return oneshot.run(init, key)


def make_encode_fn(cfg, params, vq_stats, mesh) -> Callable:
  """Jitted, batch-sharded over the mesh's 'data' axis: uint8 [B, H, W, 3] -> int32 numpy codes
  [B, h, w] (B divisible by the mesh size; multi-host: this host's rows)."""
  model = VQGAN.from_config(cfg)
  variables = parallel.put_replicated({'params': params, 'vq_stats': vq_stats}, mesh)
  encode = jax.jit(lambda v, frames: model.apply(v, frames, method=VQGAN.encode),
                   in_shardings=(parallel.replicated(mesh), parallel.data_sharding(mesh)))
  return lambda frames: np.asarray(jax.device_get(
      encode(variables, parallel.put_batch(frames, mesh) if jax.process_count() > 1 else frames)))


def encoder_outputs(params, frames: Array, cfg) -> Array:
  """uint8 [B, H, W, 3] -> float32 [B, h, w, code_dim]: the quantizer's inputs."""
  return VQGAN.from_config(cfg).apply({'params': params}, frames,
                                      method=VQGAN.encode_continuous)


def dead_codes(vq_stats, cfg) -> Array:
  """bool [K]: codes whose EMA usage share is below cfg.dead_code_threshold."""
  return vq_stats['quantizer']['usage'] < cfg.dead_code_threshold


def restart_dead_codes(params, vq_stats, encoder_outputs: Array, key: Array, cfg):
  """Moves dead codes onto randomly chosen encoder outputs of the batch. Pure and jit-able.

  params, vq_stats: the VQGAN's collections; encoder_outputs float [..., code_dim] (e.g.
  `encoder_outputs(params, frames, cfg)` or aux['encoder_outputs'] of a training forward pass).
  Returns (params, vq_stats) with, for every dead code k (usage < cfg.dead_code_threshold):
    codebook[k] = the encoder output at a random batch position (distinct positions while the
      batch has at least K of them),
    usage[k] = 1 / K, so a restarted code gets ~log(K * threshold) / log(ema_decay) steps to
    win assignments before it counts as dead again;
  in 'ema' mode also cluster_size[k] = 1 and embed_sum[k] = codebook[k] (pseudo-count 1, so the
  next EMA updates pull it to the outputs it wins). In 'straight_through' mode the codebook is in
  params; the optimizer's moments of a dead row are ~0 already (dead codes get no gradient).
  Call after the optimizer update of a train step, every step or every N steps (lax.cond).
  A no-op when cfg.restart_dead_codes is False.
  """
  if not cfg.restart_dead_codes:
    return params, vq_stats
  k_size = cfg.codebook_size
  if cfg.dead_code_threshold >= 1.0 / k_size:
    # A healthy codebook sits near the uniform share 1/K: such a threshold would restart live
    # codes over and over (and restarted codes, reset to 1/K, at every call).
    raise ValueError(f'dead_code_threshold={cfg.dead_code_threshold} must be well below the '
                     f'uniform usage share 1/codebook_size = {1 / k_size:.2e}, e.g. '
                     f'{0.25 / k_size:.1e}')
  stats = dict(vq_stats['quantizer'])
  z = jax.lax.stop_gradient(encoder_outputs).reshape(-1, cfg.code_dim).astype(jnp.float32)
  n = z.shape[0]
  picks = jax.random.choice(key, n, (k_size,), replace=n < k_size)
  candidates = z[picks]  # [K, D]
  dead = stats['usage'] < cfg.dead_code_threshold  # [K]

  def restart(rows):
    return jnp.where(dead[:, None], candidates, rows)

  stats['usage'] = jnp.where(dead, 1.0 / k_size, stats['usage'])
  if cfg.quantizer == 'ema':
    stats['codebook'] = restart(stats['codebook'])
    stats['embed_sum'] = restart(stats['embed_sum'])
    stats['cluster_size'] = jnp.where(dead, 1.0, stats['cluster_size'])
  else:
    params = dict(params)
    params['quantizer'] = dict(params['quantizer'])
    params['quantizer']['codebook'] = restart(params['quantizer']['codebook'])
  return params, {**vq_stats, 'quantizer': stats}


# ------------------------------------------------------------------------------------- losses


def _order_statistic_uint8(frames: Array, k: int) -> Array:
  """The k-th smallest (0-based) value along axis 0 of uint8 [N, ...] -> int32 [...].

  Builds the answer one bit at a time, high to low: a candidate bit is kept while at most k values
  lie below it. Eight counting passes instead of a sort: XLA's CPU sort made jnp.median over a
  256-frame batch ~40% of a world-model update.
  """
  values = frames.astype(jnp.int32)
  result = jnp.zeros(values.shape[1:], jnp.int32)
  for bit in range(7, -1, -1):
    candidate = result | (1 << bit)
    below = jnp.sum(values < candidate, axis=0)
    result = jnp.where(below <= k, candidate, result)
  return result


def median_uint8(frames: Array) -> Array:
  """uint8 [N, ...] -> float32 [...]: the median along axis 0 (mean of the two middle values for
  even N, as jnp.median), in the uint8 scale."""
  n = frames.shape[0]
  low = _order_statistic_uint8(frames, (n - 1) // 2)
  high = low if n % 2 else _order_statistic_uint8(frames, n // 2)
  return (low + high).astype(jnp.float32) / 2


def foreground_weights(frames_uint8: Array, cfg) -> Array:
  """uint8 [..., H, W, 3] -> float32 [..., H, W, 1] per-pixel loss weights, mean 1 per frame batch.

  Small moving parts (a cartpole's pole is 1-2 pixels wide at 64x64) hardly move a plain L1 and the
  autoencoder learns to paint background over them. With a fixed camera, the per-pixel median over
  the batch (frames from many episodes and times) is a background estimate; pixels that differ
  from it by more than cfg.foreground_threshold (in [0, 1] intensity) get 1 + foreground_weight.
  """
  frames = frames_uint8.reshape((-1,) + frames_uint8.shape[-3:])  # leading axes: one batch
  x = frames.astype(jnp.float32) / 255.0
  background = median_uint8(frames)[None] / 255.0
  foreground = jnp.max(jnp.abs(x - background), axis=-1, keepdims=True) > cfg.foreground_threshold
  weights = 1.0 + cfg.foreground_weight * foreground.astype(jnp.float32)
  return (weights / jnp.mean(weights)).reshape(frames_uint8.shape[:-1] + (1,))


def reconstruction_loss(frames_uint8: Array, recon: Array, cfg) -> Array:
  """uint8 [B, H, W, 3], float [B, H, W, 3] in [-1, 1] -> scalar l1_weight * L1 + l2_weight * L2
  (means over all pixels and channels, in the [-1, 1] scale; pixels weighted by
  foreground_weights when cfg.foreground_weight > 0)."""
  error = recon.astype(jnp.float32) - frames_to_float(frames_uint8)
  per_pixel = cfg.l1_weight * jnp.abs(error) + cfg.l2_weight * jnp.square(error)
  if cfg.foreground_weight > 0:
    per_pixel = per_pixel * jax.lax.stop_gradient(foreground_weights(frames_uint8, cfg))
  return jnp.mean(per_pixel)


# Non-saturating logistic GAN loss (as StyleGAN, which the reference follows): the generator keeps
# a strong gradient when the discriminator is confident, and R1 is formulated for this loss. Hinge
# would zero the discriminator's gradient on confidently classified patches instead.


def generator_loss(disc_logits_fake: Array) -> Array:
  """Logits [B, ...] of reconstructions -> scalar mean softplus(-D(fake)) = -log sigmoid(D)."""
  return jnp.mean(jax.nn.softplus(-disc_logits_fake.astype(jnp.float32)))


def discriminator_loss(disc_logits_real: Array, disc_logits_fake: Array) -> Array:
  """Logits [B, ...] -> scalar mean softplus(-D(real)) + mean softplus(D(fake))."""
  return (jnp.mean(jax.nn.softplus(-disc_logits_real.astype(jnp.float32)))
          + jnp.mean(jax.nn.softplus(disc_logits_fake.astype(jnp.float32))))


def r1_penalty(disc_params, real_frames: Array, cfg) -> Array:
  """R1 (Mescheder et al. 2018): E_real |grad_x D(x)|^2 with D(x) the image's mean patch logit.

  real_frames uint8 [B, H, W, 3] -> scalar (unweighted; the discriminator loss adds
  0.5 * cfg.r1_weight times it). Differentiable w.r.t. disc_params (double backprop).
  """
  disc = PatchDiscriminator.from_config(cfg)
  images = frames_to_float(real_frames)

  def score(x):
    return jnp.sum(jnp.mean(disc.apply({'params': disc_params}, x), axis=(1, 2)))

  grads = jax.grad(score)(images)  # rows are independent: this is each image's own gradient
  return jnp.mean(jnp.sum(jnp.square(grads), axis=(1, 2, 3)))


def psnr(frames_uint8: Array, recon: Array) -> Array:
  """Mean over the batch of per-image PSNR in dB (pixel range 1)."""
  error = (recon.astype(jnp.float32) - frames_to_float(frames_uint8)) / 2.0
  mse = jnp.mean(jnp.square(error), axis=tuple(range(1, error.ndim)))
  return jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))


def tokenizer_loss(params, vq_stats, disc_params, frames: Array, step: Array, key: Array, cfg,
                   perceptual_fn: Callable[[Array, Array], Array] | None = None):
  """The autoencoder's training loss. Pure; differentiate w.r.t. params.

  params, vq_stats: VQGAN collections; disc_params: discriminator params (not trained here);
  frames uint8 [B, H, W, 3]; step int scalar (the GAN term is weighted by 0 before
  cfg.gan_start_step, via jnp.where, so one compiled function serves the whole run); key: unused
  for now (the model has no dropout), kept so stochastic terms don't change the signature;
  perceptual_fn: fn(frames_a, frames_b) -> [B] (see perceptual.py), needed iff
  cfg.perceptual_weight > 0.
  Returns (loss, (metrics, new_vq_stats)); metrics are float32 scalars.
  """
  del key
  model = VQGAN.from_config(cfg)
  (recon, aux), updated = model.apply({'params': params, 'vq_stats': vq_stats}, frames,
                                      train=True, mutable=['vq_stats'])
  target = frames_to_float(frames)
  error = recon - target
  l1, l2 = jnp.mean(jnp.abs(error)), jnp.mean(jnp.square(error))
  rec = reconstruction_loss(frames, recon, cfg)
  loss = rec + cfg.vq_weight * aux['vq_loss']
  metrics = dict(l1=l1, l2=l2, psnr=psnr(frames, recon), reconstruction=rec,
                 vq=aux['vq_loss'], commitment=aux['commitment_loss'],
                 perplexity=aux['perplexity'], usage=aux['usage'],
                 dead_codes=jnp.sum(dead_codes(updated['vq_stats'], cfg).astype(jnp.float32)))
  if cfg.perceptual_weight > 0:
    if perceptual_fn is None:
      raise ValueError('cfg.perceptual_weight > 0 needs perceptual_fn: pass '
                       'perceptual.load_perceptual_fn(cfg.perceptual_weights_path)')
    perceptual = jnp.mean(perceptual_fn(target, recon))
    loss += cfg.perceptual_weight * perceptual
    metrics['perceptual'] = perceptual
  if cfg.gan_weight > 0:
    logits_fake = PatchDiscriminator.from_config(cfg).apply({'params': disc_params}, recon)
    gan = generator_loss(logits_fake)
    gan_weight = jnp.where(step >= cfg.gan_start_step, cfg.gan_weight, 0.0)
    loss += gan_weight * gan
    metrics.update(gan_generator=gan, gan_weight=gan_weight, gan_term=gan_weight * gan)
  metrics['loss'] = loss
  return loss, (metrics, updated['vq_stats'])


def disc_loss_fn(disc_params, params, vq_stats, frames: Array, cfg):
  """The discriminator's loss on real frames vs (fixed) reconstructions. Pure; differentiate
  w.r.t. disc_params. frames uint8 [B, H, W, 3] -> (loss, metrics). Adds
  0.5 * cfg.r1_weight * R1 when cfg.r1_weight > 0."""
  recon, _ = VQGAN.from_config(cfg).apply({'params': params, 'vq_stats': vq_stats}, frames,
                                          train=False)
  recon = jax.lax.stop_gradient(recon)
  disc = PatchDiscriminator.from_config(cfg)
  logits_real = disc.apply({'params': disc_params}, frames_to_float(frames))
  logits_fake = disc.apply({'params': disc_params}, recon)
  loss = discriminator_loss(logits_real, logits_fake)
  metrics = dict(disc_loss=loss, logits_real=jnp.mean(logits_real),
                 logits_fake=jnp.mean(logits_fake),
                 disc_accuracy=0.5 * (jnp.mean((logits_real > 0).astype(jnp.float32))
                                      + jnp.mean((logits_fake < 0).astype(jnp.float32))))
  if cfg.r1_weight > 0:
    r1 = r1_penalty(disc_params, frames, cfg)
    loss += 0.5 * cfg.r1_weight * r1
    metrics['r1'] = r1
  metrics['loss'] = loss
  return loss, metrics
