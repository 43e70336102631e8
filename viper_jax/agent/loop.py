"""`viper train-agent`: DreamerV3 on a BatchedEnv, with env / VIPER / VIPER+disag / AMP rewards.

Where VIPER rewards are computed: when an episode ends, on the host side of the replay, the whole
episode is scored in one call of `likelihood_fn` (episodes that end on the same step are batched,
padded at the END to a multiple of `viper_pad_length(config)`). Reasons, against scoring the
sequences sampled for training:
  - cost: every step is scored once, instead of `train_ratio` times (64-512x) on replayed copies;
  - context: each step is scored with its whole episode as history, the same for every step,
    whereas a sampled window would give its first frames a truncated context (a different scale,
    the reference's running-mean problem);
  - the end padding changes nothing because the likelihood is causal (lp[:, t] ignores frames
    after t), and fixed lengths keep the reward model from recompiling for every episode length.
The price is latency: steps of an unfinished episode are not sampled until it ends (`Replay.ready`).
On resume, a partial episode left in the restored replay is scored as it is (causality again: the
prefix gets exactly the values the full episode would have given).

Alignment: replay step t holds frame x_t and the reward for arriving at it, so its 'density' label
is likelihood_fn(frames)[:, t] = log p(x_t | x_<t) (tests pin this).

Checkpoints (every `checkpoint_every` env steps and at the end) hold params, optimiser states,
return normalisers, counters and the RNG key (orbax, atomic), plus the replay as a sidecar
<workdir>/replay/replay_<step>.npz written atomically before it. A rerun resumes from the newest
checkpoint with the same counters and replay; environments start new episodes.
"""
from __future__ import annotations

import functools
import json
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from etils import epath

from viper_jax import checkpoint, metrics as metrics_lib, validation
from viper_jax.agent import agent as agent_lib
from viper_jax.agent import mesh as agent_mesh
from viper_jax.agent.replay import Replay
from viper_jax.errors import NonFiniteLossError

LikelihoodFn = Callable[[np.ndarray], np.ndarray]  # uint8 [B, T, H, W, 3] -> float32 [B, T]


def _make_env(task, size, action_repeat, time_limit, seed):
  from viper_jax import envs
  return envs.make(task, size=tuple(size), action_repeat=action_repeat, time_limit=time_limit,
                   seed=seed)


def action_spec(space) -> tuple[int, bool]:
  """(action_dim, discrete) of a gymnasium action space."""
  if hasattr(space, 'n'):
    return int(space.n), True
  return int(np.prod(space.shape)), False


def to_env_action(action: np.ndarray, space, discrete: bool):
  """Agent action [A] (one-hot, or in [-1, 1]) -> the environment's action."""
  if discrete:
    return int(np.argmax(action))
  low, high = space.low.astype(np.float32), space.high.astype(np.float32)
  return (low + (np.asarray(action, np.float32) + 1) / 2 * (high - low)).reshape(space.shape)


def viper_pad_length(config) -> int:
  """Episodes are scored padded to a multiple of this: `agent.viper_pad_to`, or by default the
  frames of a full episode (time_limit + 1 with the reset frame; 64 without a time limit)."""
  if config.agent.viper_pad_to:
    return int(config.agent.viper_pad_to)
  limit = config.env.time_limit
  return int(limit) + 1 if limit else 64


