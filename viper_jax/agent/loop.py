"""`viper train-agent`: DreamerV3 on a BatchedEnv, with env / VIPER / VIPER+disag / AMP rewards.

The run is a driver loop over small parts, each with one job:
  Driver (driver.py)        steps the environments into the replay;
  Labeller (labelling.py)   scores finished episodes with the frozen VIPER likelihood;
  Learner (driver.py)       pays `train_ratio` replayed steps per policy step in train steps;
  evaluate (evaluation.py)  greedy episodes, true return logged only;
  RunLog, Saver (here)      periodic metrics, and checkpoints with their replay sidecar.

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

import jax
import numpy as np
import tqdm
from etils import epath

from viper_jax import atomic, checkpoint, metrics as metrics_lib, oneshot, validation
from viper_jax.agent import agent as agent_lib
from viper_jax.agent import env_actions, evaluation
from viper_jax.agent import mesh as agent_mesh
from viper_jax.agent.driver import Counters, Driver, Learner
from viper_jax.agent.expert_pairs import ExpertPairs
from viper_jax.agent.labelling import Labeller, LikelihoodFn, viper_pad_length
from viper_jax.agent.replay import Replay
from viper_jax.errors import NonFiniteLossError


def every(period: int, before: int, after: int) -> bool:
  """True when a counter going from `before` to `after` crosses a multiple of `period` (0: never)."""
  return period > 0 and after // period > before // period


def config_summary(config) -> dict:
  """What a policy loader needs to rebuild the agent (stored in every checkpoint's meta)."""
  return {'task': config.task, 'env': json.loads(config.env.to_json()),
          'agent': json.loads(config.agent.to_json())}


class Saver:
  """Checkpoints with the replay as a sidecar; restores the newest pair that reads back whole."""

  def __init__(self, workdir: epath.Path, keep: int, replay: Replay):
    self.ckpt_dir = workdir / 'checkpoints'
    self.checkpointer = checkpoint.Checkpointer(self.ckpt_dir, keep)
    self.replay, self.keep = replay, keep
    self.replay_dir = workdir / 'replay'
    if jax.process_count() > 1:  # every host keeps its own replay
      self.replay_dir = self.replay_dir / f'host{jax.process_index()}'
    self.last_saved = None

  def _sidecar(self, step: int) -> epath.Path:
    return self.replay_dir / f'replay_{step}.npz'

  def restore(self, template):
    """(tree, meta, step) of the newest checkpoint whose replay also loads; fresh if none."""
    restored, meta, step = self.checkpointer.restore_latest(
        template, check=lambda s, _: self.replay.load(self._sidecar(s)),
        sidecars=lambda s: [self._sidecar(s)])
    self.last_saved = step
    return restored, meta, step

  def save(self, step: int, tree, meta: dict) -> None:
    self.replay.save(self._sidecar(step))
    self.checkpointer.save(step, tree, meta)
    # Keep the sidecars of the checkpoints orbax keeps (the newest `keep`).
    sidecars = sorted(self.replay_dir.glob('replay_*.npz'), key=lambda p: int(p.stem.split('_')[1]))
    for old in sidecars[:-self.keep]:
      old.unlink()
    self.last_saved = step

  def check_finite(self, values: dict, env_steps: int) -> None:
    """Refuses non-finite metrics before they are logged or a state behind them is saved."""
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
      raise NonFiniteLossError(
          f'train-agent: non-finite {bad} by env step {env_steps}; stopped without saving. The '
          f'last good checkpoint is step {self.last_saved} in {self.ckpt_dir}. Lower the learning '
          'rates or check the rewards.')

  def close(self) -> None:
    self.checkpointer.close()


class RunLog:
  """Training metrics averaged since the last log, with env-step and update throughput."""

  def __init__(self, writer, counters: Counters):
    self.writer = writer
    self.window = (time.perf_counter(), counters.env_steps, counters.updates)

  def write(self, values: dict, counters: Counters, replay_size: int) -> None:
    now, steps, updates = self.window
    elapsed = max(time.perf_counter() - now, 1e-9)
    values['fps/env_steps_per_s'] = (counters.env_steps - steps) / elapsed
    values['fps/updates_per_s'] = (counters.updates - updates) / elapsed
    values['replay/size'] = replay_size
    self.window = (time.perf_counter(), counters.env_steps, counters.updates)
    self.writer.write(counters.env_steps, values)

  def episodes(self, ends, scores, env_steps: int) -> None:
    """One row per finished training episode: true return and length (and VIPER return)."""
    for j, end in enumerate(ends):
      row = {'episode/return': end.true_return, 'episode/length': end.stop - end.start}
      if scores:
        row['episode/viper_return'] = float(np.sum(scores[j]))
      self.writer.write(env_steps, row)


class Parts:
  """The host-side pieces of one run. `resume` restores the state and starts the driver and
  learner at the restored counters (their host RNG depends on the resume point)."""

  def __init__(self, config, workdir: epath.Path, likelihood_fn: LikelihoodFn | None,
               label: bool):
    ac = self.cfg = config.agent
    make = functools.partial(env_actions.make_env, config.task, tuple(config.env.size),
                             config.env.action_repeat, config.env.time_limit)
    from viper_jax.envs import BatchedEnv
    self.env = BatchedEnv([functools.partial(make, ac.seed + i) for i in range(ac.num_envs)],
                          mode=ac.env_mode)
    self.eval_env = make(ac.seed + 100_000)
    self.agent = agent_lib.Agent(ac, *env_actions.action_spec(self.env.action_space),
                                 tuple(config.env.size))
    self.mesh = agent_mesh.build(ac)  # one device by default; see agent/mesh.py
    self.experts = ExpertPairs(config, workdir) if ac.reward_source == 'amp' else None
    self.workdir, self.replay = workdir, Replay(ac.replay_capacity, ac.num_envs)
    self.saver = Saver(workdir, ac.keep_checkpoints, self.replay)
    self.likelihood_fn = likelihood_fn  # also logs eval/viper_return when given
    self.labeller = Labeller(likelihood_fn, viper_pad_length(config)) if label else None
    self.eval_policy = agent_mesh.jit_policy(self.agent, self.mesh, 1)
    self.writer = self.driver = self.learner = None

  def resume(self):
    """(state on the mesh, key, counters): fresh, or from the newest readable checkpoint."""
    ac = self.cfg
    key, init_key = jax.random.split(jax.random.key(ac.seed))
    template = {'agent': oneshot.run(self.agent.init, init_key), 'key': jax.random.key_data(key)}
    restored, meta, start_step = self.saver.restore(template)
    # Host round trip: fresh and restored states then reach train_step as the same kind of
    # (uncommitted, default-layout) arrays, so a resumed run reuses the compiled program.
    restored = jax.device_get(restored)
    state = agent_mesh.put_state(restored['agent'], self.mesh)
    key = jax.random.wrap_key_data(jax.device_put(restored['key']))
    counters = Counters.from_dict(meta.get('counters', {}))
    self.writer = metrics_lib.MetricWriter(self.workdir, resume_step=start_step or 0)
    if self.labeller:
      self.labeller.label_unfinished(self.replay)
    # Host RNG (replay sampling, prefill actions): a pure function of seed and resume point.
    host_rng = np.random.default_rng([ac.seed, counters.env_steps])
    self.driver = Driver(self.env, self.agent,
                         agent_mesh.jit_policy(self.agent, self.mesh, ac.num_envs), self.replay,
                         ac.prefill, host_rng, deferred=self.labeller is not None)
    self.learner = Learner(agent_mesh.jit_train_step(self.agent, self.mesh), self.replay,
                           self.mesh, ac, agent_mesh.host_batch_size(ac, self.mesh), host_rng,
                           self.experts)
    return state, key, counters

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
    self.saver.close()
    self.env.close()
    self.eval_env.close()


def _periodic(config, parts: Parts, log: RunLog, bar, state, key, counters: Counters,
              before: int):
  """Logging, evaluation and checkpoints due after env steps `before` -> counters.env_steps."""
  ac, after = config.agent, counters.env_steps
  final = after >= ac.env_steps
  values = parts.learner.metrics(clear=True) if every(ac.log_every, before, after) or final \
      else None
  if values:
    parts.saver.check_finite(values, after)
    log.write(values, counters, len(parts.replay))
    bar.set_postfix({'loss': f"{values['loss']:.3g}", 'updates': counters.updates})
  eval_metrics = None
  if every(ac.eval_every, before, after) or final:
    key, eval_key = jax.random.split(key)
    eval_metrics, (video, video_return) = evaluation.evaluate(
        parts.agent, state, parts.eval_policy, parts.eval_env, ac.eval_episodes, eval_key,
        parts.likelihood_fn)
    # The update count lets `viper compare --x=updates` separate data from compute.
    parts.writer.write(after, {**eval_metrics, 'eval/updates': counters.updates})
    metrics_lib.save_video(parts.workdir / 'videos' / f'eval_{after:08d}.gif', video)
    # Lossless frames too (a GIF's palette costs the likelihood up to ~10 nats a frame), so that
    # reward models can be checked on what agents actually did (benchmarks/reward_agent_evals.py).
    atomic.write_npz(parts.workdir / 'videos' / f'eval_{after:08d}.npz', image=video,
                     true_return=np.float32(video_return))
  if every(ac.checkpoint_every, before, after) or final:
    pending = parts.learner.metrics(clear=False)  # never save behind unchecked losses
    if pending:
      parts.saver.check_finite(pending, after)
    parts.saver.save(after, {'agent': state, 'key': jax.random.key_data(key)},
                     {'counters': counters.as_dict(), 'config': config_summary(config)})
  return key, eval_metrics


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
  parts = Parts(config, epath.Path(workdir), likelihood_fn, label=uses_viper)
  try:
    state, key, counters = parts.resume()
    resumed = counters.as_dict()
    state, counters, last_eval, seconds = _drive(config, parts, state, key, counters, stop_after)
  finally:
    parts.close()
  return {'counters': counters.as_dict(), 'resumed_from': resumed, 'eval': last_eval or {},
          'seconds': seconds, 'timers': dict(parts.driver.timers, train=parts.learner.seconds),
          'reward_seconds': parts.labeller.seconds if parts.labeller else 0.0,
          'replay': parts.replay, 'state': state}


def _drive(config, parts: Parts, state, key, counters: Counters, stop_after: int | None):
  """The env-step loop: act, label ended episodes, train, then what is periodically due."""
  ac = config.agent
  log = RunLog(parts.writer, counters)
  this_call, last_eval, started = 0, None, time.perf_counter()
  with tqdm.tqdm(total=ac.env_steps, initial=counters.env_steps, unit='step',
                 desc=f'train-agent {ac.reward_source}', dynamic_ncols=True,
                 disable=jax.process_index() != 0) as bar:
    while counters.env_steps < ac.env_steps:
      key, policy_key = jax.random.split(key)
      ends = parts.driver.step(state, policy_key, counters.env_steps)
      before = counters.env_steps
      counters.env_steps += ac.num_envs
      this_call += ac.num_envs
      bar.update(ac.num_envs)
      scores = []
      if parts.labeller and ends:
        scores = parts.labeller.label(parts.replay, [(e.env, e.start, e.stop) for e in ends])
      log.episodes(ends, scores, counters.env_steps)
      counters.episodes += len(ends)
      state, key = parts.learner.train(state, key, counters, ac.num_envs)
      key, eval_metrics = _periodic(config, parts, log, bar, state, key, counters, before)
      last_eval = eval_metrics or last_eval
      if stop_after is not None and this_call >= stop_after:
        break
  return state, counters, last_eval, time.perf_counter() - started
