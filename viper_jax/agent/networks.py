"""DreamerV3 building blocks: symlog, two-hot, MLP, CNN encoder/decoder, unimix categoricals.

All modules compute in float32. Shapes: B = any leading batch dims, F = features.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# Two-hot bins: 255 equally spaced in symlog space, so rewards and values of any scale (up to
# ~e^20) share one fixed classification target and large returns do not dominate the gradient.
NUM_BINS = 255
BIN_RANGE = 20.0


def symlog(x):
  return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x):
  return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def bins(num_bins: int = NUM_BINS) -> jax.Array:
  return jnp.linspace(-BIN_RANGE, BIN_RANGE, num_bins)


def twohot_encode(x, num_bins: int = NUM_BINS) -> jax.Array:
  """x float [...] -> float [..., num_bins]: weights on the two bins around symlog(x), summing to 1."""
  b = bins(num_bins)
  y = jnp.clip(symlog(x), b[0], b[-1])
  above = jnp.clip(jnp.searchsorted(b, y, side='right'), 1, num_bins - 1)  # index of upper bin
  below = above - 1
  weight_above = (y - b[below]) / (b[above] - b[below])
  return (jax.nn.one_hot(below, num_bins) * (1 - weight_above)[..., None]
          + jax.nn.one_hot(above, num_bins) * weight_above[..., None])


def twohot_decode(logits) -> jax.Array:
  """logits [..., num_bins] -> float [...]: symexp of the expected bin in symlog space."""
  return symexp(jnp.sum(jax.nn.softmax(logits, -1) * bins(logits.shape[-1]), -1))


def twohot_loss(logits, target) -> jax.Array:
  """Cross-entropy of logits [..., K] against two-hot(target [...]) -> [...]. Target is stopped."""
  target = jax.lax.stop_gradient(twohot_encode(target, logits.shape[-1]))
  return -jnp.sum(target * jax.nn.log_softmax(logits, -1), -1)


def unimix_logits(logits, unimix: float = 0.01) -> jax.Array:
  """Mixes 1% uniform into a categorical (logits [..., C]) so no class gets probability ~0.

  That bounds the KL terms and log-probs, which keeps the world model and REINFORCE stable.
  """
  probs = jax.nn.softmax(logits, -1)
  probs = (1 - unimix) * probs + unimix / logits.shape[-1]
  return jnp.log(probs)


def sample_onehot_st(key, logits) -> jax.Array:
  """One-hot sample of a categorical, logits [..., C] -> [..., C], straight-through gradients."""
  probs = jax.nn.softmax(logits, -1)
  sample = jax.nn.one_hot(jax.random.categorical(key, logits, -1), logits.shape[-1])
  return sample + probs - jax.lax.stop_gradient(probs)


def clip_action_st(action) -> jax.Array:
  """Clips actions to [-1, 1] in the forward pass with identity gradients; one-hots are unchanged.

  Only what reaches the dynamics or an environment is clipped: REINFORCE must score the raw
  Gaussian sample, because the log-prob of a clipped one is biased (see actor_critic).
  """
  return action + jax.lax.stop_gradient(jnp.clip(action, -1.0, 1.0) - action)


def categorical_kl(logits_p, logits_q) -> jax.Array:
  """KL(p || q) for categoricals over the last axis, summed over it: [..., C] -> [...]."""
  p = jax.nn.softmax(logits_p, -1)
  return jnp.sum(p * (jax.nn.log_softmax(logits_p, -1) - jax.nn.log_softmax(logits_q, -1)), -1)


def categorical_entropy(logits) -> jax.Array:
  logp = jax.nn.log_softmax(logits, -1)
  return -jnp.sum(jnp.exp(logp) * logp, -1)


class MLP(nn.Module):
  """`layers` x (Dense without bias -> LayerNorm -> SiLU); x [B, F_in] -> [B, units]."""
  units: int
  layers: int

  @nn.compact
  def __call__(self, x):
    for _ in range(self.layers):
      x = nn.Dense(self.units, use_bias=False)(x)
      x = nn.silu(nn.LayerNorm()(x))
    return x


class Head(nn.Module):
  """MLP followed by an output layer; zero_init makes initial predictions exactly 0 (two-hot).

  Zero-initialised reward and critic outputs start at a uniform distribution whose decoded mean is
  0, so early, random rewards and values do not push the actor around.
  """
  out: int
  units: int
  layers: int
  zero_init: bool = False

  @nn.compact
  def __call__(self, x):
    x = MLP(self.units, self.layers)(x)
    init = nn.initializers.zeros if self.zero_init else nn.linear.default_kernel_init
    return nn.Dense(self.out, kernel_init=init)(x)


class Encoder(nn.Module):
  """uint8 image [B, 64, 64, 3] -> embedding [B, 4*4*8*depth]; four stride-2 4x4 convs."""
  depth: int

  @nn.compact
  def __call__(self, image):
    x = image.astype(jnp.float32) / 255.0 - 0.5
    for mult in (1, 2, 4, 8):
      x = nn.Conv(self.depth * mult, (4, 4), strides=(2, 2), padding='SAME', use_bias=False)(x)
      x = nn.silu(nn.LayerNorm()(x))
    return x.reshape(x.shape[:-3] + (-1,))


def depth_to_space(x, block: int = 2):
  """[B, H, W, block*block*C] -> [B, H*block, W*block, C] (sub-pixel upsampling)."""
  b, h, w, c = x.shape
  c //= block * block
  x = x.reshape(b, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c)


class Decoder(nn.Module):
  """features [B, F] -> image mean [B, 64, 64, 3] in the encoder's input space (x/255 - 0.5).

  Each 2x upsampling is a 3x3 conv to 4x the channels followed by depth-to-space (sub-pixel
  convolution). It spans every function of DreamerV3's 4x4 stride-2 transposed conv (each output
  pixel sees a 2x2 input neighbourhood) and is ~6x faster on CPU, where XLA's ConvTranspose
  is slow (depth 16, 512 images, fwd+bwd: 5.4 s vs 0.9 s).
  """
  depth: int
  image_size: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, feat):
    h, w = self.image_size[0] // 16, self.image_size[1] // 16
    x = nn.Dense(h * w * 8 * self.depth)(feat).reshape(feat.shape[:-1] + (h, w, 8 * self.depth))
    for mult in (4, 2, 1):
      x = depth_to_space(nn.Conv(4 * self.depth * mult, (3, 3), padding='SAME',
                                 use_bias=False)(x))
      x = nn.silu(nn.LayerNorm()(x))
    return depth_to_space(nn.Conv(4 * 3, (3, 3), padding='SAME')(x))


def flatten_batch(fn, x, nbatch: int):
  """Applies fn to x with its first `nbatch` axes merged (convs take one batch axis)."""
  lead = x.shape[:nbatch]
  out = fn(x.reshape((-1,) + x.shape[nbatch:]))
  return out.reshape(lead + out.shape[1:])
