"""The video prior: a block-causal transformer over VQ codes.

Codes are int32 [B, T, N]: T frames of N = h * w codes each (raster order), vocabulary V. They are
flattened to L = T * N slots; slot p predicts code p from the INPUT tokens of slots <= p, where the
input at slot p is code p - 1 (slot 0 holds BOS). So the first code of frame t is predicted at the
slot holding the last code of frame t - 1 and no code is ever dropped from the inputs.

Slot p has frame f(p) = p // N and spatial index s(p) = p % N. Query slot p attends to key slot q iff

    q <= p  and  f(q) > f(p) - context,

i.e. every layer sees a window of the last `context` frames (raster-causal inside the current
frame). Positions: a learned embedding of s(p) is added to the token embedding, and rotary
embeddings (RoPE) on queries and keys use the frame index f(p) only. Rotation angles are taken
relative to an origin inside each window, so scores depend only on frame distance exactly (no
precision loss for long episodes) and the model runs on any T, also far beyond training windows.
Logits of frame t depend on codes back to frame t - num_layers * (context - 1) (plus the last code
of the frame before, through the shift).

Two equivalent evaluation paths:
  * `VideoPrior.__call__`: one pass over [B, T, N] codes. Attention is blockwise per frame (the
    queries of frame t against the keys of frames t - context + 1 .. t), so time and memory are
    linear in T: a 1000-frame episode never builds an L x L mask. Two implementations with the
    same numbers: one vectorised einsum over gathered key windows (GPU/TPU), and a cache-blocked
    lax.map loop (CPU, where memory bandwidth is the limit); `attention_frames_per_step` picks.
    With a fused `attention` ('xla', 'cudnn', 'splash'; see attention.py, config prior.attention)
    the window is cut into query blocks with their key slabs and goes through one kernel call.
  * `VideoPrior.init_cache` / `VideoPrior.extend`: per-layer ring-buffer KV caches of context * N
    slots; `extend` consumes the next K slots' input tokens (K = 1 for sampling, K = N for
    streaming a frame at a time) and gives the same logits as the one-pass forward.

Frame skip (`cfg.frame_skip`) is not handled here: the data and reward layers subsample frames
before they reach the prior (a trajectory is scored as `frame_skip` interleaved sub-sequences).
"""
from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from viper_jax.video import attention, presets
from viper_jax.video.attention import masked_attention as _attend

BOS = -1  # input token id of slot 0 (begin of sequence); `input_tokens` puts it there


def input_tokens(codes: jax.Array) -> jax.Array:
  """Shifted inputs: codes int32 [B, T, N] -> [B, T * N] with slot p = code p - 1, slot 0 = BOS."""
  flat = codes.reshape(codes.shape[0], -1)
  return jnp.concatenate([jnp.full_like(flat[:, :1], BOS), flat[:, :-1]], axis=1)


