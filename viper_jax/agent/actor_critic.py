"""DreamerV3 actor and critics, learned in imagination.

Several reward terms (e.g. 'density' for VIPER, 'disag' for Plan2Explore) each get their OWN
critic, slow critic and return normaliser; their normalised advantages are averaged with config
weights. Summing raw rewards instead would let whichever term has the larger scale dominate.

Shapes: N = imagination starts (batch x length), H = horizon; trajectories hold H+1 states
s_0..s_H, rewards r_1..r_H for arriving at s_1..s_H.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from viper_jax.agent import networks as nets

sg = jax.lax.stop_gradient


def lambda_returns(reward, cont, value, discount: float, lam: float):
  """TD(lambda) returns, computed backwards from the bootstrap value.

  reward [H, ...]: r_{t+1} for arriving at s_{t+1}; cont [H, ...]: continuation flag of s_{t+1};
  value [H+1, ...]: v(s_0..s_H). Returns [H, ...]:
    R_t = r_{t+1} + discount * c_{t+1} * ((1 - lam) * v_{t+1} + lam * R_{t+1}),  R_H = v_H.
  """
  disc = discount * cont

  def step(following, inputs):
    r, d, v_next = inputs
    ret = r + d * ((1 - lam) * v_next + lam * following)
    return ret, ret

  _, returns = jax.lax.scan(step, value[-1], (reward, disc, value[1:]), reverse=True)
  return returns


def update_return_norm(norm, returns, cfg):
  """EMA of the P5 / P95 percentiles of returns. norm float [2] = (low, high) -> new norm."""
  low = jnp.quantile(returns, cfg.norm_low)
  high = jnp.quantile(returns, cfg.norm_high)
  rate = cfg.norm_rate
  return jnp.stack([(1 - rate) * norm[0] + rate * low, (1 - rate) * norm[1] + rate * high])


def return_scale(norm):
  """Divide advantages by max(1, P95 - P5): large returns are scaled down, small ones not up."""
  return jnp.maximum(1.0, norm[1] - norm[0])


class Actor(nn.Module):
  """feat [N, F] -> distribution parameters: continuous (mean, std) [N, A] or logits [N, A]."""
  action_dim: int
  discrete: bool
  units: int
  layers: int
  min_std: float = 0.1
  max_std: float = 1.0
  unimix: float = 0.01

  @nn.compact
  def __call__(self, feat):
    x = nets.MLP(self.units, self.layers)(feat)
    if self.discrete:
      return nets.unimix_logits(nn.Dense(self.action_dim)(x), self.unimix)
    mean, std = jnp.split(nn.Dense(2 * self.action_dim)(x), 2, -1)
    std = (self.max_std - self.min_std) * jax.nn.sigmoid(std + 2.0) + self.min_std
    return jnp.tanh(mean), std


def sample_action(actor: Actor, dist, key, mode=False):
  """A sample (reparameterised / straight-through) or, where `mode` (bool, may be traced), the
  mode. Continuous samples are NOT clipped: with a wide std about a quarter of them leave
  [-1, 1], and scoring clip(a) under the Gaussian biases REINFORCE: (clip(a) - mean)^2 < std^2 on
  average, so any advantage offset (e.g. a lagging critic) shrinks or grows the std by itself.
  Clip with `networks.clip_action_st` before acting or imagining."""
  if actor.discrete:
    sample = nets.sample_onehot_st(key, dist)
    greedy = jax.nn.one_hot(jnp.argmax(dist, -1), actor.action_dim)
  else:
    mean, std = dist
    sample = mean + std * jax.random.normal(key, mean.shape)
    greedy = mean
  if isinstance(mode, bool):
    return greedy if mode else sample
  return jnp.where(mode, greedy, sample)


def log_prob(actor: Actor, dist, action):
  if actor.discrete:
    return jnp.sum(jax.nn.log_softmax(dist, -1) * action, -1)
  mean, std = dist
  return jnp.sum(-0.5 * ((action - mean) / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi),
                 -1)


def entropy(actor: Actor, dist):
  if actor.discrete:
    return nets.categorical_entropy(dist)
  return jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e) + jnp.log(dist[1]), -1)


class Critic(nn.Module):
  """feat [N, F] -> two-hot logits [N, 255] (zero-initialised output)."""
  units: int
  layers: int

  @nn.compact
  def __call__(self, feat):
    return nets.Head(nets.NUM_BINS, self.units, self.layers, zero_init=True)(feat)


def critic_value(critic: Critic, params, feat):
  return nets.twohot_decode(critic.apply({'params': params}, feat))


def uses_reinforce(actor: Actor, cfg) -> bool:
  """Discrete actions always use REINFORCE; continuous ones by `cfg.actor_grad`.

  'reinforce' (DreamerV3's current choice for every action space) needs no gradient through the
  imagined rollout; 'backprop' (DreamerV3's first release, DreamerV2) differentiates the returns
  through dynamics, reward heads and critic, which a young world model can mislead.
  """
  if cfg.actor_grad not in ('reinforce', 'backprop'):
    raise ValueError(f"agent.ac.actor_grad must be 'reinforce' or 'backprop', got "
                     f'{cfg.actor_grad!r}')
  return actor.discrete or cfg.actor_grad == 'reinforce'


def actor_loss(actor: Actor, actor_params, feat, actions, rewards: dict, cont, values: dict,
               norms: dict, weights: dict, cfg):
  """The actor's loss given an imagined trajectory.

  feat [H+1, N, F] (differentiable through the dynamics for 'backprop'), actions
  [H+1, N, A], rewards {term: [H, N]}, cont [H+1, N] (c_0 from data), values {term: [H+1, N]},
  norms {term: float [2] (low, high)} before this batch, weights {term: float}.
  Returns (loss, (returns {term: [H, N]}, updated norms, traj weight [H+1, N], metrics)).
  """
  # Weight of each step: probability that the episode is still running when it is reached.
  traj_weight = sg(jnp.cumprod(cfg.discount * cont, 0) / cfg.discount)
  returns, new_norms, advantage, metrics = {}, {}, 0.0, {}
  total_weight = sum(weights.values())
  for term, reward in rewards.items():
    ret = lambda_returns(reward, cont[1:], values[term], cfg.discount, cfg.lam)
    returns[term] = ret
    new_norms[term] = update_return_norm(norms[term], sg(ret), cfg)
    adv = (ret - sg(values[term][:-1])) / return_scale(new_norms[term])
    advantage = advantage + weights[term] / total_weight * adv
    metrics[f'ac/{term}_return'] = ret.mean()
    metrics[f'ac/{term}_reward'] = reward.mean()
    metrics[f'ac/{term}_return_scale'] = return_scale(new_norms[term])
  dist = actor.apply({'params': actor_params}, sg(feat))
  ent = entropy(actor, dist)[:-1]
  if uses_reinforce(actor, cfg):
    objective = log_prob(actor, dist, sg(actions))[:-1] * sg(advantage)
  else:
    objective = advantage  # backprop through the dynamics and reward heads
  loss = -jnp.mean(traj_weight[:-1] * (objective + cfg.entropy * ent))
  metrics.update({'ac/actor_loss': loss, 'ac/entropy': ent.mean()})
  return loss, (returns, new_norms, traj_weight, metrics)


def critic_loss(critic: Critic, params, slow_params, feat, returns, traj_weight, cfg):
  """Two-hot regression of v(s_t) onto sg(R_t), plus a pull toward the slow critic's value.

  feat [H+1, N, F] (stopped), returns [H, N], traj_weight [H+1, N] -> scalar.
  """
  logits = critic.apply({'params': params}, sg(feat[:-1]))
  slow = sg(critic_value(critic, slow_params, feat[:-1]))
  loss = nets.twohot_loss(logits, sg(returns)) + cfg.slow_critic_reg * nets.twohot_loss(logits, slow)
  return jnp.mean(traj_weight[:-1] * loss)


def ema(slow, fast, rate: float):
  return jax.tree.map(lambda s, f: (1 - rate) * s + rate * f, slow, fast)