def label_episodes(replay: Replay, likelihood_fn: LikelihoodFn, segments, pad_to: int) -> list:
  """Scores replay segments [(env, start, stop)] with one likelihood_fn call; writes 'density'.

  Segments are padded at the end (last frame repeated) to a common multiple of pad_to; the
  likelihood is causal, so padding does not change the scores of real frames.
  Returns the per-segment scores [stop - start].
  """
  if not segments:
    return []
  longest = max(stop - start for _, start, stop in segments)
  length = int(math.ceil(longest / pad_to) * pad_to)
  frames = []
  for env, start, stop in segments:
    clip = replay.read('image', env, start, stop)
    frames.append(np.concatenate([clip, np.repeat(clip[-1:], length - len(clip), 0)], 0))
  scores = np.asarray(likelihood_fn(np.stack(frames)), np.float32)
  if scores.shape != (len(segments), length):
    raise ValueError(f'likelihood_fn must return float32 [B, T] = {(len(segments), length)}, got '
                     f'{scores.shape}')
  out = []
  for row, (env, start, stop) in zip(scores, segments):
    values = row[:stop - start]
    if not np.all(np.isfinite(values)):
      raise NonFiniteLossError(f'likelihood_fn returned non-finite rewards for steps [{start}, '
                               f'{stop}) of environment {env}; check the reward model and frames')
    replay.write('density', env, start, values)
    out.append(values)
  return out


