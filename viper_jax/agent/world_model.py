"""The DreamerV3 world model: RSSM with discrete latents, decoder, reward/continue heads, KL balancing.

Latent state (a dict pytree): deter float [B, D] (GRU state), stoch float [B, S, C] (one-hot
samples, straight-through), logits float [B, S, C]. Features for heads: concat(deter, stoch) [B, F].

Replay convention: step t holds the frame x_t, the action a_t taken at x_t, and the reward for
arriving at x_t. The RSSM step that produces the latent of x_t therefore consumes a_{t-1}.

Extra reward heads (two-hot, like the reward head) are keyed by name: 'density' learns the VIPER
likelihood reward, 'amp' the discriminator reward. With `disag_heads > 0`, an ensemble predicts the
next stochastic latent from (deter_t, stoch_t, a_t) for Plan2Explore; it never shapes the latent.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from viper_jax.agent import networks as nets
from viper_jax.video import vqgan

sg = jax.lax.stop_gradient


def features(state) -> jax.Array:
  """Latent dict with [..., D] and [..., S, C] -> [..., D + S*C]."""
  stoch = state['stoch']
  return jnp.concatenate([state['deter'], stoch.reshape(stoch.shape[:-2] + (-1,))], -1)


class RSSM(nn.Module):
  deter: int
  hidden: int
  stoch: int
  classes: int
  unimix: float = 0.01

  def setup(self):
    self.img_in = nn.Dense(self.hidden, use_bias=False)
    self.img_in_norm = nn.LayerNorm()
    self.gru = nn.Dense(3 * self.deter, use_bias=False)
    self.gru_norm = nn.LayerNorm()
    self.prior_net = nets.MLP(self.hidden, 1)
    self.prior_logits = nn.Dense(self.stoch * self.classes)
    self.post_net = nets.MLP(self.hidden, 1)
    self.post_logits = nn.Dense(self.stoch * self.classes)
    self.init_deter = self.param('init_deter', nn.initializers.zeros, (self.deter,))

  def _logits(self, net, out, x):
    logits = out(net(x)).reshape(x.shape[:-1] + (self.stoch, self.classes))
    return nets.unimix_logits(logits, self.unimix)

  def initial(self, batch: int):
    """Learned initial state for `batch` sequences; its stoch is the prior's mode (deterministic)."""
    deter = jnp.broadcast_to(jnp.tanh(self.init_deter), (batch, self.deter))
    logits = self._logits(self.prior_net, self.prior_logits, deter)
    stoch = jax.nn.one_hot(jnp.argmax(logits, -1), self.classes)
    return {'deter': deter, 'stoch': stoch, 'logits': logits}

  def _gru(self, x, deter):
    """LayerNorm GRU; update gate bias -1 makes the state keep its memory early in training."""
    parts = self.gru_norm(self.gru(jnp.concatenate([x, deter], -1)))
    reset, cand, update = jnp.split(parts, 3, -1)
    reset = jax.nn.sigmoid(reset)
    cand = jnp.tanh(reset * cand)
    update = jax.nn.sigmoid(update - 1.0)
    return update * cand + (1 - update) * deter

  def img_step(self, state, action, key):
    """Prior step: state (x_{t-1}), action a_{t-1} [B, A] -> prior latent of step t."""
    stoch = state['stoch'].reshape(state['stoch'].shape[:-2] + (-1,))
    x = nn.silu(self.img_in_norm(self.img_in(jnp.concatenate([stoch, action], -1))))
    deter = self._gru(x, state['deter'])
    logits = self._logits(self.prior_net, self.prior_logits, deter)
    return {'deter': deter, 'stoch': nets.sample_onehot_st(key, logits), 'logits': logits}

  def obs_step(self, state, prev_action, embed, is_first, key):
    """Posterior step; is_first [B] resets state and action first. Returns (post, prior)."""
    init = self.initial(is_first.shape[0])
    keep = (~is_first).astype(jnp.float32)
    state = jax.tree.map(lambda s, i: _where(is_first, i, s), state, init)
    prev_action = prev_action * keep[:, None]
    k1, k2 = jax.random.split(key)
    prior = self.img_step(state, prev_action, k1)
    logits = self._logits(self.post_net, self.post_logits,
                          jnp.concatenate([prior['deter'], embed], -1))
    post = {'deter': prior['deter'], 'stoch': nets.sample_onehot_st(k2, logits), 'logits': logits}
    return post, prior


def _where(mask, a, b):
  """mask [B] broadcast against a, b [B, ...]."""
  return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


