"""The agent: networks + optimisers, and the two pure functions the loop jits.

  train_step(state, batch, key) -> (state, metrics)
  policy(state, carry, obs, key, mode) -> (action [N, A], carry)

`state` is a dict pytree (params, optimiser states, slow critics, return normalisers); `carry` is
the per-environment (latent, previous action) that the policy threads through an episode.

Reward terms per `reward_source` (each its own critic and return normaliser):
  env: 'env' (the reward head)          viper: 'density' (head learning the VIPER reward)
  viper+disag: 'density' and 'disag'    amp: 'amp' (head learning the discriminator reward)
The reward head always learns the task reward, so the true return is known whatever the source.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from viper_jax.agent import actor_critic as ac
from viper_jax.agent import learned_rewards as rewards_lib
from viper_jax.agent import world_model as wm_lib
from viper_jax.agent.configs import REWARD_SOURCES

sg = jax.lax.stop_gradient

TERMS = {'env': ('env',), 'viper': ('density',), 'viper+disag': ('density', 'disag'),
         'amp': ('amp',)}


def _optimizer(lr, eps, clip):
  return optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr, eps=eps))


class Agent:
  """Static structure (modules, optimisers, config); all state lives in the pytrees it returns."""

  def __init__(self, config, action_dim: int, discrete: bool, image_size=(64, 64)):
    if config.reward_source not in REWARD_SOURCES:
      raise ValueError(f'agent.reward_source must be one of {REWARD_SOURCES}, got '
                       f'{config.reward_source!r}')
    self.config = config
    self.action_dim, self.discrete = int(action_dim), bool(discrete)
    self.image_size = tuple(image_size)
    self.terms = TERMS[config.reward_source]
    self.weights = {t: float(config.reward_weights[t]) for t in self.terms}
    extra = [t for t in self.terms if t in ('density', 'amp')]
    m = config.model
    self.wm = wm_lib.build(m, self.action_dim, extra_heads=extra,
                           disag_heads=config.disag_heads if 'disag' in self.terms else 0,
                           image_size=self.image_size)
    self.actor = ac.Actor(self.action_dim, self.discrete, m.units, m.layers, config.ac.min_std,
                          config.ac.max_std, m.unimix)
    self.critic = ac.Critic(m.units, m.layers)
    self.disc = rewards_lib.Discriminator(config.amp.depth) if 'amp' in self.terms else None
    o = config.opt
    self.wm_opt = _optimizer(o.wm_lr, o.wm_eps, o.wm_clip)
    self.actor_opt = _optimizer(o.ac_lr, o.ac_eps, o.ac_clip)
    self.critic_opt = _optimizer(o.ac_lr, o.ac_eps, o.ac_clip)
    self.disc_opt = optax.adam(o.disc_lr)

  @property
  def feat_dim(self) -> int:
    m = self.config.model
    return m.deter + m.stoch * m.classes

  def init(self, key) -> dict:
    k_wm, k_actor, k_critic, k_disc = jax.random.split(key, 4)
    wm = wm_lib.init_params(self.wm, k_wm, self.image_size)
    feat = jnp.zeros((1, self.feat_dim))
    actor = self.actor.init(k_actor, feat)['params']
    critic = {t: self.critic.init(jax.random.fold_in(k_critic, i), feat)['params']
              for i, t in enumerate(self.terms)}
    state = {
        'wm': wm, 'wm_opt': self.wm_opt.init(wm),
        'actor': actor, 'actor_opt': self.actor_opt.init(actor),
        'critic': critic, 'slow_critic': jax.tree.map(jnp.copy, critic),
        'critic_opt': self.critic_opt.init(critic),
        'norm': {t: jnp.zeros(2) for t in self.terms},
        'updates': jnp.zeros((), jnp.int32),
    }
    if self.disc is not None:
      pairs = jnp.zeros((1, *self.image_size, 6), jnp.float32)
      state['disc'] = self.disc.init(k_disc, pairs)['params']
      state['disc_opt'] = self.disc_opt.init(state['disc'])
    return state

  # ---------------------------------------------------------------- acting

  def initial_carry(self, num: int):
    """Zeros: the first step of every environment is_first, which resets to the learned state."""
    m = self.config.model
    latent = {'deter': jnp.zeros((num, m.deter)), 'stoch': jnp.zeros((num, m.stoch, m.classes)),
              'logits': jnp.zeros((num, m.stoch, m.classes))}
    return latent, jnp.zeros((num, self.action_dim))

  def policy(self, state, carry, obs, key, mode=False):
    """One step for N environments.

    carry: (latent dict [N, ...], previous action [N, A]), see initial_carry;
    obs: image uint8 [N, H, W, 3], is_first bool [N]; mode: bool (may be a traced array),
    greedy actions instead of samples. Returns (action [N, A], carry): continuous actions in
    [-1, 1], discrete ones one-hot.
    """
    k1, k2 = jax.random.split(key)
    apply = lambda method, *a: self.wm.apply({'params': state['wm']}, *a, method=method)
    latent, prev_action = carry
    embed = apply(wm_lib.WorldModel.encode, obs['image'])
    post, _ = apply(wm_lib.WorldModel.obs_step, latent, prev_action, embed, obs['is_first'], k1)
    dist = self.actor.apply({'params': state['actor']}, wm_lib.features(post))
    action = wm_lib.nets.clip_action_st(ac.sample_action(self.actor, dist, k2, mode))
    return action, (post, action)

  # ---------------------------------------------------------------- learning

  def _imagined_rewards(self, wm_params, feat, actions):
    """{term: [H, N]} rewards for arriving at s_1..s_H."""
    head = lambda name: wm_lib.nets.twohot_decode(self.wm.apply(
        {'params': wm_params}, name, feat[1:], method=wm_lib.WorldModel.head))
    out = {}
    for term in self.terms:
      if term == 'disag':
        pred = self.wm.apply({'params': wm_params}, sg(feat[:-1]), sg(actions[:-1]),
                             method=wm_lib.WorldModel.predict_next)
        out[term] = rewards_lib.disagreement(pred)
      else:
        out[term] = head('reward' if term == 'env' else term)
    return out

  def update_world_model(self, wm_params, wm_opt_state, batch, key, targets):
    """One optimiser step on `world_model.loss`.

    targets: extra reward-head targets by term (see `world_model.loss`), {} for the task reward.
    Returns (new params, new optimiser state, posterior states [B, T, ...], metrics).
    """
    (_, (post, metrics)), grads = jax.value_and_grad(wm_lib.loss, argnums=1, has_aux=True)(
        self.wm, wm_params, batch, key, self.config.model, targets)
    updates, wm_opt_state = self.wm_opt.update(grads, wm_opt_state, wm_params)
    metrics = dict(metrics, **{'wm/grad_norm': optax.tree.norm(grads)})
    return optax.apply_updates(wm_params, updates), wm_opt_state, post, metrics

  def _rollout(self, wm_params, actor_params, critic_params, start, start_cont, key):
    """Imagines `horizon` steps from `start` states [N, ...] with the actor.

    Returns feat [H+1, N, F], actions [H+1, N, A], rewards {term: [H, N]}, continuation
    [H+1, N] (the start's from the data, then the cont head's), values {term: [H+1, N]}.
    """
    act_fn = lambda feat, k: ac.sample_action(
        self.actor, self.actor.apply({'params': actor_params}, sg(feat)), k)
    states, actions = wm_lib.imagine(self.wm, wm_params, act_fn, start, self.config.ac.horizon,
                                     key)
    feat = wm_lib.features(states)
    rewards = self._imagined_rewards(wm_params, feat, actions)
    cont_logit = self.wm.apply({'params': wm_params}, 'cont', feat[1:],
                               method=wm_lib.WorldModel.head)[..., 0]
    cont = jnp.concatenate([start_cont[None], (cont_logit > 0).astype(jnp.float32)], 0)
    values = {t: ac.critic_value(self.critic, critic_params[t], feat) for t in self.terms}
    return feat, actions, rewards, cont, values

  def update_actor(self, state, wm_params, post, is_terminal, key):
    """One actor step on returns imagined from every posterior state of the batch.

    post: posterior states [B, T, ...]; is_terminal [B, T]. Returns (actor params, actor
    optimiser state, imagined feat [H+1, N, F], {term: returns}, normalisers, trajectory
    weights, metrics); the critics learn from the same returns.
    """
    cfg = self.config.ac
    start = jax.tree.map(lambda x: sg(x.reshape((-1,) + x.shape[2:])), post)
    start_cont = 1.0 - is_terminal.reshape(-1).astype(jnp.float32)
    rollout = lambda params: self._rollout(wm_params, params, state['critic'], start, start_cont,
                                           key)
    # REINFORCE needs no gradient through the rollout: imagine once, outside differentiation.
    fixed = jax.tree.map(sg, rollout(state['actor'])) if ac.uses_reinforce(self.actor, cfg) \
        else None

    def objective(actor_params):
      feat, actions, rewards, cont, values = fixed if fixed is not None else rollout(actor_params)
      loss, aux = ac.actor_loss(self.actor, actor_params, feat, actions, rewards, cont, values,
                                state['norm'], self.weights, cfg)
      return loss, (sg(feat), aux)

    (_, (feat, (returns, norms, traj_weight, metrics))), grads = jax.value_and_grad(
        objective, has_aux=True)(state['actor'])
    updates, actor_opt = self.actor_opt.update(grads, state['actor_opt'], state['actor'])
    actor = optax.apply_updates(state['actor'], updates)
    return actor, actor_opt, feat, returns, norms, traj_weight, metrics

  def update_critics(self, state, feat, returns, traj_weight):
    """One step of every term's critic toward its imagined returns; (critics, opt, metrics)."""
    def objective(critic_params):
      losses = {t: ac.critic_loss(self.critic, critic_params[t], state['slow_critic'][t], feat,
                                  returns[t], traj_weight, self.config.ac) for t in self.terms}
      return sum(losses.values()), losses

    (_, losses), grads = jax.value_and_grad(objective, has_aux=True)(state['critic'])
    updates, critic_opt = self.critic_opt.update(grads, state['critic_opt'], state['critic'])
    critic = optax.apply_updates(state['critic'], updates)
    return critic, critic_opt, {f'ac/{t}_critic_loss': l for t, l in losses.items()}

  def update_discriminator(self, state, batch):
    """One AMP discriminator step (agent frames vs expert pairs); (params, opt, metrics)."""
    (_, metrics), grads = jax.value_and_grad(
        rewards_lib.discriminator_loss, argnums=1, has_aux=True)(
            self.disc, state['disc'], batch['image'], batch['is_first'], batch['expert'],
            self.config.amp.grad_penalty)
    updates, disc_opt = self.disc_opt.update(grads, state['disc_opt'], state['disc'])
    return optax.apply_updates(state['disc'], updates), disc_opt, metrics

  def train_step(self, state, batch, key):
    """One update of world model, actor, critics (and discriminator).

    batch: image uint8 [B, T, H, W, 3], action float [B, T, A], reward, is_first, is_last,
    is_terminal [B, T]; 'density' float [B, T] for the viper sources; 'expert' uint8
    [M, H, W, 6] frame pairs for 'amp'.
    """
    k_wm, k_img = jax.random.split(key)
    targets = {}  # what the extra reward heads learn
    if 'density' in self.terms:
      targets['density'] = (batch['density'], jnp.ones_like(batch['density']))
    if self.disc is not None:
      targets['amp'] = rewards_lib.amp_rewards(self.disc, state['disc'], batch['image'],
                                               batch['is_first'])
    wm, wm_opt, post, metrics = self.update_world_model(state['wm'], state['wm_opt'], batch,
                                                        k_wm, targets)
    actor, actor_opt, feat, returns, norms, traj_weight, ac_metrics = self.update_actor(
        state, wm, post, batch['is_terminal'], k_img)
    critic, critic_opt, critic_metrics = self.update_critics(state, feat, returns, traj_weight)
    new_state = {
        'wm': wm, 'wm_opt': wm_opt, 'actor': actor, 'actor_opt': actor_opt,
        'critic': critic, 'critic_opt': critic_opt, 'norm': norms,
        'slow_critic': ac.ema(state['slow_critic'], critic, self.config.ac.slow_critic_rate),
        'updates': state['updates'] + 1,
    }
    metrics = {**metrics, **ac_metrics, **critic_metrics}
    if self.disc is not None:
      new_state['disc'], new_state['disc_opt'], disc_metrics = self.update_discriminator(
          state, batch)
      metrics.update(disc_metrics)
    metrics['loss'] = metrics['wm/loss']
    return new_state, metrics
