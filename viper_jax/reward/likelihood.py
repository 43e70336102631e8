"""The VIPER reward: log-likelihood of an agent's frames under the frozen video model.

Public API (stable; other projects import it):

    from viper_jax import reward
    model = reward.load(checkpoint_dir)                 # frozen tokenizer + prior + config
    lp = model.log_likelihood(frames, task_ids)         # uint8 [B, T, H, W, 3] -> float32 [B, T]
    fn = reward.log_likelihood_fn(config)               # pure fn(params, frames, task_ids) -> [B, T]
    state = model.init_stream(batch_size, task_ids)     # streaming, a frame at a time:
    state, lp_t = model.stream_step(state, frame)       #   uint8 [B, H, W, 3] -> float32 [B]

Time alignment (DESIGN.md): lp[:, t] = log p(x_t | x_<t, task), the reward for ARRIVING at x_t;
for a transition (x_t, a_t, x_{t+1}) the reward is lp[:, t + 1]. lp[:, 0] scores the first frame
from nothing but the task.

Modes, all giving the same numbers for 'one_pass' (tested):
  * one pass: the block-causal prior scores every frame of a trajectory in one forward;
    trajectories longer than `reward.chunk_frames` go in chunks that overlap by the prior's
    receptive field, so memory is bounded and the result is unchanged;
  * streaming: per-layer rolling KV caches, one frame per call, for scoring as an env produces;
  * mode='window': each frame scored from exactly its last `prior.context` frames (a fresh
    sequence per step, as the reference implementation does) - T times the work, kept for
    fidelity comparisons.

Frame skip s: a trajectory is s interleaved sub-sequences (frames j, j + s, j + 2s, ...), each
scored on its own. Atari score regions are zeroed before tokenizing when `data.mask_score`.
Reduction over a frame's tokens ('sum' nats, or 'mean'), 'conditional' or 'joint' likelihood
(an ablation: the sum of the last `context` conditionals, like the reference's default) and scaling ('none'; 'standardize',
'minmax', 'floor' and 'floor_unit' with statistics of the expert data stored beside the checkpoint) come from
`config.reward`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath

from viper_jax import parallel, validation
from viper_jax.validation import LIKELIHOODS, REDUCTIONS, SCALINGS  # noqa: F401 (public names)
from viper_jax.envs import score_masks
from viper_jax.video import presets, priors, restore, transformer, vqgan

MODES = ('one_pass', 'window')
STATS_FILE = 'reward/expert_stats.json'


def default_config() -> ml_collections.ConfigDict:
  """The `reward` section of an experiment config (see presets.reward)."""
  return presets.reward()


def _reward_cfg(config) -> ml_collections.ConfigDict:
  return config.reward if 'reward' in config else default_config()


def task_names(config) -> list[str]:
  """The tasks of a (task-conditioned) model, in task-id order."""
  return list(config.data.tasks) if config.data.tasks else [config.task]


# ------------------------------------------------------------------------------ modules


@dataclasses.dataclass(frozen=True)
class _Modules:
  """The flax modules and static settings one config describes (hashable: a jit static arg)."""
  tokenizer: vqgan.VQGAN
  prior: transformer.VideoPrior  # or maskgit.MaskGITPrior (see priors.py)
  image_size: tuple[int, int]
  frame_skip: int
  reduce: str
  joint: bool  # reward.likelihood == 'joint': sum of the last `context` conditionals
  scale: str
  chunk_frames: int
  encode_batch: int
  window_batch: int
  score_masks: tuple | None  # per task id: bool [H, W] as nested tuples, or None (no masking)


def _modules(config) -> _Modules:
  rcfg = _reward_cfg(config)
  validation.check_reward({'reward': rcfg})
  tasks = task_names(config)
  size = tuple(int(s) for s in config.env.size)
  masks = None
  if config.data.mask_score and any(score_masks.has_score_region(t) for t in tasks):
    masks = tuple(tuple(map(tuple, score_masks.score_mask(t, size).tolist())) for t in tasks)
  return _Modules(
      tokenizer=vqgan.VQGAN.from_config(config.tokenizer),
      prior=priors.build_prior(config, len(tasks)),
      image_size=size, frame_skip=int(config.prior.frame_skip), reduce=rcfg.reduce,
      joint=rcfg.likelihood == 'joint', scale=rcfg.scale, chunk_frames=int(rcfg.chunk_frames),
      encode_batch=int(rcfg.encode_batch),
      window_batch=int(rcfg.window_batch), score_masks=masks)


def receptive_field(prior: transformer.VideoPrior) -> int:
  """Frames before t that can influence frame t's logits (the last one through the token shift)."""
  return prior.num_layers * (prior.context - 1) + 1


