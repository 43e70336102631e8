"""Learned reward terms that live with the agent: Plan2Explore disagreement and the AMP discriminator.

The VIPER likelihood itself is NOT here: the agent receives it as a function argument (see loop.py).

AMP reward: a discriminator D on consecutive frame pairs (x_{t-1}, x_t) is trained to tell expert
pairs (label 1) from the agent's replay pairs (label 0) with binary cross-entropy and an R1
gradient penalty on expert inputs. The reward for arriving at x_t is -log(1 - D(x_{t-1}, x_t)) =
softplus(logit): the GAIL/AMP "non-saturating" form, positive and growing as the pair looks expert.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from viper_jax.agent import networks as nets


def disagreement(predictions) -> jax.Array:
  """Plan2Explore bonus: ensemble predictions [K, ..., D] -> std over K, mean over D: [...]."""
  return jnp.std(predictions, 0).mean(-1)


class Discriminator(nn.Module):
  """Frame pairs uint8/float [N, H, W, 6] (x_{t-1} and x_t stacked on channels) -> logits [N]."""
  depth: int

  @nn.compact
  def __call__(self, pairs):
    return nn.Dense(1)(nets.Encoder(self.depth)(pairs))[..., 0]


def frame_pairs(image):
  """image [B, T, H, W, 3] -> pairs [B, T-1, H, W, 6]: (x_{t-1}, x_t) for t = 1..T-1."""
  return jnp.concatenate([image[:, :-1], image[:, 1:]], -1)


def amp_rewards(disc: Discriminator, params, image, is_first):
  """Reward for arriving at each step of replay sequences, and where it is defined.

  image uint8 [B, T, H, W, 3], is_first bool [B, T] -> (reward [B, T], mask [B, T]); step 0 of a
  sequence and episode starts have no previous frame, so their mask is 0 (and reward 0).
  """
  pairs = frame_pairs(image)
  logits = nets.flatten_batch(lambda p: disc.apply({'params': params}, p), pairs, 2)
  reward = jnp.pad(jax.nn.softplus(logits), ((0, 0), (1, 0)))
  mask = jnp.pad(1.0 - is_first[:, 1:].astype(jnp.float32), ((0, 0), (1, 0)))
  return jax.lax.stop_gradient(reward * mask), mask


def discriminator_loss(disc: Discriminator, params, agent_image, agent_is_first, expert_pairs,
                       grad_penalty: float):
  """BCE(expert -> 1, agent -> 0) + R1 penalty on expert inputs. Returns (loss, metrics)."""
  agent_pairs = frame_pairs(agent_image)
  agent_pairs = agent_pairs.reshape((-1,) + agent_pairs.shape[2:])
  mask = (1.0 - agent_is_first[:, 1:].astype(jnp.float32)).reshape(-1)
  expert = expert_pairs.astype(jnp.float32)
  apply = lambda x: disc.apply({'params': params}, x)
  expert_logits, vjp = jax.vjp(apply, expert)
  (input_grad,) = vjp(jnp.ones_like(expert_logits))
  r1 = jnp.mean(jnp.sum((input_grad / 255.0) ** 2, (1, 2, 3)))
  agent_logits = apply(agent_pairs)
  expert_loss = jnp.mean(jax.nn.softplus(-expert_logits))
  agent_loss = jnp.sum(jax.nn.softplus(agent_logits) * mask) / jnp.maximum(mask.sum(), 1)
  loss = expert_loss + agent_loss + grad_penalty * r1
  metrics = {'amp/disc_loss': loss, 'amp/r1': r1,
             'amp/expert_accuracy': jnp.mean(expert_logits > 0),
             'amp/agent_accuracy': jnp.sum((agent_logits < 0) * mask) / jnp.maximum(mask.sum(), 1)}
  return loss, metrics