class WorldModel(nn.Module):
  """Encoder, RSSM, decoder and heads. Apply its methods via the pure functions below."""
  deter: int
  hidden: int
  units: int
  layers: int
  depth: int
  stoch: int
  classes: int
  action_dim: int
  unimix: float = 0.01
  extra_heads: Sequence[str] = ()
  disag_heads: int = 0
  image_size: Sequence[int] = (64, 64)

  def setup(self):
    self.encoder = nets.Encoder(self.depth)
    self.rssm = RSSM(self.deter, self.hidden, self.stoch, self.classes, self.unimix)
    self.decoder = nets.Decoder(self.depth, tuple(self.image_size))
    heads = {'reward': nets.Head(nets.NUM_BINS, self.units, self.layers, zero_init=True),
             'cont': nets.Head(1, self.units, self.layers)}
    for name in self.extra_heads:
      heads[name] = nets.Head(nets.NUM_BINS, self.units, self.layers, zero_init=True)
    self.heads = heads
    if self.disag_heads:
      ensemble = nn.vmap(nets.Head, variable_axes={'params': 0}, split_rngs={'params': True},
                         in_axes=None, axis_size=self.disag_heads)
      self.disag = ensemble(self.stoch * self.classes, self.units, self.layers)

  def __call__(self, image, action, is_first, key):
    """Touches every submodule (used only by init). image [B, H, W, 3]."""
    state = self.rssm.initial(image.shape[0])
    post, _ = self.rssm.obs_step(state, action, self.encode(image), is_first, key)
    feat = features(post)
    out = {name: head(feat) for name, head in self.heads.items()}
    out['image'] = self.decoder(feat)
    if self.disag_heads:
      out['disag'] = self.predict_next(feat, action)
    return out

  def encode(self, image):
    return self.encoder(image)

  def decode(self, feat):
    return self.decoder(feat)

  def head(self, name: str, feat):
    return self.heads[name](feat)

  def predict_next(self, feat, action):
    """Ensemble prediction of the next stoch: [B, F], [B, A] -> [N, B, S*C]."""
    return self.disag(jnp.concatenate([feat, action], -1))

  def initial(self, batch):
    return self.rssm.initial(batch)

  def img_step(self, state, action, key):
    return self.rssm.img_step(state, action, key)

  def obs_step(self, state, prev_action, embed, is_first, key):
    return self.rssm.obs_step(state, prev_action, embed, is_first, key)


def build(model_cfg, action_dim: int, extra_heads: Sequence[str] = (), disag_heads: int = 0,
          image_size=(64, 64)) -> WorldModel:
  m = model_cfg
  return WorldModel(deter=m.deter, hidden=m.hidden, units=m.units, layers=m.layers, depth=m.depth,
                    stoch=m.stoch, classes=m.classes, action_dim=action_dim, unimix=m.unimix,
                    extra_heads=tuple(extra_heads), disag_heads=disag_heads,
                    image_size=tuple(image_size))


def init_params(wm: WorldModel, key, image_size) -> dict:
  image = jnp.zeros((1, *image_size, 3), jnp.uint8)
  k1, k2 = jax.random.split(key)
  return wm.init(k1, image, jnp.zeros((1, wm.action_dim)), jnp.ones((1,), bool), k2)['params']


def observe(wm: WorldModel, params, image, prev_action, is_first, key, state=None):
  """Posterior and prior latents of a sequence.

  image uint8 [B, T, H, W, 3], prev_action [B, T, A] (a_{t-1} at step t), is_first bool [B, T].
  state: latent at step -1 ([B, ...]; default the initial state, reset anyway where is_first).
  Returns (post, prior) latent dicts with leaves [B, T, ...].
  """
  apply = lambda method, *a: wm.apply({'params': params}, *a, method=method)
  batch, length = is_first.shape
  embed = nets.flatten_batch(lambda x: apply(WorldModel.encode, x), image, 2)
  if state is None:
    state = apply(WorldModel.initial, batch)
  swap = lambda x: jnp.swapaxes(x, 0, 1)

  def step(carry, inputs):
    action, emb, first, k = inputs
    post, prior = apply(WorldModel.obs_step, carry, action, emb, first, k)
    return post, (post, prior)

  keys = jax.random.split(key, length)
  _, (post, prior) = jax.lax.scan(step, state, (swap(prev_action), swap(embed), swap(is_first),
                                                keys))
  return jax.tree.map(swap, post), jax.tree.map(swap, prior)