class ExpertPairs:
  """Consecutive expert frame pairs for the AMP discriminator, held in memory."""

  def __init__(self, config, workdir):
    from viper_jax.data.store import EpisodeStore
    amp = config.agent.amp
    store = EpisodeStore(amp.expert_root or epath.Path(workdir) / 'episodes')
    self.episodes = []
    for episode in store.episodes(config.task, amp.expert_split):
      if len(episode['image']) >= 2:
        self.episodes.append(episode['image'])
      if len(self.episodes) >= amp.max_expert_episodes:
        break
    if not self.episodes:
      raise ValueError(f"reward_source 'amp' needs expert episodes of {config.task} in "
                       f'{store.root} ({amp.expert_split} split); run `viper collect` first or '
                       'set agent.amp.expert_root')
    self.lengths = np.array([len(e) for e in self.episodes])

  def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [count, H, W, 6]: (x_{t-1}, x_t) pairs from random expert episodes."""
    which = rng.integers(0, len(self.episodes), count)
    t = rng.integers(1, self.lengths[which])
    return np.stack([np.concatenate([self.episodes[e][i - 1], self.episodes[e][i]], -1)
                     for e, i in zip(which, t)])


def evaluate(agent, state, policy_fn, env, episodes: int, key, space, likelihood_fn=None):
  """Runs greedy episodes; returns (metrics with the TRUE task return, frames of episode 0)."""
  returns, lengths, viper_returns, video = [], [], [], None
  for episode in range(episodes):
    obs, _ = env.reset()
    frames, total, carry, first, done = [obs], 0.0, agent.initial_carry(1), True, False
    while not done:
      key, sub = jax.random.split(key)
      action, carry = policy_fn(state, carry, {'image': obs[None], 'is_first': np.array([first])},
                                sub, np.bool_(True))
      obs, reward, terminated, truncated, _ = env.step(
          to_env_action(np.asarray(action)[0], space, agent.discrete))
      frames.append(obs)
      total, first, done = total + float(reward), False, terminated or truncated
    returns.append(total)
    lengths.append(len(frames))
    if likelihood_fn is not None:
      viper_returns.append(float(np.sum(likelihood_fn(np.stack(frames)[None])[0])))
    if episode == 0:
      video = np.stack(frames)
  metrics = {'eval/return': np.mean(returns), 'eval/length': np.mean(lengths)}
  if viper_returns:
    metrics['eval/viper_return'] = np.mean(viper_returns)
  return metrics, video


def _check_finite(values: dict, env_steps: int, last_saved, ckpt_dir):
  bad = sorted(k for k, v in values.items() if not math.isfinite(v))
  if bad:
    raise NonFiniteLossError(
        f'train-agent: non-finite {bad} by env step {env_steps}; stopped without saving. The last '
        f'good checkpoint is step {last_saved} in {ckpt_dir}. Lower the learning rates or check '
        'the rewards.')


def config_summary(config) -> dict:
  """What a policy loader needs to rebuild the agent (stored in every checkpoint's meta)."""
  return {'task': config.task, 'env': json.loads(config.env.to_json()),
          'agent': json.loads(config.agent.to_json())}


def run(config, workdir, likelihood_fn: LikelihoodFn | None = None,
        stop_after: int | None = None) -> dict:
  """Trains (or resumes) the agent to `config.agent.env_steps` policy steps.

  likelihood_fn: frames uint8 [B, T, H, W, 3] -> log p(x_t | x_<t) float32 [B, T]; required for
    the 'viper' sources (the agent never imports the reward package).
  stop_after: stop after this many env steps of this call without a final save (simulates a
    kill in tests).
  Returns counters, last evaluation, timings and the replay.
  """
  ac = config.agent
  validation.validate(config, ['train-agent'])
  uses_viper = ac.reward_source in ('viper', 'viper+disag')
  if uses_viper and likelihood_fn is None:
    raise ValueError(f"reward_source {ac.reward_source!r} needs likelihood_fn (the VIPER reward "
                     'model; `viper train-agent` loads it from agent.reward_checkpoint)')
  workdir = epath.Path(workdir)
  size = tuple(config.env.size)
  make = functools.partial(_make_env, config.task, size, config.env.action_repeat,
                           config.env.time_limit)
  from viper_jax.envs import BatchedEnv
  env = BatchedEnv([functools.partial(make, ac.seed + i) for i in range(ac.num_envs)],
                   mode=ac.env_mode)
  eval_env = make(ac.seed + 100_000)
  space = env.action_space
  action_dim, discrete = action_spec(space)
  agent = agent_lib.Agent(ac, action_dim, discrete, size)
  mesh = agent_mesh.build(ac)  # one device by default; see agent/mesh.py
  batch_size = agent_mesh.host_batch_size(ac, mesh)  # this host's share of the global batch
  experts = ExpertPairs(config, workdir) if ac.reward_source == 'amp' else None

  # State, counters and replay: fresh, or from the newest checkpoint.
  key = jax.random.key(ac.seed)
  key, init_key = jax.random.split(key)
  template = {'agent': jax.jit(agent.init)(init_key), 'key': jax.random.key_data(key)}
  ckpt_dir = workdir / 'checkpoints'
  checkpointer = checkpoint.Checkpointer(ckpt_dir, ac.keep_checkpoints)
  replay, replay_dir = Replay(ac.replay_capacity, ac.num_envs), workdir / 'replay'
  if jax.process_count() > 1:  # every host keeps its own replay
    replay_dir = replay_dir / f'host{jax.process_index()}'
  # The checkpoint and its replay sidecar must both read back whole, else the previous pair is used.
  restored, meta, start_step = checkpointer.restore_latest(
      template, check=lambda step, _: replay.load(replay_dir / f'replay_{step}.npz'),
      sidecars=lambda step: [replay_dir / f'replay_{step}.npz'])
  # Host round trip: fresh and restored states then reach train_step as the same kind of
  # (uncommitted, default-layout) arrays, so a resumed run reuses the compiled program.
  restored = jax.device_get(restored)
  state = agent_mesh.put_state(restored['agent'], mesh)
  key = jax.random.wrap_key_data(jax.device_put(restored['key']))
  counters = {'env_steps': 0, 'updates': 0, 'updates_due': 0.0, 'episodes': 0}
  counters.update(meta.get('counters', {}))
  reward_seconds, pad_to = 0.0, viper_pad_length(config)
  if uses_viper:  # partial episodes of a resumed replay: score their prefix (causal, exact)
    segments = [(i, int(replay.ready[i]), int(replay.count[i])) for i in range(ac.num_envs)
                if replay.count[i] > replay.ready[i]]
    tic = time.perf_counter()
    label_episodes(replay, likelihood_fn, segments, pad_to)
    reward_seconds += time.perf_counter() - tic
    replay.ready[:] = replay.count
  episode_start = replay.count.copy()  # absolute index where each stream's current episode began
  resumed = dict(counters)

  train_step = agent_mesh.jit_train_step(agent, mesh)
  policy_fn = agent_mesh.jit_policy(agent, mesh, ac.num_envs)  # `mode` is traced
  eval_policy_fn = agent_mesh.jit_policy(agent, mesh, 1)
  writer = metrics_lib.MetricWriter(workdir, resume_step=start_step or 0)
  summary = config_summary(config)
  last_saved = start_step

  def save():
    nonlocal last_saved
    step = counters['env_steps']
    replay.save(replay_dir / f'replay_{step}.npz')
    checkpointer.save(step, {'agent': state, 'key': jax.random.key_data(key)},
                      {'counters': counters, 'config': summary})
    # Keep the sidecars of the checkpoints orbax keeps (the newest keep_checkpoints).
    sidecars = sorted(replay_dir.glob('replay_*.npz'), key=lambda p: int(p.stem.split('_')[1]))
    for old in sidecars[:-ac.keep_checkpoints]:
      old.unlink()
    last_saved = step

  pending_metrics, timers = [], {'env': 0.0, 'train': 0.0, 'policy': 0.0}
  episode_returns = np.zeros(ac.num_envs)
  last_eval, eval_metrics = None, {}
  carry, actions = agent.initial_carry(ac.num_envs), [None] * ac.num_envs
  window = (time.perf_counter(), counters['env_steps'], counters['updates'])
  this_call = 0
  started = time.perf_counter()
  # Host RNG (replay sampling, prefill actions): a pure function of seed and resume point.
  host_rng = np.random.default_rng([ac.seed, counters['env_steps']])

  def crossed(every: int, before: int, after: int) -> bool:
    return every > 0 and after // every > before // every

  try:
    with tqdm.tqdm(total=ac.env_steps, initial=counters['env_steps'], unit='step',
                   desc=f'train-agent {ac.reward_source}', dynamic_ncols=True,
                   disable=jax.process_index() != 0) as bar:
      while counters['env_steps'] < ac.env_steps:
        # 1. Observe step t of every environment and choose a_t.
        tic = time.perf_counter()
        obs, _ = env.step(actions)
        timers['env'] += time.perf_counter() - tic
        key, policy_key = jax.random.split(key)
        tic = time.perf_counter()
        if counters['env_steps'] < ac.prefill:
          raw = host_rng.uniform(-1, 1, (ac.num_envs, action_dim)).astype(np.float32)
          if discrete:
            raw = np.eye(action_dim, dtype=np.float32)[host_rng.integers(0, action_dim,
                                                                         ac.num_envs)]
          # Keep the latent in step so the policy takes over smoothly after prefill.
          _, carry = policy_fn(state, carry, {'image': obs['image'], 'is_first': obs['is_first']},
                               policy_key, np.bool_(False))
          carry = (carry[0], jnp.asarray(raw))
          agent_action = raw
        else:
          agent_action, carry = policy_fn(
              state, carry, {'image': obs['image'], 'is_first': obs['is_first']}, policy_key,
              np.bool_(False))
          agent_action = np.asarray(agent_action, np.float32)
        timers['policy'] += time.perf_counter() - tic
        actions = [to_env_action(a, space, discrete) for a in agent_action]
        step = {k: obs[k] for k in ('image', 'reward', 'is_first', 'is_last', 'is_terminal')}
        step['action'] = agent_action
        if uses_viper:
          step['density'] = np.zeros(ac.num_envs, np.float32)
        replay.add(step, ready=not uses_viper)
        before = counters['env_steps']
        counters['env_steps'] += ac.num_envs
        this_call += ac.num_envs
        bar.update(ac.num_envs)

        # 2. Episode bookkeeping: true returns; VIPER scores of finished episodes.
        episode_returns += obs['reward']
        episode_start[obs['is_first']] = replay.count[obs['is_first']] - 1
        done = np.flatnonzero(obs['is_last'])
        if len(done):
          scores = []
          if uses_viper:
            segments = [(i, int(episode_start[i]), int(replay.count[i])) for i in done]
            tic = time.perf_counter()
            scores = label_episodes(replay, likelihood_fn, segments, pad_to)
            reward_seconds += time.perf_counter() - tic
            replay.ready[done] = replay.count[done]
          for j, i in enumerate(done):
            row = {'episode/return': episode_returns[i],
                   'episode/length': replay.count[i] - episode_start[i]}
            if scores:
              row['episode/viper_return'] = float(np.sum(scores[j]))
            writer.write(counters['env_steps'], row)
            counters['episodes'] += 1
            episode_returns[i] = 0.0

        # 3. Train: train_ratio replayed steps per policy step.
        if counters['env_steps'] >= ac.prefill and replay.can_sample(ac.batch_length):
          # Per host: its envs' steps against its share of the global batch.
          counters['updates_due'] += ac.num_envs * ac.train_ratio / (
              batch_size * ac.batch_length)
          while counters['updates_due'] >= 1:
            batch = replay.sample(batch_size, ac.batch_length, host_rng)
            if experts is not None:
              batch['expert'] = experts.sample(batch_size * ac.batch_length, host_rng)
            batch = agent_mesh.put_batch(batch, mesh)
            key, train_key = jax.random.split(key)
            tic = time.perf_counter()
            state, step_metrics = train_step(state, batch, train_key)
            jax.block_until_ready(step_metrics['loss'])  # honest timers; CPU runs serially anyway
            timers['train'] += time.perf_counter() - tic
            pending_metrics.append(step_metrics)
            counters['updates'] += 1
            counters['updates_due'] -= 1

        # 4. Log, evaluate, checkpoint.
        after = counters['env_steps']
        final = after >= ac.env_steps
        if (crossed(ac.log_every, before, after) or final) and pending_metrics:
          values = {k: float(np.mean([m[k] for m in jax.device_get(pending_metrics)]))
                    for k in pending_metrics[0]}
          pending_metrics = []
          _check_finite(values, after, last_saved, ckpt_dir)
          now = time.perf_counter()
          values['fps/env_steps_per_s'] = (after - window[1]) / max(now - window[0], 1e-9)
          values['fps/updates_per_s'] = (counters['updates'] - window[2]) / max(
              now - window[0], 1e-9)
          values['replay/size'] = len(replay)
          window = (now, after, counters['updates'])
          writer.write(after, values)
          bar.set_postfix({'loss': f"{values['loss']:.3g}", 'updates': counters['updates']})
        if crossed(ac.eval_every, before, after) or final:
          key, eval_key = jax.random.split(key)
          eval_metrics, video = evaluate(agent, state, eval_policy_fn, eval_env, ac.eval_episodes,
                                         eval_key, space, likelihood_fn)
          # The update count lets `viper compare --x=updates` separate data from compute.
          writer.write(after, {**eval_metrics, 'eval/updates': counters['updates']})
          metrics_lib.save_video(workdir / 'videos' / f'eval_{after:08d}.gif', video)
          last_eval = eval_metrics
        if crossed(ac.checkpoint_every, before, after) or final:
          if pending_metrics:  # never save a state whose recent losses were not checked
            values = {k: float(np.mean([m[k] for m in jax.device_get(pending_metrics)]))
                      for k in pending_metrics[0]}
            _check_finite(values, after, last_saved, ckpt_dir)
          save()
        if stop_after is not None and this_call >= stop_after:
          break
  finally:
    writer.close()
    checkpointer.close()
    env.close()
    eval_env.close()
  seconds = time.perf_counter() - started
  return {'counters': dict(counters), 'resumed_from': resumed, 'eval': last_eval or eval_metrics,
          'seconds': seconds, 'reward_seconds': reward_seconds, 'timers': timers,
          'replay': replay, 'state': state}