# ------------------------------------------------------------------------------ pure pieces


def _mask_frames(m: _Modules, frames, task_ids):
  """Zeroes score regions: frames uint8 [B, T, H, W, 3], task_ids int32 [B] or None."""
  if m.score_masks is None:
    return frames
  masks = jnp.asarray(np.array(m.score_masks, dtype=bool))  # [num_tasks, H, W]
  mask = masks[task_ids] if task_ids is not None else masks[:1]  # [B or 1, H, W]
  return frames * mask[:, None, :, :, None].astype(frames.dtype)


def _encode(m: _Modules, tok_vars, frames):
  """frames uint8 [B, T, H, W, 3] -> codes int32 [B, T, N], in batches of encode_batch frames."""
  b, t = frames.shape[:2]
  flat = frames.reshape((b * t,) + frames.shape[2:])
  size = min(m.encode_batch, b * t)
  padded = -(-(b * t) // size) * size
  flat = jnp.pad(flat, ((0, padded - b * t),) + ((0, 0),) * 3)
  codes = jax.lax.map(lambda x: m.tokenizer.apply(tok_vars, x, method=vqgan.VQGAN.encode),
                      flat.reshape((-1, size) + flat.shape[1:]))
  return codes.reshape(padded, -1)[:b * t].reshape(b, t, -1)


def _frame_scores(m: _Modules, prior_params, codes, task_ids):
  """Per-frame token log-probs reduced: codes int32 [B, T, N] -> float32 [B, T] (one pass)."""
  logits = m.prior.apply({'params': prior_params}, codes, task_ids)
  return _reduce(m, transformer.token_log_probs(logits, codes))


def _reduce(m: _Modules, token_lp):
  """A frame's score from its codes' log-probs: [..., N] -> [...] ('sum' or 'mean')."""
  return token_lp.sum(-1) if m.reduce == 'sum' else token_lp.mean(-1)


def _one_pass(m: _Modules, prior_params, codes, task_ids):
  """codes [B, T, N] -> [B, T], chunked with receptive-field overlap when T > chunk_frames."""
  t = codes.shape[1]
  field = receptive_field(m.prior)
  chunk = max(m.chunk_frames, field)  # a chunk's warm-up must fit before it
  if t <= chunk:
    return _frame_scores(m, prior_params, codes, task_ids)
  num = -(-t // chunk)
  # Padding at the end is harmless: causality keeps it out of the real frames' scores.
  codes = jnp.pad(codes, ((0, 0), (0, num * chunk - t), (0, 0)))
  first = _frame_scores(m, prior_params, codes[:, :chunk], task_ids)

  def later(k):
    # Chunk k's frames plus the `field` frames before them; only the chunk's scores are kept.
    window = jax.lax.dynamic_slice_in_dim(codes, k * chunk - field, field + chunk, axis=1)
    return _frame_scores(m, prior_params, window, task_ids)[:, field:]

  rest = jax.lax.map(later, jnp.arange(1, num))  # [num - 1, B, chunk]
  rest = rest.transpose(1, 0, 2).reshape(codes.shape[0], -1)
  return jnp.concatenate([first, rest], axis=1)[:, :t]


def _window(m: _Modules, prior_params, codes, task_ids):
  """Each frame from exactly its last `context` frames: codes [B, T, N] -> [B, T].

  Frame t is scored at position t - start of the window starting at start = clip(t - c + 1,
  0, T - c): by causality that equals a fresh sequence of frames max(0, t - c + 1) .. t.
  """
  b, t, _ = codes.shape
  c = min(m.prior.context, t)
  starts = np.clip(np.arange(t) - c + 1, 0, t - c)
  positions = np.arange(t) - starts
  steps = -(-t // m.window_batch) * m.window_batch
  starts = np.pad(starts, (0, steps - t), mode='edge').reshape(-1, m.window_batch)
  positions = np.pad(positions, (0, steps - t), mode='edge').reshape(-1, m.window_batch)

  def score(args):
    start, pos = args  # [W] each
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(codes, s, c, axis=1))(start)
    flat = windows.reshape((-1,) + windows.shape[2:])  # [W * B, c, N]
    ids = None if task_ids is None else jnp.tile(task_ids, start.shape[0])
    lp = _frame_scores(m, prior_params, flat, ids).reshape(start.shape[0], b, c)
    return jnp.take_along_axis(lp, pos[:, None, None], axis=2)[..., 0]  # [W, B]

  out = jax.lax.map(score, (jnp.asarray(starts), jnp.asarray(positions)))  # [S, W, B]
  return out.reshape(-1, b)[:t].T


def _split_skip(x, s: int):
  """[B, T, ...] -> [B * s, ceil(T / s), ...]: row b * s + j holds frames j, j + s, ..."""
  b, t = x.shape[:2]
  tp = -(-t // s) * s
  x = jnp.pad(x, ((0, 0), (0, tp - t)) + ((0, 0),) * (x.ndim - 2))
  x = x.reshape((b, tp // s, s) + x.shape[2:])
  return jnp.moveaxis(x, 2, 1).reshape((b * s, tp // s) + x.shape[3:])


def _merge_skip(x, s: int, t: int):
  """Inverse of _split_skip for scores: [B * s, T / s] -> [B, T]."""
  bs, ts = x.shape
  return jnp.moveaxis(x.reshape(bs // s, s, ts), 1, 2).reshape(bs // s, ts * s)[:, :t]


def _joint(m: _Modules, lp):
  """Sum of each step's last `context` conditionals: [B, T] -> [B, T] (within a sub-sequence)."""
  c = m.prior.context
  total = jnp.cumsum(lp, axis=1)
  before = jnp.pad(total, ((0, 0), (c, 0)))[:, :lp.shape[1]]
  return total - before


def _scale(m: _Modules, lp, stats):
  if m.scale == 'none':
    return lp
  if stats is None:
    raise ValueError(f"reward.scale={m.scale!r} needs expert statistics: run `viper reward-stats` "
                     f'(writes <checkpoint>/{STATS_FILE}) or set reward.scale=none')
  if m.scale == 'standardize':
    return (lp - stats['mean']) / jnp.maximum(stats['std'], 1e-6)
  if m.scale == 'floor':
    return jnp.maximum(lp, stats['floor'])
  if m.scale == 'floor_unit':  # the floor -> 0, the expert's median -> 1
    unit = jnp.maximum(stats['median'] - stats['floor'], 1e-6)
    return (jnp.maximum(lp, stats['floor']) - stats['floor']) / unit
  return jnp.clip((lp - stats['min']) / jnp.maximum(stats['max'] - stats['min'], 1e-6), 0.0, 1.0)


def _log_likelihood(m: _Modules, params, frames, task_ids, mode: str):
  frames = _mask_frames(m, frames, task_ids)
  codes = _encode(m, params['tokenizer'], frames)
  t, s = codes.shape[1], m.frame_skip
  sub = _split_skip(codes, s)
  ids = None if task_ids is None else jnp.repeat(task_ids, s)
  score = _one_pass if mode == 'one_pass' else _window
  sub_lp = score(m, params['prior'], sub, ids)
  if m.joint:
    sub_lp = _joint(m, sub_lp)
  lp = _merge_skip(sub_lp, s, t)
  return _scale(m, lp, params.get('stats'))


def _check_inputs(m: _Modules, frames, task_ids, conditioned: bool, num_tasks: int) -> None:
  """Raises ValueError for input the model can't score (shapes always; ids when concrete)."""
  shape = tuple(frames.shape)
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f'frames must be uint8 [B, T, H, W, 3], got shape {shape}')
  if frames.dtype != jnp.uint8:
    raise ValueError(f'frames must be uint8 [B, T, H, W, 3] in 0..255, got dtype {frames.dtype}')
  if tuple(shape[2:4]) != m.image_size:
    raise ValueError(f'frames must be {m.image_size[0]}x{m.image_size[1]} (the tokenizer\'s '
                     f'size), got {shape[2]}x{shape[3]}')
  if shape[1] < 1:
    raise ValueError(f'need at least one frame (T >= 1), got T={shape[1]}')
  if shape[0] < 1:
    raise ValueError(f'need at least one trajectory (B >= 1), got B={shape[0]}')
  if task_ids is None:
    if conditioned:
      raise ValueError(f'this model is conditioned on {num_tasks} tasks: pass task_ids int32 '
                       f'[{shape[0]}] in [0, {num_tasks})')
    return
  if tuple(task_ids.shape) != (shape[0],) or not jnp.issubdtype(task_ids.dtype, jnp.integer):
    raise ValueError(f'task_ids must be int32 [{shape[0]}] (one per trajectory), got '
                     f'{task_ids.dtype}{list(task_ids.shape)}')
  try:
    ids = np.asarray(task_ids)
  except jax.errors.TracerArrayConversionError:
    return  # traced (inside the caller's jit): ranges can only be checked on concrete ids
  if ids.min() < 0 or ids.max() >= num_tasks:
    raise ValueError(f'task_ids must lie in [0, {num_tasks}), got {ids.tolist()}')


def log_likelihood_fn(config, mode: str = 'one_pass'):
  """The pure reward function of an experiment config: fn(params, frames, task_ids) -> [B, T].

  params: {'tokenizer': {'params', 'vq_stats'}, 'prior': prior params, optional 'stats':
  {'mean', 'std', 'min', 'max'} float32 scalars}; frames uint8 [B, T, H, W, 3]; task_ids int32
  [B] (or None for an unconditioned model). Returns float32 [B, T] as described in the module
  docstring. Pure: jit it, shard the batch axis over a mesh (rows are independent).
  Shapes and dtypes are checked at trace time; task id ranges only where they are concrete.
  """
  if mode not in MODES:
    raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
  m = _modules(config)
  conditioned, num_tasks = m.prior.task_conditioning, m.prior.num_tasks

  def fn(params, frames, task_ids=None):
    _check_inputs(m, frames, task_ids, conditioned, num_tasks)
    if task_ids is not None:
      task_ids = jnp.asarray(task_ids, jnp.int32)
    return _log_likelihood(m, params, frames, task_ids, mode)
  return fn


# ------------------------------------------------------------------------------ the model


@functools.partial(jax.jit, static_argnames=('m', 'mode'))
def _jitted(m, params, frames, task_ids, mode):
  return _log_likelihood(m, params, frames, task_ids, mode)


@functools.partial(jax.jit, static_argnames=('m',))
def _stream_step(m, params, state, frame):
  """One frame of every row: frame uint8 [B, H, W, 3] -> (state, float32 [B])."""
  task_ids = state['task_ids']
  frame = _mask_frames(m, frame[:, None], task_ids)[:, 0]
  codes = m.tokenizer.apply(params['tokenizer'], frame, method=vqgan.VQGAN.encode)
  codes = codes.reshape(codes.shape[0], -1)  # [B, N]
  j = state['t'] % m.frame_skip  # which interleaved sub-sequence this frame belongs to
  cache = jax.tree.map(lambda x: x[j], state['caches'])
  inputs = jnp.concatenate([state['last_code'][j][:, None], codes[:, :-1]], axis=1)
  logits, cache = m.prior.apply({'params': params['prior']}, cache, inputs, task_ids,
                                method=transformer.VideoPrior.extend)
  lp = _reduce(m, transformer.token_log_probs(logits, codes))
  # recent [s, context, B]: the latest conditionals of each sub-sequence (for 'joint').
  recent = state['recent'].at[j].set(jnp.concatenate([state['recent'][j, 1:], lp[None]]))
  if m.joint:
    lp = recent[j].sum(0)
  lp = _scale(m, lp[:, None], params.get('stats'))[:, 0]
  caches = jax.tree.map(lambda all_, new: all_.at[j].set(new), state['caches'], cache)
  state = dict(caches=caches, last_code=state['last_code'].at[j].set(codes[:, -1]),
               recent=recent, t=state['t'] + 1, task_ids=task_ids)
  return state, lp


class RewardModel:
  """A frozen tokenizer + prior with its config: the VIPER reward for whole trajectories.

  Attributes: config (ConfigDict: task, env, data, tokenizer, prior, reward sections), params
  (see `log_likelihood_fn`), task_names (task id -> name), checkpoint (dir or None),
  action_repeat (environment steps per frame of the training videos; None if unrecorded) and
  frame_skip (the model sees every frame_skip-th frame): an agent's frames must come at the same
  action repeat for the scores to mean what they meant in training. metadata (dict): the prior
  checkpoint's metadata (e.g. 'tasks', 'action_repeat', 'frame_skip') plus 'tokenizer_step' and
  'prior_step'; empty for `init`.
  """

  def __init__(self, config, params, checkpoint: str | None = None, mesh=None,
               action_repeat: int | None = None, metadata: dict | None = None):
    """mesh: a `jax.sharding.Mesh` with a 'data' axis (see viper_jax.parallel) to split the batch
    over; params are replicated on it. Multi-host: every host passes its own rows and gets their
    scores back. None: one device. metadata: what the checkpoint recorded (see `load`)."""
    self.config = config
    self.metadata = dict(metadata or {})
    self.task_names = task_names(config)
    self.checkpoint = checkpoint
    self.mesh = mesh
    self.action_repeat = action_repeat
    self._m = _modules(config)
    self.params = params if mesh is None else parallel.put_replicated(params, mesh)
    self._sharded = {}

  @classmethod
  def init(cls, config, seed: int = 0, mesh=None) -> 'RewardModel':
    """Random weights from the config's `tokenizer` and `prior` sections (tests, benchmarks)."""
    m = _modules(config)
    k_tok, k_prior = jax.random.split(jax.random.key(seed))
    tok_params, tok_stats, _ = vqgan.init_variables(k_tok, config.tokenizer,
                                                    tuple(config.env.size))
    prior_params = priors.init_params(m.prior, k_prior)
    params = {'tokenizer': {'params': tok_params, 'vq_stats': tok_stats},
              'prior': prior_params}
    return cls(config, params, mesh=mesh)

  @property
  def context(self) -> int:
    return self.config.prior.context

  @property
  def frame_skip(self) -> int:
    return int(self.config.prior.frame_skip)

  def task_id(self, name: str) -> int:
    """Task id of a task name ('dmc:cartpole-swingup')."""
    if name not in self.task_names:
      raise ValueError(f'unknown task {name!r}; this model knows {self.task_names}')
    return self.task_names.index(name)

  def _ids(self, task_ids, batch: int):
    if task_ids is None and len(self.task_names) == 1 and self._m.prior.task_conditioning:
      task_ids = np.zeros((batch,), np.int32)  # a one-task model needs no ids from the caller
    if task_ids is not None:
      task_ids = jnp.asarray(task_ids)
    return task_ids

  def log_likelihood(self, frames, task_ids=None, *, mode: str = 'one_pass') -> jax.Array:
    """frames uint8 [B, T, H, W, 3], task_ids int [B] or None -> float32 [B, T] (see module doc)."""
    if mode not in MODES:
      raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    frames = jnp.asarray(frames)
    task_ids = self._ids(task_ids, frames.shape[0] if frames.ndim else 0)
    _check_inputs(self._m, frames, task_ids, self._m.prior.task_conditioning,
                  self._m.prior.num_tasks)
    if task_ids is not None:
      task_ids = task_ids.astype(jnp.int32)
    if self.mesh is None or self.mesh.size == 1:
      return _jitted(self._m, self.params, frames, task_ids, mode)
    return self._sharded_call(frames, task_ids, mode)

  def _sharded_call(self, frames, task_ids, mode):
    """The batch split over the mesh's 'data' axis; rows are independent, so no communication."""
    if mode not in self._sharded:
      data, replicated = parallel.data_sharding(self.mesh), parallel.replicated(self.mesh)
      fn = functools.partial(_log_likelihood, self._m, mode=mode)
      self._sharded[mode] = jax.jit(fn, in_shardings=(replicated, data, data),
                                    out_shardings=data)
    # Unconditioned models ignore ids (and task 0's score mask is the only one): zeros are exact.
    ids = task_ids if task_ids is not None else jnp.zeros((frames.shape[0],), jnp.int32)
    rows = frames.shape[0]  # padded to a multiple of this host's devices, padding dropped below
    (frames, ids), _ = parallel.pad_rows((np.asarray(frames), np.asarray(ids)), self.mesh)
    out = self._sharded[mode](self.params, *parallel.put_batch((frames, ids), self.mesh))
    if jax.process_count() == 1:
      return out if out.shape[0] == rows else out[:rows]
    shards = sorted(out.addressable_shards, key=lambda s: s.index[0].start)
    return np.concatenate([np.asarray(s.data) for s in shards])[:rows]  # this host's rows

  def init_stream(self, batch_size: int, task_ids=None) -> dict[str, Any]:
    """Streaming state for batch_size trajectories that start now (their first frame next)."""
    if not priors.kind_of(self._m.prior).streams:
      raise ValueError("streaming needs the autoregressive prior (prior.kind='ar'); this model's "
                       f'prior is {self._m.prior.kind!r}: use log_likelihood')
    task_ids = self._ids(task_ids, batch_size)
    dummy = jnp.zeros((batch_size, 1) + self._m.image_size + (3,), jnp.uint8)
    _check_inputs(self._m, dummy, task_ids, self._m.prior.task_conditioning,
                  self._m.prior.num_tasks)
    s = self._m.frame_skip
    cache = self._m.prior.init_cache(batch_size)
    caches = jax.tree.map(lambda x: jnp.stack([x] * s), cache)
    return dict(caches=caches, last_code=jnp.full((s, batch_size), transformer.BOS, jnp.int32),
                recent=jnp.zeros((s, self._m.prior.context, batch_size), jnp.float32),
                t=jnp.zeros((), jnp.int32),
                task_ids=None if task_ids is None else task_ids.astype(jnp.int32))

  def stream_step(self, state: dict[str, Any], frame) -> tuple[dict[str, Any], jax.Array]:
    """Scores the next frame of every row: frame uint8 [B, H, W, 3] -> (state, float32 [B])."""
    frame = jnp.asarray(frame)
    batch = state['last_code'].shape[1]
    if frame.ndim != 4:
      raise ValueError(f'stream_step takes one frame per row, uint8 [B, H, W, 3], got shape '
                       f'{tuple(frame.shape)}')
    if frame.shape[0] != batch:
      raise ValueError(f'the stream was started for {batch} rows, got a frame batch of '
                       f'{frame.shape[0]}')
    _check_inputs(self._m, frame[:, None], state['task_ids'], False, self._m.prior.num_tasks)
    return _stream_step(self._m, self.params, state, frame)


# ------------------------------------------------------------------------------ checkpoints


def expert_stats_params(stats: dict, reward_config, path) -> dict:
  """The float32 scalars `_scale` reads from reward/expert_stats.json: mean, std, min, max, and
  for reward.scale='floor' | 'floor_unit' the floor (the expert percentile
  reward.floor_percentile) and the expert's median."""
  params = {k: jnp.float32(stats[k]) for k in ('mean', 'std', 'min', 'max')}
  validation.check_reward({'reward': reward_config})
  if reward_config.scale in ('floor', 'floor_unit'):
    key = str(reward_config.floor_percentile)
    if key not in stats.get('percentiles', {}) or '50' not in stats['percentiles']:
      raise ValueError(f'reward.scale={reward_config.scale} needs the expert percentiles {key} '
                       f'and 50 in {path}, which '
                       f'has {sorted(stats.get("percentiles", {}))}: rerun `viper reward-stats`')
    params['floor'] = jnp.float32(stats['percentiles'][key])
    params['median'] = jnp.float32(stats['percentiles']['50'])
  return params


def load(checkpoint_dir, reward_config=None, mesh=None) -> RewardModel:
  """The frozen reward model of a trained experiment.

  checkpoint_dir: the workdir of `viper train-tokenizer` / `viper train-prior`, holding
  tokenizer/ and prior/ (config.json and orbax checkpoints; the prior's EMA params are used when
  it trained with EMA) and, if `viper reward-stats` ran, reward/expert_stats.json. Only the
  params are read (video/restore.py), never the optimiser states.
  reward_config: a `reward` section overriding the one saved with the experiment; mesh: see
  `RewardModel`.
  """
  root = epath.Path(checkpoint_dir)
  config = restore.saved_config(root / 'prior')
  if config is None:
    raise FileNotFoundError(f'no trained prior in {root}: expected {root / "prior" / "config.json"} '
                            '(run `viper train-tokenizer` and `viper train-prior` with this workdir)')
  with config.unlocked():
    if reward_config is not None:
      config.reward = reward_config
    elif 'reward' not in config:
      config.reward = default_config()
  _, tok_vars, tok_step = restore.tokenizer(root, config.tokenizer)
  prior_params, prior_step, meta = restore.prior(root, config)
  params = {'tokenizer': tok_vars, 'prior': prior_params}
  stats_path = root / STATS_FILE
  if stats_path.exists():
    params['stats'] = expert_stats_params(json.loads(stats_path.read_text()), config.reward,
                                          stats_path)
  metadata = dict(meta, tokenizer_step=tok_step, prior_step=prior_step)
  return RewardModel(config, params, checkpoint=str(root), mesh=mesh,
                     action_repeat=meta.get('action_repeat'), metadata=metadata)
