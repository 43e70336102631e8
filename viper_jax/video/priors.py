"""The video prior of an experiment config, and the one place that tells prior kinds apart.

Kinds (`config.prior.kind`): 'ar', the autoregressive `transformer.VideoPrior`, and 'maskgit',
`maskgit.MaskGITPrior`. Both take codes int32 [B, T, N] and task ids and give logits
[B, T, N, V] whose log-softmax at the true codes is the reward. What differs by kind (the
module, the training loss, the sampler, whether frames can be scored one at a time with KV
caches) is looked up here through `kind_of(prior)`; nothing else tests a prior's type.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from viper_jax import oneshot
from viper_jax.video import maskgit, transformer


@dataclasses.dataclass(frozen=True)
class PriorKind:
  module: type  # from_config(cfg, vocab_size, tokens_per_frame) -> the flax module
  train_loss: Callable  # (prior, params, batch, key, train) -> mean nats per code
  sample: Callable  # transformer.sample's signature
  streams: bool  # VideoPrior.init_cache / extend exist (reward streaming)


KINDS = {
    'ar': PriorKind(transformer.VideoPrior, transformer.nll_per_code, transformer.sample, True),
    'maskgit': PriorKind(maskgit.MaskGITPrior, maskgit.maskgit_loss, maskgit.sample, False),
}


def kind_of(prior) -> PriorKind:
  """The kind of a prior module (its class attribute `kind`)."""
  return KINDS[prior.kind]


def grid_shape(tokenizer_cfg, image_size) -> tuple[int, int]:
  """(h, w) codes per frame of the tokenizer section for frames of image_size (H, W)."""
  factor = 2 ** (len(tokenizer_cfg.channel_mult) - 1)
  return image_size[0] // factor, image_size[1] // factor


def build_prior(config, num_tasks: int):
  """The prior module of `config.prior.kind` for `num_tasks` tasks (config: tokenizer, env and
  prior sections)."""
  h, w = grid_shape(config.tokenizer, config.env.size)
  cfg = config.prior.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.num_tasks = max(1, num_tasks)
  if cfg.kind not in KINDS:
    raise ValueError(f'prior.kind must be one of {tuple(KINDS)}, got {cfg.kind!r}')
  return KINDS[cfg.kind].module.from_config(cfg, config.tokenizer.codebook_size, h * w)


def init_fn(prior, window: int):
  """key -> random params of a prior (window: frames of the init input; params do not depend
  on it)."""
  codes = jnp.zeros((1, window, prior.tokens_per_frame), jnp.int32)
  return lambda key: prior.init(key, codes, jnp.zeros((1,), jnp.int32))['params']


def init_params(prior, key, window: int = 2):
  """Random params of a prior."""
  return oneshot.run(init_fn(prior, window), key)


def abstract_params(prior):
  """The params' shapes and dtypes (jax.ShapeDtypeStruct pytree), computing no weights."""
  return jax.eval_shape(init_fn(prior, 2), jax.random.key(0))
