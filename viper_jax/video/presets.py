"""Size presets for the tokenizer and the prior, as ml_collections ConfigDicts.

Experiment configs start from these (`config.tokenizer = presets.tokenizer('dmc')`) and override
fields. Sizes: 'tiny' (tests, CPU seconds), 'small' (CPU quickstart), 'dmc' and 'atari' (paper).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

TOKENIZER_SIZES = ('tiny', 'small', 'dmc', 'atari')
PRIOR_SIZES = ('tiny', 'small', 'dmc', 'atari')


def tokenizer(size: str = 'dmc') -> ml_collections.ConfigDict:
  """VQ-GAN settings. A 64x64 frame becomes a (64 / 2**(len(channel_mult) - 1))^2 code grid."""
  if size not in TOKENIZER_SIZES:
    raise ValueError(f'unknown tokenizer size {size!r}; expected one of {TOKENIZER_SIZES}')
  c = ml_collections.ConfigDict()
  c.size = size
  # Architecture (reference DMC: ch 128, mult 1,2,2,2 -> 8x8 grid; Atari: mult 1,2,2 -> 16x16).
  c.channels = {'tiny': 16, 'small': 32, 'dmc': 128, 'atari': 128}[size]
  c.channel_mult = (1, 2, 2) if size == 'atari' else (1, 2, 2, 2)
  c.num_res_blocks = 1
  c.attention_in_middle = size != 'tiny'  # self-attention in the bottleneck block only
  # Quantizer.
  c.codebook_size = {'tiny': 32, 'small': 128, 'dmc': 256, 'atari': 1024}[size]
  c.code_dim = {'tiny': 8, 'small': 32, 'dmc': 64, 'atari': 64}[size]
  c.quantizer = 'ema'  # 'ema' (EMA codebook updates) | 'straight_through' (codebook by gradient)
  c.ema_decay = 0.99
  c.commitment = 0.25
  c.restart_dead_codes = True  # codes unused for long are moved onto encoder outputs
  # EMA usage share below which a code counts as dead: a quarter of the uniform share.
  c.dead_code_threshold = 0.25 / c.codebook_size
  # Losses.
  c.l1_weight = 1.0
  c.l2_weight = 0.0
  # Up-weight pixels that differ from the batch's median frame (thin moving parts; fixed cameras).
  c.foreground_weight = {'tiny': 0.0, 'small': 10.0, 'dmc': 10.0, 'atari': 0.0}[size]
  c.foreground_threshold = 0.1
  c.vq_weight = 1.0
  c.gan_weight = 0.1
  c.gan_start_step = {'tiny': 1_000_000, 'small': 2_000, 'dmc': 20_000, 'atari': 20_000}[size]
  c.disc_channels = {'tiny': 16, 'small': 32, 'dmc': 64, 'atari': 64}[size]
  c.disc_layers = 3
  c.r1_weight = 0.0  # R1 gradient penalty on real frames for the discriminator
  c.perceptual_weight = 0.0  # needs pretrained weights from a local file: off by default
  c.perceptual_weights_path = config_dict.placeholder(str)
  c.dtype = 'auto'  # 'auto': bfloat16 on accelerators, float32 on CPU
  # Training.
  c.train = ml_collections.ConfigDict()
  c.train.steps = {'tiny': 20, 'small': 1500, 'dmc': 200_000, 'atari': 200_000}[size]
  c.train.batch_size = {'tiny': 8, 'small': 32, 'dmc': 128, 'atari': 128}[size]
  c.train.learning_rate = {'tiny': 1e-3, 'small': 3e-4, 'dmc': 1e-4, 'atari': 1e-4}[size]
  c.train.disc_learning_rate = c.train.learning_rate
  c.train.weight_decay = 1e-4
  c.train.warmup_steps = {'tiny': 0, 'small': 100, 'dmc': 1000, 'atari': 1000}[size]
  c.train.decay = 'constant'  # after warm-up: 'constant' or 'cosine' (to a tenth at train.steps)
  c.train.grad_clip = 1.0
  c.train.log_every = {'tiny': 5, 'small': 50, 'dmc': 100, 'atari': 100}[size]
  c.train.image_every = {'tiny': 10, 'small': 500, 'dmc': 5000, 'atari': 5000}[size]
  c.train.checkpoint_every = {'tiny': 10, 'small': 500, 'dmc': 5000, 'atari': 5000}[size]
  c.train.keep_checkpoints = 2
  c.train.seed = 0
  return c


def prior(size: str = 'dmc') -> ml_collections.ConfigDict:
  """Block-causal video transformer settings (reference DMC: 8 layers, 256 wide, 8 heads)."""
  if size not in PRIOR_SIZES:
    raise ValueError(f'unknown prior size {size!r}; expected one of {PRIOR_SIZES}')
  c = ml_collections.ConfigDict()
  c.size = size
  c.kind = 'ar'  # 'ar' (autoregressive, video/transformer.py) | 'maskgit' (video/maskgit.py)
  c.num_layers = {'tiny': 2, 'small': 4, 'dmc': 8, 'atari': 8}[size]
  c.width = {'tiny': 32, 'small': 128, 'dmc': 256, 'atari': 512}[size]
  c.num_heads = {'tiny': 2, 'small': 4, 'dmc': 8, 'atari': 8}[size]
  c.mlp_dim = 4 * c.width
  c.dropout = {'tiny': 0.0, 'small': 0.0, 'dmc': 0.1, 'atari': 0.0}[size]
  c.context = {'tiny': 3, 'small': 8, 'dmc': 16, 'atari': 4}[size]  # frames each layer sees
  c.frame_skip = {'tiny': 1, 'small': 1, 'dmc': 1, 'atari': 4}[size]
  c.task_conditioning = size != 'atari'  # adaptive LayerNorm on a task id
  c.num_tasks = 1  # set from the data (number of tasks in the episode store)
  c.rope_base = 10_000.0
  c.dtype = 'auto'  # 'auto': bfloat16 on accelerators, float32 on CPU
  # Attention kernels (video/attention.py): 'auto' (CPU: 'reference', GPU: 'cudnn', TPU: 'splash')
  # | 'reference' | 'xla' | 'cudnn' | 'splash'. Speed only: every one gives the same numbers.
  c.attention = 'auto'
  # kind 'maskgit' only: training mask ratio = max(this, cos(u * pi / 2)), u ~ U(0, 1).
  c.maskgit_min_mask_ratio = 0.0
  c.train = ml_collections.ConfigDict()
  c.train.steps = {'tiny': 20, 'small': 2000, 'dmc': 800_000, 'atari': 800_000}[size]
  c.train.batch_size = {'tiny': 4, 'small': 16, 'dmc': 64, 'atari': 32}[size]
  c.train.window = c.context  # frames per training window
  c.train.learning_rate = {'tiny': 1e-3, 'small': 5e-4, 'dmc': 1e-4, 'atari': 1e-4}[size]
  c.train.warmup_steps = {'tiny': 0, 'small': 100, 'dmc': 5000, 'atari': 5000}[size]
  c.train.decay = 'constant'  # after warm-up: 'constant' or 'cosine' (to a tenth at train.steps)
  c.train.weight_decay = 0.0
  c.train.grad_clip = 1.0
  c.train.ema_decay = {'tiny': 0.0, 'small': 0.99, 'dmc': 0.9999, 'atari': 0.9999}[size]
  c.train.log_every = {'tiny': 5, 'small': 50, 'dmc': 100, 'atari': 100}[size]
  c.train.eval_every = {'tiny': 10, 'small': 500, 'dmc': 5000, 'atari': 5000}[size]
  c.train.checkpoint_every = {'tiny': 10, 'small': 500, 'dmc': 5000, 'atari': 5000}[size]
  c.train.sample_every = {'tiny': 10, 'small': 1000, 'dmc': 20_000, 'atari': 20_000}[size]
  c.train.keep_checkpoints = 2
  c.train.seed = 0
  return c


def reward() -> ml_collections.ConfigDict:
  """The `reward` section: how `viper_jax.reward` turns prior log-likelihoods into rewards."""
  c = ml_collections.ConfigDict()
  c.reduce = 'sum'  # over a frame's tokens: 'sum' (nats per frame) | 'mean' (nats per token)
  # 'conditional': log p(x_t | x_<t). 'joint' (ablation, the reference code's default): the sum of
  # the conditionals of the last `prior.context` frames, t - context + 1 .. t.
  c.likelihood = 'conditional'
  # 'none' | 'standardize' ((lp - mean) / std) | 'minmax' (clip((lp - min) / (max - min), 0, 1))
  # | 'floor' (max(lp, the expert's `floor_percentile`-th percentile per step): far from the
  # expert a likelihood ranks frames arbitrarily, e.g. an empty track above a fallen pole, and an
  # agent can settle there) | 'floor_unit' (the floored reward shifted and scaled so the floor is 0
  # and the expert's median 1: a raw log-likelihood of ~-400 per step varies by a few percent,
  # which the agent's symlog reward and value heads hardly resolve), with statistics of expert
  # episodes written by `viper reward-stats`.
  c.scale = 'none'
  c.floor_percentile = 20
  c.chunk_frames = 256  # one-pass chunk length (frames per sub-sequence): bounds memory
  c.encode_batch = 256  # frames per tokenizer call
  c.window_batch = 16  # mode='window': steps scored per forward
  return c


def compute_dtype(name: str):
  """'auto' -> bfloat16 on GPU/TPU, float32 on CPU; otherwise the named dtype."""
  import jax
  import jax.numpy as jnp
  if name == 'auto':
    return jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
  return jnp.dtype(name)
