"""Masked softmax attention for the priors, with one implementation per platform.

`prior.attention` picks the implementation:
  * 'reference': plain XLA ops (einsum, select, float32 softmax), in the layouts that the priors
    built first (`masked_attention`); runs everywhere, the default on CPU;
  * 'xla': `jax.nn.dot_product_attention(implementation='xla')`;
  * 'cudnn': `jax.nn.dot_product_attention(implementation='cudnn')`, cuDNN flash attention (GPU,
    bfloat16/float16 only);
  * 'splash': the Pallas splash-attention kernel (TPU; on other platforms it runs in Pallas
    interpret mode, which is slow and meant for tests);
  * 'auto': 'reference' on CPU, 'cudnn' on GPU ('xla' when computing in float32), 'splash' on TPU.
All give the same numbers up to float rounding (tests/test_attention.py). The fused ones take the
layout of `fused_attention`: a batch of short query blocks, each against its own key block, with
one static mask shared by every block and a per-block count of valid keys.

Scores, softmax and its normaliser are float32 in every implementation; probabilities meet the
values in the values' dtype.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ('auto', 'reference', 'xla', 'cudnn', 'splash')
_NEG = -1e30  # masked score; finite, so that a masked-out entry never produces NaN


def resolve(name: str, dtype) -> str:
  """The implementation that `name` means on this platform for compute dtype `dtype`."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f'prior.attention must be one of {IMPLEMENTATIONS}, got {name!r}')
  if name != 'auto':
    return name
  backend = jax.default_backend()
  if backend == 'gpu':
    return 'cudnn' if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else 'xla'
  return 'splash' if backend == 'tpu' else 'reference'


def masked_attention(q, k, v, masks, key_frames: int = 1):
  """The reference kernel. q: [..., Q, d]; k, v: [..., S, d] -> [..., Q, d].

  masks: bool arrays, each broadcastable to the scores viewed as [..., Q, key_frames, S /
  key_frames]; a key is seen where all are true. Viewing the keys as frames lets callers pass
  small factors of the mask, which XLA broadcasts inside the select instead of materialising.
  """
  d = q.shape[-1]
  scores = jnp.einsum('...qd,...kd->...qk', q * (d ** -0.5), k,
                      preferred_element_type=jnp.float32)
  framed = scores.reshape(scores.shape[:-1] + (key_frames, -1))
  for mask in masks:
    framed = jnp.where(mask, framed, _NEG)
  scores = framed.reshape(scores.shape)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum('...qk,...kd->...qd', probs, v)


def fused_attention(q, k, v, mask, kv_lengths=None, *, implementation: str):
  """Attention of query blocks over key blocks. q: [B, Q, H, d]; k, v: [B, S, H, d] -> [B, Q, H, d].

  mask: bool [Q, S], the same for every block and head: a numpy array (static, what 'splash'
  needs) or a jax array (then 'splash' uses 'xla'). kv_lengths: int32 [B] or None; keys at
  positions >= kv_lengths[b] are not seen by block b. Every query must see at least one key.
  implementation: 'reference', 'xla', 'cudnn' or 'splash' (see the module docstring).
  """
  if implementation == 'splash' and isinstance(mask, np.ndarray):
    return _splash(q, k, v, mask, kv_lengths)
  if implementation == 'reference':
    seen = jnp.asarray(mask)[None, None]  # [1, 1, Q, S]
    if kv_lengths is not None:
      seen = seen & (jnp.arange(k.shape[1]) < kv_lengths[:, None, None, None])
    out = masked_attention(*(x.transpose(0, 2, 1, 3) for x in (q, k, v)), [seen[..., None, :]])
    return out.transpose(0, 2, 1, 3)
  impl = 'xla' if implementation == 'splash' else implementation
  if impl not in ('xla', 'cudnn'):
    raise ValueError(f'unknown attention implementation {implementation!r}')
  return jax.nn.dot_product_attention(
      q, k, v, mask=jnp.asarray(mask)[None, None], key_value_seq_lengths=kv_lengths,
      implementation=impl)


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _block(size: int) -> int:
  """The largest of 512, 256, 128 that divides size (a multiple of 128)."""
  return next(b for b in (512, 256, 128) if size % b == 0)


def _splash_kernel(mask: np.ndarray, heads: int, interpret: bool):
  """The splash kernel of a static [Q, S] mask (built per trace: it holds arrays of the trace)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  bq, bkv = _block(mask.shape[0]), _block(mask.shape[1])
  sizes = sk.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=bkv, block_q_dkv=bq,
                        block_kv_dkv=bkv, block_kv_dkv_compute=bkv, block_q_dq=bq, block_kv_dq=bkv)
  return sk.make_splash_mha(sm.MultiHeadMask([sm.NumpyMask(mask)] * heads), block_sizes=sizes,
                            head_shards=1, q_seq_shards=1, interpret=interpret), sk.SegmentIds


def _splash(q, k, v, mask: np.ndarray, kv_lengths):
  """fused_attention through Pallas splash attention. Sequences are padded to multiples of 128
  (the kernel's lane width); padded keys are cut by segment ids, padded queries dropped."""
  b, nq, h, d = q.shape
  ns = k.shape[1]
  qp, sp = _round_up(nq, 128), _round_up(ns, 128)
  full = np.ones((qp, sp), bool)  # padded query rows see every (real) key: no empty rows
  full[:nq, :ns] = mask
  full[:nq, ns:] = False
  kernel, segment_ids = _splash_kernel(full, h, jax.default_backend() != 'tpu')
  lengths = jnp.full((b,), ns, jnp.int32) if kv_lengths is None else kv_lengths
  to_heads = lambda x, size: jnp.pad(x, ((0, 0), (0, size - x.shape[1]), (0, 0), (0, 0))
                                     ).transpose(0, 2, 1, 3)  # [B, H, size, d]
  qh = to_heads(q * jnp.asarray(d ** -0.5, q.dtype), qp)
  kh, vh = to_heads(k, sp), to_heads(v, sp)
  kv_segment = (jnp.arange(sp)[None] >= lengths[:, None]).astype(jnp.int32)  # 1: not seen

  def one(qb, kb, vb, seg):
    return kernel(qb, kb, vb, segment_ids=segment_ids(q=jnp.zeros((qp,), jnp.int32), kv=seg))

  out = jax.vmap(one)(qh, kh, vh, kv_segment)  # [B, H, Qp, d]
  return out.transpose(0, 2, 1, 3)[:, :nq].astype(q.dtype)
