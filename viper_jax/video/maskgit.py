"""A MaskGIT video prior: masked-token prediction per frame, block-causal across frames.

Selected with `config.prior.kind = 'maskgit'` (train_prior.build_prior); same tokens, config
section, call signature and reward API as the autoregressive `transformer.VideoPrior`.

Codes are int32 [B, T, N] (N = h * w codes per frame), vocabulary V; input id V is [MASK]. Every
frame is processed twice, so that one pass predicts every frame of a trajectory:

  * a CLEAN copy (the true codes): context for later frames;
  * a QUERY copy (codes, with the ones to predict replaced by [MASK]): the logits come from here.

Attention per layer, with a window of `context` frames:

  clean tokens of frame t  see  clean tokens of frames t - context + 1 .. t
  query tokens of frame t  see  clean tokens of frames t - context + 1 .. t - 1, query tokens of t

bidirectional inside a frame, causal across frames; clean tokens never see query tokens. So the
logits of frame t depend on the codes of frames t - num_layers * (context - 1) .. t - 1 and on
the UNMASKED query codes of frame t, never on later frames nor on the masked codes of frame t.
Positions: learned spatial embeddings, a learned clean/query embedding, and rotary time (RoPE on
frame offsets from the query frame, as in transformer.py); task conditioning via AdaLayerNorm.
The key window of frame t is gathered per frame (W clean frames + its own query frame), so time
and memory are linear in T; each frame costs about twice the AR prior (2N tokens).

Likelihood estimate. With mask=None (scoring) the query copy of every frame is fully masked, so

    logits[:, t, n] = log p(x_{t,n} | x_{<t}, task)      (up to normalisation), independently per n,

and the reward library's sum over n of log softmax at the true codes is

    log p~(x_t | x_<t) = sum_n log p(x_{t,n} | x_<t),

a product of per-token MARGINALS given the past. This is not the exact joint log p(x_t | x_<t)
that the autoregressive prior gives (it ignores the dependencies between the codes of one frame,
a pseudo-likelihood); it is the MaskGIT likelihood estimate that the VIPER paper's AR vs MaskGIT
ablation compares. Streaming scoring with KV caches is AR-only; one-pass, chunked and window
scoring work unchanged.

Training (`maskgit_loss`): per (row, frame) a mask ratio r = cos(u * pi / 2), u ~ U(0, 1)
(clipped below at `min_mask_ratio`), ceil(r * N) >= 1 random query codes masked, the rest given;
cross-entropy on the masked codes only. Sampling (`sample`): frame by frame, MaskGIT's iterative
decoding (start fully masked; each step samples all masked codes and keeps the most confident,
leaving N * cos(pi / 2 * step / steps) masked).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from viper_jax.video import attention, presets, transformer
from viper_jax.video.attention import masked_attention as _attend
from viper_jax.video.transformer import AdaLayerNorm, _rope


def _two_stream_attention(q, k, v, context: int, rope_base: float):
  """q, k, v: [B, T, 2N, H, d], per frame its N clean tokens then its N query tokens -> same.

  Frame t's keys: the clean tokens of frames t - W + 1 .. t (window slots 0 .. W - 1, W =
  min(context, T), front-padded) and its own query tokens (slot W). Clean queries see slots
  0 .. W - 1; query queries see slots 0 .. W - 2 and W. Keys rotate by their frame offset from
  the query frame (slot j < W: j - W + 1; slot W: 0), queries stay as they are.
  """
  b, t, n2, h, d = q.shape
  n, w = n2 // 2, min(context, t)
  q, k, v = (x.transpose(0, 1, 3, 2, 4) for x in (q, k, v))  # [B, T, H, 2N, d]
  pad = ((0, 0), (w - 1, 0), (0, 0), (0, 0), (0, 0))
  k_clean, v_clean = jnp.pad(k[..., :n, :], pad), jnp.pad(v[..., :n, :], pad)
  kw = jnp.stack([k_clean[:, j:j + t] for j in range(w)] + [k[..., n:, :]], axis=3)
  vw = jnp.stack([v_clean[:, j:j + t] for j in range(w)] + [v[..., n:, :]], axis=3)
  kw = _rope(kw, np.append(np.arange(w) - (w - 1.0), 0.0)[:, None], rope_base)  # [B,T,H,W+1,N,d]
  # Mask factors: [T, W + 1] slot is not front padding; [2N, W + 1] which stream sees which slot.
  slot = np.arange(w + 1)
  frame_ok = np.arange(t)[:, None] + slot[None] >= w - 1
  sees = np.concatenate([np.broadcast_to(slot < w, (n, w + 1)),
                         np.broadcast_to((slot < w - 1) | (slot == w), (n, w + 1))])
  out = _attend(q, kw.reshape(b, t, h, (w + 1) * n, d), vw.reshape(b, t, h, (w + 1) * n, d),
                (frame_ok[:, None, None, :, None], sees[:, :, None]), key_frames=w + 1)
  return out.transpose(0, 1, 3, 2, 4)


def _fused_two_stream_attention(q, k, v, context: int, rope_base: float, implementation: str):
  """`_two_stream_attention` through `attention.fused_attention`: q, k, v [B, T, 2N, H, d] -> same.

  One block per frame: its 2N queries against its own query tokens (slot 0) and then its clean
  window newest first (slot r: frame t - r + 1), so that the front padding comes last, where
  the per-frame key count cuts it, and one static [2N, (W + 1) N] mask serves every frame.
  """
  b, t, n2, h, d = q.shape
  n, w = n2 // 2, min(context, t)
  pad = ((0, 0), (w - 1, 0), (0, 0), (0, 0), (0, 0))
  frames = np.arange(t)[:, None] + (w - 1 - np.arange(w))[None]  # [T, W] padded, newest first
  clean_k, clean_v = (jnp.pad(x[:, :, :n], pad)[:, frames] for x in (k, v))  # [B, T, W, N, H, d]
  kb = jnp.concatenate([k[:, :, None, n:], clean_k], axis=2)  # [B, T, W + 1, N, H, d]
  vb = jnp.concatenate([v[:, :, None, n:], clean_v], axis=2)
  kb = _rope(kb, -np.maximum(np.arange(w + 1) - 1, 0.0)[:, None, None], rope_base)
  slot = np.arange(w + 1)
  sees = np.concatenate([np.broadcast_to(slot >= 1, (n, w + 1)),  # clean: frames t - W + 1 .. t
                         np.broadcast_to(slot != 1, (n, w + 1))])  # query: own frame, < t
  mask = np.repeat(sees, n, axis=1)  # [2N, (W + 1) N]
  lengths = jnp.asarray(np.tile((1 + np.minimum(np.arange(t) + 1, w)) * n, b), jnp.int32)
  out = attention.fused_attention(
      q.reshape(b * t, n2, h, d), kb.reshape(b * t, (w + 1) * n, h, d),
      vb.reshape(b * t, (w + 1) * n, h, d), mask, lengths, implementation=implementation)
  return out.reshape(b, t, n2, h, d)


class MaskGITBlock(transformer.Block):
  """transformer.Block (pre-LN attention + MLP, AdaLN, dropout) with two-stream attention."""

  def __call__(self, x: jax.Array, task: jax.Array | None, train: bool = False) -> jax.Array:
    """x [B, T, 2N, D] (clean then query tokens of each frame) -> [B, T, 2N, D]."""
    b, t, n2, _ = x.shape
    q, k, v = self._qkv(x, task)  # [B, T, 2N, H, d]
    if self.attention == 'reference':
      a = _two_stream_attention(q, k, v, self.context, self.rope_base)
    else:
      a = _fused_two_stream_attention(q, k, v, self.context, self.rope_base, self.attention)
    a = a.reshape(b, t, n2, self.width)
    x = x + self.drop(self.attn_out(a), deterministic=not train)
    return self._mlp(x, task, train)


class MaskGITPrior(nn.Module):
  """MaskGIT prior over VQ codes (see the module docstring). Attributes named as VideoPrior's.

  Params are float32; activations use `dtype`; logits come back float32.
  """
  vocab_size: int
  tokens_per_frame: int
  num_layers: int = 8
  width: int = 256
  num_heads: int = 8
  mlp_dim: int = 1024
  dropout: float = 0.0
  context: int = 16
  task_conditioning: bool = False
  num_tasks: int = 1
  rope_base: float = 10_000.0
  dtype: Any = jnp.float32
  min_mask_ratio: float = 0.0  # training: mask ratio = max(min_mask_ratio, cos(u * pi / 2))
  attention: str = 'auto'  # see viper_jax/video/attention.py (config field prior.attention)

  @classmethod
  def from_config(cls, cfg, vocab_size: int, tokens_per_frame: int) -> 'MaskGITPrior':
    """Builds the prior from a `presets.prior(...)` ConfigDict (kind 'maskgit')."""
    base = transformer.VideoPrior.from_config(cfg, vocab_size, tokens_per_frame)  # validates
    ratio = float(cfg.get('maskgit_min_mask_ratio', 0.0))
    if not 0.0 <= ratio <= 1.0:
      raise ValueError(f'maskgit_min_mask_ratio must lie in [0, 1], got {ratio}')
    return cls(vocab_size=vocab_size, tokens_per_frame=tokens_per_frame,
               num_layers=base.num_layers, width=base.width, num_heads=base.num_heads,
               mlp_dim=base.mlp_dim, dropout=base.dropout, context=base.context,
               task_conditioning=base.task_conditioning, num_tasks=base.num_tasks,
               rope_base=base.rope_base, dtype=base.dtype, min_mask_ratio=ratio,
               attention=base.attention)

  @property
  def mask_id(self) -> int:
    """Input id of [MASK]."""
    return self.vocab_size

  def setup(self):
    embed_init = nn.initializers.normal(0.02)
    self.token_embed = nn.Embed(self.vocab_size + 1, self.width, embedding_init=embed_init,
                                dtype=self.dtype)  # row vocab_size: [MASK]
    self.spatial_embed = self.param('spatial_embed', embed_init,
                                    (self.tokens_per_frame, self.width))
    self.stream_embed = self.param('stream_embed', embed_init, (2, self.width))  # clean, query
    num_tasks = self.num_tasks if self.task_conditioning else 0
    self.blocks = [
        MaskGITBlock(width=self.width, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                     dropout=self.dropout, context=self.context,
                     tokens_per_frame=self.tokens_per_frame, rope_base=self.rope_base,
                     num_tasks=num_tasks, dtype=self.dtype,
                     attention=attention.resolve(self.attention, self.dtype), name=f'block{i}')
        for i in range(self.num_layers)]
    self.final_norm = AdaLayerNorm(num_tasks, jnp.float32)  # float32 logits (transformer.py)
    self.head = nn.Dense(self.vocab_size, dtype=jnp.float32)
    self.embed_drop = nn.Dropout(self.dropout)

  def __call__(self, codes: jax.Array, task_ids: jax.Array | None = None, train: bool = False,
               mask: jax.Array | None = None) -> jax.Array:
    """codes int32 [B, T, N], task_ids int32 [B] or None, mask bool [B, T, N] or None ->
    logits float32 [B, T, N, V].

    mask: the query codes replaced by [MASK] (True) or given as input (False); None masks every
    code, so logits[:, t] predict frame t from frames < t only (scoring). Logits at unmasked
    positions are returned too but carry no meaning. task_ids None on a conditioned model skips
    the modulation. train=True enables dropout (needs the 'dropout' rng).
    """
    chex.assert_rank(codes, 3)
    b, t, n = codes.shape
    if n != self.tokens_per_frame:
      raise ValueError(f'expected {self.tokens_per_frame} codes per frame, got shape {codes.shape}')
    if task_ids is not None:
      chex.assert_shape(task_ids, (b,))
    if mask is None:
      query = jnp.full_like(codes, self.mask_id)
    else:
      chex.assert_shape(mask, codes.shape)
      query = jnp.where(mask, self.mask_id, codes)
    tokens = jnp.concatenate([codes, query], axis=2)  # [B, T, 2N]
    position = (jnp.tile(self.spatial_embed, (2, 1))
                + jnp.repeat(self.stream_embed, n, axis=0)).astype(self.dtype)
    x = (self.token_embed(tokens) + position).astype(jnp.float32)  # float32 residual stream
    x = self.embed_drop(x, deterministic=not train)
    task = None
    if task_ids is not None and self.task_conditioning:
      task = jax.nn.one_hot(task_ids, self.num_tasks, dtype=jnp.float32)
    for block in self.blocks:
      x = block(x, task, train)
    return self.head(self.final_norm(x[:, :, n:], task)).astype(jnp.float32)


def random_mask(key: jax.Array, shape: tuple[int, int, int],
                min_ratio: float = 0.0) -> jax.Array:
  """Training mask bool [B, T, N]: per (row, frame) ceil(r * N) random codes, r = max(min_ratio,
  cos(u * pi / 2)), u ~ U(0, 1); at least one code masked."""
  b, t, n = shape
  ratio_key, order_key = jax.random.split(key)
  ratio = jnp.maximum(min_ratio, jnp.cos(jax.random.uniform(ratio_key, (b, t)) * (math.pi / 2)))
  count = jnp.clip(jnp.ceil(ratio * n), 1, n).astype(jnp.int32)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(order_key, shape), axis=-1), axis=-1)
  return rank < count[..., None]


def maskgit_loss(prior: MaskGITPrior, params, batch, key: jax.Array,
                 train: bool = False) -> jax.Array:
  """Mean cross-entropy (nats) over the masked codes of batch {'codes' [B,T,N], 'task_id' [B]}
  (and the rows of optional batch['weight'] [B] that are > 0)."""
  codes = batch['codes']
  mask_key, dropout_key = jax.random.split(key)
  mask = random_mask(mask_key, codes.shape, prior.min_mask_ratio)
  logits = prior.apply({'params': params}, codes, batch['task_id'], train=train, mask=mask,
                       rngs={'dropout': dropout_key} if train else None)
  logp = jax.nn.log_softmax(logits, axis=-1)
  token_lp = jnp.take_along_axis(logp, codes[..., None], axis=-1)[..., 0]
  if 'weight' in batch:  # padding rows (weight 0) drop out
    mask = mask & (batch['weight'] > 0)[:, None, None]
  return -jnp.sum(jnp.where(mask, token_lp, 0.0)) / jnp.sum(mask)


@functools.partial(jax.jit, static_argnames=('prior_module', 'num_frames', 'batch_size', 'steps'))
def sample(params, prior_module: MaskGITPrior, key: jax.Array, task_ids: jax.Array | None,
           num_frames: int, prompt_codes: jax.Array | None = None, temperature: float = 1.0,
           batch_size: int | None = None, steps: int = 8) -> jax.Array:
  """Frame-by-frame MaskGIT decoding, `steps` forward passes per frame.

  Arguments as `transformer.sample`. Each frame starts fully masked; step s (1 .. steps) samples
  every masked code (temperature 0: argmax), then keeps the most confident (highest log-prob)
  and re-masks floor(N * cos(pi / 2 * s / steps)) of them, so the last step fills the frame.
  Returns codes int32 [B, num_frames, N] whose first P frames are the prompt.
  """
  variables = params if 'params' in params else {'params': params}
  n = prior_module.tokens_per_frame
  if prompt_codes is not None:
    b, num_prompt = prompt_codes.shape[:2]
  else:
    b = task_ids.shape[0] if task_ids is not None else batch_size
    num_prompt = 0
  if b is None:
    raise ValueError('sample needs task_ids, prompt_codes or batch_size to know the batch size')
  if not 0 <= num_prompt < num_frames:
    raise ValueError(f'prompt has {num_prompt} frames; expected fewer than num_frames={num_frames}')
  codes = jnp.zeros((b, num_frames, n), jnp.int32)
  if num_prompt:
    codes = codes.at[:, :num_prompt].set(prompt_codes.astype(jnp.int32))

  def decode_frame(t, carry):
    codes, key = carry

    def step(s, state):
      frame, known, key = state
      key, sample_key = jax.random.split(key)
      # Frames after t do not matter (causal); every other frame's query copy is masked.
      mask = jnp.ones(codes.shape, bool).at[:, t].set(~known)
      logits = prior_module.apply(variables, codes.at[:, t].set(frame), task_ids, mask=mask)
      logits = jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False)  # [B, N, V]
      drawn = jnp.where(temperature > 0,
                        jax.random.categorical(sample_key, logits / jnp.maximum(temperature, 1e-6)),
                        jnp.argmax(logits, -1)).astype(jnp.int32)
      frame = jnp.where(known, frame, drawn)
      logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), frame[..., None], -1)[..., 0]
      confidence = jnp.where(known, jnp.inf, logp)
      remaining = jnp.floor(n * jnp.cos(math.pi / 2 * (s + 1) / steps)).astype(jnp.int32)
      rank = jnp.argsort(jnp.argsort(confidence, axis=-1), axis=-1)  # 0: least confident
      return frame, rank >= remaining, key

    frame, _, _ = jax.lax.fori_loop(
        0, steps, step, (jnp.zeros((b, n), jnp.int32), jnp.zeros((b, n), bool),
                         jax.random.fold_in(key, t)))
    return codes.at[:, t].set(frame), key

  codes, _ = jax.lax.fori_loop(num_prompt, num_frames, decode_frame, (codes, key))
  return codes