def log_likelihood_per_frame(logits: jax.Array, codes: jax.Array) -> jax.Array:
  """logits [B, T, N, V], codes int32 [B, T, N] -> float32 [B, T]: sum_n log softmax at the code."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, codes[..., None], axis=-1)[..., 0].sum(-1)


def _rope(x: jax.Array, times: jax.Array, base: float) -> jax.Array:
  """Rotates channel pairs (i, i + d/2) of x [..., d] by angle times * base^(-2i/d).

  `times` (integers, as float) broadcasts against x[..., 0]. Done in float32.
  """
  d = x.shape[-1]
  inv_freq = base ** (-np.arange(0, d, 2, dtype=np.float32) / d)
  angle = jnp.asarray(times, jnp.float32)[..., None] * inv_freq
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).astype(x.dtype)


def _window_attention(q, k, v, context: int, rope_base: float, frames_per_step: int = 0):
  """Block-causal attention with a window of `context` frames, linear in T.

  q, k, v: [B, T, N, H, d] -> [B, T, N, H, d]. Frame t's queries see the keys of frames
  t - context + 1 .. t, raster-causal within frame t. RoPE acts on frame indices with the origin
  inside each block, so scores depend only on frame distances and angles stay small.

  frames_per_step = 0: one vectorised pass (best on GPU/TPU); otherwise the cache-blocked loop of
  `_blocked_window_attention` (best on CPU). Same numbers either way.
  """
  if frames_per_step:
    return _blocked_window_attention(q, k, v, context, rope_base, frames_per_step)
  b, t, n, h, d = q.shape
  w = min(context, t)
  q, k, v = (x.transpose(0, 1, 3, 2, 4) for x in (q, k, v))  # [B, T, H, N, d]
  pad = ((0, 0), (w - 1, 0), (0, 0), (0, 0), (0, 0))
  k, v = jnp.pad(k, pad), jnp.pad(v, pad)
  # Key window of frame t = padded frames t .. t + W - 1, stacked as [B, T, H, W, N, d]. Keys
  # rotate by their frame offset from the query (<= 0), queries stay as they are.
  kw = jnp.stack([k[:, j:j + t] for j in range(w)], axis=3)
  vw = jnp.stack([v[:, j:j + t] for j in range(w)], axis=3)
  # In float32, as in _blocked_window_attention.
  kw = _rope(kw.astype(jnp.float32), np.arange(w)[:, None] - (w - 1.0), rope_base)
  # Mask factors: [T, W] window frame is not front padding; [N, W, N] earlier frame, or the
  # query's own frame and raster-causal. Never multiplied out to [T, N, W, N].
  frame_ok = np.arange(t)[:, None] + np.arange(w)[None] >= w - 1
  causal = (np.arange(w) < w - 1)[None, :, None] | np.tri(n, dtype=bool)[:, None, :]
  out = _attend(q, kw.reshape(b, t, h, w * n, d), vw.reshape(b, t, h, w * n, d),
                (frame_ok[:, None, None, :, None], causal), key_frames=w)
  return out.transpose(0, 1, 3, 2, 4)


def _blocked_window_attention(q, k, v, context: int, rope_base: float, frames_per_step: int):
  """`_window_attention` as a cache-blocked loop. q, k, v: [B, T, N, H, d] -> [B, T, N, H, d].

  On CPU, main-memory bandwidth rather than FLOPs limits the vectorised form (its scores and key
  windows are far larger than the caches). Here a lax.map runs over batch rows and, inside, over
  steps of c = frames_per_step query frames. A step attends to a slab of consecutive key frames
  that ends at its last frame, under a frame-band mask, and is rematerialised in the backward
  pass: its working set stays in cache and no key window is copied out to main memory.
  Early frames see fewer past frames, so query frames are grouped with slabs of growing length
  (c, 2c, 4c, ... up to c + context - 1 frames): a 16-frame training window with context 16
  computes 172 instead of 256 frame pairs (136 are needed).
  """
  b, t, n, h, d = q.shape
  c = min(frames_per_step, t)
  tp = -(-t // c) * c  # whole steps; the extra end frames are never visible to real queries
  q, k, v = (jnp.pad(x.transpose(0, 3, 1, 2, 4), ((0, 0), (0, 0), (0, tp - t), (0, 0), (0, 0)))
             for x in (q, k, v))  # [B, H, Tp, N, d]
  full = min(c + context - 1, tp)  # a slab this long holds the window of any step
  # Groups of steps (query frames start .. end - 1, slab frames): frames < f see at most f frames,
  # so slabs double from c until they hold a whole window.
  groups, start, slab = [], 0, c
  while slab < full:
    groups.append((start, slab, slab))
    start, slab = slab, 2 * slab
  groups.append((start, tp, full))
  tri = np.tri(n, dtype=bool)[None, :, None, :]  # [1, N, 1, N] raster-causal within a frame

  def attend_step(q_row, k_row, v_row, first, slab):
    """Query frames first .. first + c - 1 of one row ([H, Tp, N, d]) -> [H, c, N, d]."""
    key0 = jnp.maximum(first + c - slab, 0)  # slab = key frames key0 .. key0 + slab - 1
    qs = jax.lax.dynamic_slice_in_dim(q_row, first, c, axis=1)
    ks = jax.lax.dynamic_slice_in_dim(k_row, key0, slab, axis=1)
    vs = jax.lax.dynamic_slice_in_dim(v_row, key0, slab, axis=1)
    # RoPE with the origin at the slab's first frame, kept in float32: rounded to bfloat16 the
    # rotated values would depend on the origin, and so differ from the other paths' roundings.
    qs = _rope(qs.astype(jnp.float32), (first - key0 + np.arange(c))[:, None], rope_base)
    ks = _rope(ks.astype(jnp.float32), np.arange(slab)[:, None], rope_base)
    dist = (first - key0) + np.arange(c)[:, None] - np.arange(slab)[None]  # [c, slab] frames
    visible = ((dist > 0) & (dist < context))[:, None, :, None] | ((dist == 0)[:, None, :, None] & tri)
    out = _attend(qs.reshape(h, c * n, d), ks.reshape(h, slab * n, d), vs.reshape(h, slab * n, d),
                  [visible.reshape(c * n, slab, n)], key_frames=slab)
    return out.reshape(h, c, n, d)

  def row(args):
    q_row, k_row, v_row = args
    outs = []
    for start, end, slab in groups:
      step = jax.checkpoint(lambda first, slab=slab: attend_step(q_row, k_row, v_row, first, slab))
      out = jax.lax.map(step, jnp.arange(start, end, c))  # [steps, H, c, N, d]
      outs.append(out.transpose(1, 0, 2, 3, 4).reshape(h, end - start, n, d))
    return jnp.concatenate(outs, axis=1)

  out = jax.lax.map(row, (q, k, v))[:, :, :t]  # [B, H, T, N, d]
  return out.transpose(0, 2, 3, 1, 4)


def _fused_window_attention(q, k, v, context: int, rope_base: float, frames_per_block: int,
                            implementation: str):
  """`_window_attention` through `attention.fused_attention`. q, k, v: [B, T, N, H, d] -> same.

  Query frames go in blocks of c = frames_per_block; block s (frames s*c .. s*c + c - 1) attends
  to the slab of c + W - 1 key frames ending at its last frame, stored newest first: the frames
  before frame 0 (front padding) then come last, where the per-block key count cuts them, and one
  static [c * N, slab * N] mask serves every block. RoPE origin: the block's first query frame.
  """
  b, t, n, h, d = q.shape
  w, c = min(context, t), min(frames_per_block, t)
  tp = -(-t // c) * c
  steps, slab = tp // c, c + w - 1
  q = _rope(jnp.pad(q, ((0, 0), (0, tp - t), (0, 0), (0, 0), (0, 0))).reshape(b, steps, c, n, h, d),
            np.arange(c)[:, None, None], rope_base)
  pad = ((0, 0), (w - 1, tp - t), (0, 0), (0, 0), (0, 0))
  newest_first = slab - 1 - np.arange(slab)  # slot r holds slab frame slab - 1 - r (time order)
  frames = np.arange(steps)[:, None] * c + newest_first[None]  # [steps, slab] padded frame ids
  offset = newest_first - (w - 1)  # frame offset of slot r from the block's first query frame
  kb, vb = (jnp.pad(x, pad)[:, frames] for x in (k, v))  # [B, steps, slab, N, H, d]
  kb = _rope(kb, offset[:, None, None], rope_base)
  dist = np.arange(c)[:, None] - offset[None]  # [c, slab] query frame minus key frame
  tri = np.tri(n, dtype=bool)[:, None, :]  # [N, 1, N] raster-causal within a frame
  mask = (((dist > 0) & (dist < context))[:, None, :, None]
          | ((dist == 0)[:, None, :, None] & tri)).reshape(c * n, slab * n)
  first_real = np.maximum(0, w - 1 - np.arange(steps) * c)  # time-order slab index of frame 0
  lengths = jnp.asarray(np.tile((slab - first_real) * n, b), jnp.int32)  # [B * steps]
  out = attention.fused_attention(
      q.reshape(b * steps, c * n, h, d), kb.reshape(b * steps, slab * n, h, d),
      vb.reshape(b * steps, slab * n, h, d), mask, lengths, implementation=implementation)
  return out.reshape(b, tp, n, h, d)[:, :t]


def _cached_attention(q, k, v, q_slots, k_slots, tokens_per_frame: int, context: int,
                      rope_base: float, implementation: str = 'reference') -> jax.Array:
  """Attention of K new queries over cached + new keys.

  q: [B, K, H, d]; k, v: [B, S + K, H, d] (the ring buffer followed by the K new entries);
  q_slots int32 [K], k_slots int32 [S + K] absolute slot ids (-1: empty). Returns [B, K, H, d].
  The mask depends on the slots (traced), so 'splash' runs as 'xla' here.
  """
  fq, fk = q_slots // tokens_per_frame, k_slots // tokens_per_frame
  origin = fq[0]  # any origin works: scores depend on fk - fq only
  if implementation == 'reference':  # rotated in float32, as the reference one-pass paths do
    q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  q = _rope(q, (fq - origin)[:, None], rope_base)
  k = _rope(k, (fk - origin)[:, None], rope_base)
  mask = ((k_slots[None] >= 0) & (k_slots[None] <= q_slots[:, None])
          & (fk[None] > fq[:, None] - context))
  return attention.fused_attention(q, k, v, mask, implementation=implementation)


def _frames_per_step(requested: int | None, implementation: str, tokens_per_frame: int,
                     exact_rope: bool) -> int:
  """Query frames per attention step (see VideoPrior.attention_frames_per_step).

  Fused blocks of one query frame rotate every key by its offset from the query frame and leave
  the queries as they are, like the streaming path; in bfloat16 (exact_rope False) that keeps
  one pass, chunks and streaming rounding the same values. Longer blocks, for float32 only, give
  the kernels at least 128 queries per block.
  """
  if implementation != 'reference':
    return requested or (-(-128 // tokens_per_frame) if exact_rope else 1)
  if requested is None:
    return 2 if jax.default_backend() == 'cpu' else 0
  return requested


class AdaLayerNorm(nn.Module):
  """LayerNorm, then per-task modulation y * (1 + Dense(onehot)) + Dense(onehot) when num_tasks.

  The task Dense kernels are zero-initialised: an untrained conditioned model equals the
  unconditioned one. task: float [B, num_tasks] one-hot, or None (no modulation).
  """
  num_tasks: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, task: jax.Array | None) -> jax.Array:
    y = nn.LayerNorm(dtype=self.dtype, name='norm')(x)
    if not self.num_tasks:
      return y
    width = x.shape[-1]
    # Created even when task is None, so params never depend on how the model was initialised.
    scale = self.param('task_scale', nn.initializers.zeros, (self.num_tasks, width))
    bias = self.param('task_bias', nn.initializers.zeros, (self.num_tasks, width))
    if task is None:
      return y
    shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (width,)
    scale, bias = (task @ scale).reshape(shape), (task @ bias).reshape(shape)
    return (y * (1 + scale) + bias).astype(self.dtype)


class Block(nn.Module):
  """Pre-LN transformer block: x + Attn(AdaLN(x)), then x + MLP(AdaLN(x)) with GELU.

  Dropout (train only) on the two residual branches. Not on attention probabilities nor on the
  4x wider MLP hidden layer: on CPU their random bits cost more than the rest of the dropout.
  """
  width: int
  num_heads: int
  mlp_dim: int
  dropout: float
  context: int
  tokens_per_frame: int
  rope_base: float
  num_tasks: int
  dtype: Any
  frames_per_step: int = 0  # see _window_attention ('reference') / _fused_window_attention
  attention: str = 'reference'  # an attention.IMPLEMENTATIONS name other than 'auto'

  def setup(self):
    dense = functools.partial(nn.Dense, dtype=self.dtype)
    self.attn_norm = AdaLayerNorm(self.num_tasks, self.dtype)
    self.qkv = dense(3 * self.width)
    self.attn_out = dense(self.width)
    self.mlp_norm = AdaLayerNorm(self.num_tasks, self.dtype)
    self.mlp_in = dense(self.mlp_dim)
    self.mlp_out = dense(self.width)
    self.drop = nn.Dropout(self.dropout)

  def _qkv(self, x, task):
    """x [..., D] -> q, k, v, each [..., H, D / H]."""
    qkv = self.qkv(self.attn_norm(x, task))
    qkv = qkv.reshape(x.shape[:-1] + (3, self.num_heads, self.width // self.num_heads))
    return qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]

  def _mlp(self, x, task, train):
    h = self.mlp_out(nn.gelu(self.mlp_in(self.mlp_norm(x, task))))
    return x + self.drop(h, deterministic=not train)

  def __call__(self, x: jax.Array, task: jax.Array | None, train: bool = False) -> jax.Array:
    """x [B, T, N, D] -> [B, T, N, D], all frames at once."""
    b, t, n, _ = x.shape
    q, k, v = self._qkv(x, task)  # [B, T, N, H, d]
    if self.attention == 'reference':
      a = _window_attention(q, k, v, self.context, self.rope_base, self.frames_per_step)
    else:
      a = _fused_window_attention(q, k, v, self.context, self.rope_base, self.frames_per_step,
                                  self.attention)
    a = a.reshape(b, t, n, self.width)
    x = x + self.drop(self.attn_out(a), deterministic=not train)
    return self._mlp(x, task, train)

  def extend(self, x, k_cache, v_cache, q_slots, k_slots, task):
    """x [B, K, D]; caches [B, S, H, d] -> (x [B, K, D], new k [B, K, H, d], new v [B, K, H, d]).

    The new keys and values are cast to the caches' dtype before they are used, so a step sees
    exactly what later steps will read back from the cache."""
    q, k, v = self._qkv(x, task)  # [B, K, H, d]
    k, v = k.astype(k_cache.dtype), v.astype(v_cache.dtype)
    a = _cached_attention(q, jnp.concatenate([k_cache, k], 1), jnp.concatenate([v_cache, v], 1),
                          q_slots, k_slots, self.tokens_per_frame, self.context, self.rope_base,
                          self.attention)
    x = x + self.attn_out(a.reshape(x.shape[:-1] + (self.width,)))
    return self._mlp(x, task, False), k, v


class VideoPrior(nn.Module):
  """Block-causal transformer prior over VQ codes (see the module docstring for the model).

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
  # Query frames per step of the cache-blocked attention loop (see `_window_attention`); 0: one
  # vectorised pass; None: 2 on CPU, 0 on GPU/TPU. With a fused `attention`, query frames per
  # block (None or 0: enough frames for 128 queries). Changes speed only, never the numbers.
  attention_frames_per_step: int | None = None
  attention: str = 'auto'  # see viper_jax/video/attention.py (config field prior.attention)

  @classmethod
  def from_config(cls, cfg, vocab_size: int, tokens_per_frame: int) -> 'VideoPrior':
    """Builds the prior from a `presets.prior(...)` ConfigDict."""
    if cfg.width % cfg.num_heads or (cfg.width // cfg.num_heads) % 2:
      raise ValueError(f'width {cfg.width} must split into {cfg.num_heads} heads of even size')
    if cfg.context < 1:
      raise ValueError(f'context must be >= 1 frames, got {cfg.context}')
    return cls(vocab_size=vocab_size, tokens_per_frame=tokens_per_frame,
               num_layers=cfg.num_layers, width=cfg.width, num_heads=cfg.num_heads,
               mlp_dim=cfg.mlp_dim, dropout=cfg.dropout, context=cfg.context,
               task_conditioning=cfg.task_conditioning, num_tasks=cfg.num_tasks,
               rope_base=float(cfg.rope_base), dtype=presets.compute_dtype(cfg.dtype),
               attention=attention.resolve(cfg.get('attention', 'auto'),
                                           presets.compute_dtype(cfg.dtype)))

  def setup(self):
    embed_init = nn.initializers.normal(0.02)
    # One extra row: the BOS input token (id BOS = -1 maps to row vocab_size).
    self.token_embed = nn.Embed(self.vocab_size + 1, self.width, embedding_init=embed_init,
                                dtype=self.dtype)
    self.spatial_embed = self.param('spatial_embed', embed_init,
                                    (self.tokens_per_frame, self.width))
    num_tasks = self.num_tasks if self.task_conditioning else 0
    impl = attention.resolve(self.attention, self.dtype)
    self.blocks = [
        Block(self.width, self.num_heads, self.mlp_dim, self.dropout, self.context,
              self.tokens_per_frame, self.rope_base, num_tasks, self.dtype,
              _frames_per_step(self.attention_frames_per_step, impl, self.tokens_per_frame,
                               jnp.dtype(self.dtype) == jnp.float32),
              impl, name=f'block{i}')
        for i in range(self.num_layers)]
    # The final norm and the head compute in float32: bfloat16 logits would round by up to 1/256
    # of their size, far more than the evaluation paths differ by otherwise.
    self.final_norm = AdaLayerNorm(num_tasks, jnp.float32)
    self.head = nn.Dense(self.vocab_size, dtype=jnp.float32)
    self.embed_drop = nn.Dropout(self.dropout)

  def _embed(self, tokens, spatial_index, train):
    """Input tokens int32 [B, ...] (BOS allowed), spatial index int [...] -> [B, ..., D]."""
    tokens = jnp.where(tokens == BOS, self.vocab_size, tokens)
    x = self.token_embed(tokens) + self.spatial_embed[spatial_index].astype(self.dtype)
    # The residual stream stays float32; layers compute in `dtype`.
    return self.embed_drop(x.astype(jnp.float32), deterministic=not train)

  def _task(self, task_ids):
    """task_ids int [B] or None -> one-hot float32 [B, num_tasks], or None (unconditioned).

    Ignored when the model is not task-conditioned; ids outside [0, num_tasks) get no modulation
    (range checks belong to the callers that see concrete values).
    """
    if task_ids is None or not self.task_conditioning:
      return None
    return jax.nn.one_hot(task_ids, self.num_tasks, dtype=jnp.float32)

  def _logits(self, x, task):
    return self.head(self.final_norm(x, task)).astype(jnp.float32)

  def __call__(self, codes: jax.Array, task_ids: jax.Array | None = None,
               train: bool = False) -> jax.Array:
    """codes int32 [B, T, N], task_ids int32 [B] or None -> logits float32 [B, T, N, V].

    logits[:, t, i] are the unnormalised log p(codes[:, t, i] | earlier codes in the window, task).
    task_ids None on a conditioned model skips the modulation (equal to any task while untrained).
    train=True enables dropout (needs the 'dropout' rng).
    """
    chex.assert_rank(codes, 3)
    b, t, n = codes.shape
    if n != self.tokens_per_frame:
      raise ValueError(f'expected {self.tokens_per_frame} codes per frame, got shape {codes.shape}')
    if task_ids is not None:
      chex.assert_shape(task_ids, (b,))
    x = self._embed(input_tokens(codes).reshape(b, t, n), jnp.arange(n), train)
    task = self._task(task_ids)
    for block in self.blocks:
      x = block(x, task, train)
    return self._logits(x, task)

  @nn.nowrap
  def init_cache(self, batch_size: int) -> dict[str, jax.Array]:
    """Empty decoding state (needs no params; call on the module directly).

    k, v: [num_layers, B, S, H, d] ring buffers of S = context * N slots in the compute dtype
    (keys stored unrotated);
    slots: int32 [S] absolute slot id held by each buffer entry (-1: empty), shared by the batch;
    index: int32 [] the next slot to process.
    """
    size = self.context * self.tokens_per_frame
    shape = (self.num_layers, batch_size, size, self.num_heads, self.width // self.num_heads)
    return dict(k=jnp.zeros(shape, self.dtype), v=jnp.zeros(shape, self.dtype),
                slots=jnp.full((size,), -1, jnp.int32), index=jnp.zeros((), jnp.int32))

  def extend(self, cache: dict[str, jax.Array], tokens: jax.Array,
             task_ids: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Processes the next K slots given their INPUT tokens.

    cache: from `init_cache` or a previous `extend`; tokens int32 [B, K]: inputs of slots
    index .. index + K - 1, i.e. BOS for slot 0 and then code p - 1 for slot p (`input_tokens`
    builds them from codes); task_ids int32 [B] or None. Returns logits float32 [B, K, V] (the
    predictions of codes index .. index + K - 1) and the new cache. Any K >= 1 (static under jit):
    1 for sampling, N (frame-aligned) for streaming. Memory is bounded: K + context * N keys.
    """
    chex.assert_rank(tokens, 2)
    k_len, size = tokens.shape[1], cache['slots'].shape[0]
    q_slots = cache['index'] + jnp.arange(k_len, dtype=jnp.int32)
    k_slots = jnp.concatenate([cache['slots'], q_slots])
    x = self._embed(tokens, q_slots % self.tokens_per_frame, False)
    task = self._task(task_ids)
    # The K new entries go to ring positions slot % S; when K > S only the last S survive.
    keep = slice(max(0, k_len - size), None)
    ring = q_slots[keep] % size
    new_k, new_v = [], []
    for i, block in enumerate(self.blocks):
      x, k, v = block.extend(x, cache['k'][i], cache['v'][i], q_slots, k_slots, task)
      new_k.append(cache['k'][i].at[:, ring].set(k[:, keep]))
      new_v.append(cache['v'][i].at[:, ring].set(v[:, keep]))
    cache = dict(k=jnp.stack(new_k), v=jnp.stack(new_v),
                 slots=cache['slots'].at[ring].set(q_slots[keep]), index=cache['index'] + k_len)
    return self._logits(x, task), cache


@functools.partial(jax.jit, static_argnames=('prior_module', 'num_frames', 'batch_size'))
def sample(params, prior_module: VideoPrior, key: jax.Array, task_ids: jax.Array | None,
           num_frames: int, prompt_codes: jax.Array | None = None, temperature: float = 1.0,
           batch_size: int | None = None) -> jax.Array:
  """Autoregressive sampling with the KV cache, one code per step.

  params: the model's params (the 'params' collection, or the whole variables dict);
  task_ids int32 [B] or None; prompt_codes int32 [B, P, N] or None (P < num_frames), fed a frame
  at a time; temperature 0 is greedy argmax (traced: changing it does not recompile); batch_size
  only when neither task_ids nor prompt_codes gives B. Returns codes int32 [B, num_frames, N]
  whose first P frames are the prompt.
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

  def extend(cache, tokens):
    return prior_module.apply(variables, cache, tokens, task_ids, method=VideoPrior.extend)

  cache = prior_module.init_cache(b)
  last = jnp.full((b,), BOS, jnp.int32)
  if num_prompt:
    inputs = input_tokens(prompt_codes).reshape(b, num_prompt, n).transpose(1, 0, 2)
    cache, _ = jax.lax.scan(lambda c, tok: (extend(c, tok)[1], None), cache, inputs)
    last = prompt_codes[:, -1, -1].astype(jnp.int32)

  def step(carry, key):
    cache, token = carry
    logits, cache = extend(cache, token[:, None])
    logits = logits[:, 0]
    scaled = logits / jnp.maximum(temperature, 1e-6)
    code = jnp.where(temperature > 0, jax.random.categorical(key, scaled),
                     jnp.argmax(logits, -1)).astype(jnp.int32)
    return (cache, code), code

  num_new = num_frames - num_prompt
  _, codes = jax.lax.scan(step, (cache, last), jax.random.split(key, num_new * n))
  codes = codes.T.reshape(b, num_new, n)
  if num_prompt:
    codes = jnp.concatenate([prompt_codes.astype(jnp.int32), codes], axis=1)
  return codes