def imagine(wm: WorldModel, params, act_fn: Callable, start, horizon: int, key):
  """Rolls the prior forward under a policy from every start state.

  act_fn(feat [N, F], key) -> action [N, A]; start: latent dict [N, ...].
  Returns (states with leaves [H+1, N, ...] (s_0 = start), actions [H+1, N, A] where a_t is
  taken at s_t; the last one is never executed but its entropy/log-prob is available). Actions
  are returned as act_fn drew them (raw, for the log-prob); the dynamics get them clipped to
  [-1, 1], as the environment and the replay do.
  """
  def step(state, k):
    k1, k2 = jax.random.split(k)
    action = act_fn(features(state), k1)
    following = wm.apply({'params': params}, state, nets.clip_action_st(action), k2,
                         method=WorldModel.img_step)
    return following, (state, action)

  keys = jax.random.split(key, horizon + 1)
  last, (states, actions) = jax.lax.scan(step, start, keys[:-1])
  last_action = act_fn(features(last), keys[-1])
  states = jax.tree.map(lambda s, l: jnp.concatenate([s, l[None]], 0), states, last)
  return states, jnp.concatenate([actions, last_action[None]], 0)


def kl_losses(post, prior, free_nats: float):
  """DreamerV3 KL balancing: (dyn, rep) [B, T], each summed over latents and clipped below."""
  dyn = nets.categorical_kl(sg(post['logits']), prior['logits']).sum(-1)
  rep = nets.categorical_kl(post['logits'], sg(prior['logits'])).sum(-1)
  return jnp.maximum(dyn, free_nats), jnp.maximum(rep, free_nats)


def loss(wm: WorldModel, params, batch, key, model_cfg, targets: dict | None = None):
  """World model loss on a replay batch.

  batch: image uint8 [B, T, H, W, 3], action [B, T, A], reward / is_first / is_terminal [B, T].
  targets: {head name: (values [B, T], mask [B, T])} for the extra reward heads.
  Returns (scalar loss, (post latent [B, T, ...], metrics dict)).
  """
  m = model_cfg
  apply = lambda method, *a: wm.apply({'params': params}, *a, method=method)
  action = batch['action']
  prev_action = jnp.concatenate([jnp.zeros_like(action[:, :1]), action[:, :-1]], 1)
  # Every sampled sequence starts from the learned initial state, whatever its position.
  is_first = batch['is_first'].at[:, 0].set(True)
  post, prior = observe(wm, params, batch['image'], prev_action, is_first, key)
  feat = features(post)
  recon = nets.flatten_batch(lambda f: apply(WorldModel.decode, f), feat, 2)
  target_image = batch['image'].astype(jnp.float32) / 255.0 - 0.5
  squared = (recon - target_image) ** 2
  if m.foreground_weight > 0:
    # Not in DreamerV3: the tokenizer's foreground weighting (see vqgan.foreground_weights), so
    # that a small world model learns the few pixels of cart and pole before the background.
    squared = squared * sg(vqgan.foreground_weights(batch['image'], m))
  losses = {'image': jnp.sum(squared, (-3, -2, -1)) * m.image_scale}
  losses['reward'] = nets.twohot_loss(apply(WorldModel.head, 'reward', feat),
                                      batch['reward']) * m.reward_scale
  cont_logit = apply(WorldModel.head, 'cont', feat)[..., 0]
  cont_target = 1.0 - batch['is_terminal'].astype(jnp.float32)
  losses['cont'] = sigmoid_bce(cont_logit, cont_target) * m.cont_scale
  dyn, rep = kl_losses(post, prior, m.free_nats)
  losses['dyn'], losses['rep'] = dyn * m.dyn_scale, rep * m.rep_scale
  metrics = {}
  for name, (values, mask) in (targets or {}).items():
    head_loss = nets.twohot_loss(apply(WorldModel.head, name, feat), values)
    losses[name] = head_loss * mask
    metrics[f'{name}_reward_mean'] = jnp.sum(values * mask) / jnp.maximum(mask.sum(), 1)
  if wm.disag_heads:
    # Input (deter_t, stoch_t, a_t) predicts stoch_{t+1}; skip pairs that cross an episode start.
    pred = apply(WorldModel.predict_next, sg(feat[:, :-1]), sg(action[:, :-1]))
    next_stoch = post['stoch'][:, 1:]
    target = sg(next_stoch.reshape(next_stoch.shape[:2] + (-1,)))
    valid = 1.0 - is_first[:, 1:].astype(jnp.float32)
    disag = jnp.mean((pred - target[None]) ** 2, (0, -1)) * valid
    losses['disag'] = jnp.concatenate([disag, jnp.zeros_like(disag[:, :1])], 1)
  total = sum(l.mean() for l in losses.values())
  metrics.update({f'wm/{k}_loss': v.mean() for k, v in losses.items()})
  metrics['wm/loss'] = total
  metrics['wm/prior_entropy'] = nets.categorical_entropy(prior['logits']).sum(-1).mean()
  metrics['wm/post_entropy'] = nets.categorical_entropy(post['logits']).sum(-1).mean()
  metrics['wm/dyn_kl'] = dyn.mean()
  return total, (post, metrics)


def sigmoid_bce(logits, labels):
  """Binary cross-entropy of sigmoid(logits) against labels in [0, 1], elementwise, stable."""
  return jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
