"""Agent configs: `agent_config(size)` for 'xs' (CPU tests), 's', 'm', 'l' (DreamerV3 sizes).

The experiment config attaches the result as `config.agent`, next to `config.env` and `config.task`.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

# DreamerV3 model sizes (64x64 images): rssm deter / hidden units, MLP units and layers, CNN depth,
# and the discrete latent (stoch groups x classes). 'xs' is a CPU test size, not a DreamerV3 size.
SIZES = {
    'xs': dict(deter=64, hidden=64, units=64, layers=1, depth=8, stoch=8, classes=8),
    's': dict(deter=512, hidden=512, units=512, layers=2, depth=32, stoch=32, classes=32),
    'm': dict(deter=1024, hidden=640, units=640, layers=3, depth=48, stoch=32, classes=32),
    'l': dict(deter=2048, hidden=768, units=768, layers=4, depth=64, stoch=32, classes=32),
}

REWARD_SOURCES = ('env', 'viper', 'viper+disag', 'amp')


def agent_config(size: str = 's') -> ml_collections.ConfigDict:
  if size not in SIZES:
    raise ValueError(f'agent size must be one of {sorted(SIZES)}, got {size!r}')
  tiny = size == 'xs'
  c = ml_collections.ConfigDict()
  c.size = size
  # Which reward the actor maximises: 'env' (task reward), 'viper' (video likelihood, learned by
  # a 'density' head), 'viper+disag' (plus Plan2Explore disagreement), 'amp' (discriminator).
  c.reward_source = 'env'
  # Advantage weights per reward term; only the terms of the chosen source are used.
  c.reward_weights = ml_collections.ConfigDict({'env': 1.0, 'density': 1.0, 'disag': 1.0,
                                                'amp': 1.0})
  c.reward_checkpoint = config_dict.placeholder(str)  # VIPER reward model dir ('viper*' sources)
  c.reward_task = config_dict.placeholder(str)  # task name in the reward model; None: config.task
  c.disag_heads = 8

  c.env_steps = 2000 if tiny else 1_000_000  # policy (agent) steps over all envs
  c.num_envs = 1 if tiny else 4
  c.env_mode = 'serial'  # BatchedEnv mode: 'serial' or 'process'
  c.train_ratio = 8 if tiny else 64  # replayed steps per policy step
  c.batch_size = 2 if tiny else 16
  c.batch_length = 8 if tiny else 64
  c.replay_capacity = 10_000 if tiny else 1_000_000
  c.prefill = 50 if tiny else 2500
  c.eval_every = 1000 if tiny else 10_000
  c.eval_episodes = 1
  c.checkpoint_every = 1000 if tiny else 10_000
  c.log_every = 100 if tiny else 1000
  c.keep_checkpoints = 2
  c.seed = 0
  # Episodes are scored by the VIPER model padded at the end to a multiple of this (causality
  # makes end padding harmless; fixed lengths keep the reward model from recompiling). None: the
  # frames of a full episode, env.time_limit + 1 (the reset frame counts), so no frame is wasted.
  c.viper_pad_to = config_dict.placeholder(int)

  # Data parallelism (agent/mesh.py): devices per host (0: all), the number of hosts the run
  # expects, and sequences per device (None: batch_size is each host's batch).
  c.mesh = ml_collections.ConfigDict({'devices': 1, 'hosts': 1,
                                      'per_device_batch': config_dict.placeholder(int)})

  m = c.model = ml_collections.ConfigDict(SIZES[size])
  m.unimix = 0.01
  m.free_nats = 1.0
  m.dyn_scale = 0.5
  m.rep_scale = 0.1
  m.image_scale = 1.0
  # Extra image-loss weight on pixels that differ from the batch's per-pixel median (moving parts
  # under a fixed camera); 0 is DreamerV3's plain squared error. Threshold in [0, 1] intensity.
  m.foreground_weight = 0.0
  m.foreground_threshold = 0.1
  m.reward_scale = 1.0
  m.cont_scale = 1.0

  a = c.ac = ml_collections.ConfigDict()
  a.horizon = 15
  a.discount = 1 - 1 / 333
  a.lam = 0.95
  a.actor_grad = 'reinforce'  # continuous actions: 'reinforce' or 'backprop' (see actor_critic)
  a.entropy = 3e-4
  a.slow_critic_rate = 0.02
  a.slow_critic_reg = 1.0
  a.norm_rate = 0.01
  a.norm_low = 0.05
  a.norm_high = 0.95
  a.min_std = 0.1
  a.max_std = 1.0

  o = c.opt = ml_collections.ConfigDict()
  o.wm_lr, o.wm_eps, o.wm_clip = 1e-4, 1e-8, 1000.0
  o.ac_lr, o.ac_eps, o.ac_clip = 3e-5, 1e-5, 100.0
  o.disc_lr = 1e-4

  # AMP: discriminator on consecutive frame pairs, expert episodes from an EpisodeStore.
  amp = c.amp = ml_collections.ConfigDict()
  amp.expert_root = config_dict.placeholder(str)  # store root; None: <workdir>/episodes
  amp.expert_split = 'train'
  amp.max_expert_episodes = 100
  amp.depth = 8 if tiny else 16
  amp.grad_penalty = 1.0
  return c
