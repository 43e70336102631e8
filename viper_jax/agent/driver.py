"""The two halves of an agent run's step: acting into the replay, and learning from it.

  Driver:  environments -> policy (random during prefill) -> replay; episode bookkeeping.
  Learner: replay -> `train_ratio` replayed steps per policy step -> train_step.
Both are host-side objects around the pure, jitted policy and train step (agent/mesh.py).
"""
from __future__ import annotations

import dataclasses
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from viper_jax.agent import env_actions
from viper_jax.agent import mesh as agent_mesh
from viper_jax.agent.replay import Replay

REPLAY_KEYS = ('image', 'reward', 'is_first', 'is_last', 'is_terminal')


@dataclasses.dataclass
class Counters:
  """Progress of a run, saved in every checkpoint's meta (as a dict) and restored with it."""
  env_steps: int = 0  # policy steps over all environments of this host
  updates: int = 0  # train steps
  updates_due: float = 0.0  # fractional train steps owed at the train ratio
  episodes: int = 0  # finished training episodes

  @classmethod
  def from_dict(cls, values: dict) -> 'Counters':
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class EpisodeEnd(NamedTuple):
  env: int  # environment stream
  start: int  # absolute replay index of the episode's first step
  stop: int  # one past its last step
  true_return: float  # the task return: logged, never a reward for 'viper*' sources


class Driver:
  """Steps a BatchedEnv with the agent and appends every step to the replay.

  Keeps what spans steps: the policy carry, the actions chosen for the next env step, where each
  stream's episode began and its running true return.
  """

  def __init__(self, env, agent, policy_fn, replay: Replay, prefill: int,
               host_rng: np.random.Generator, deferred: bool):
    self.env, self.agent, self.policy_fn, self.replay = env, agent, policy_fn, replay
    self.prefill, self.host_rng = prefill, host_rng
    self.deferred = deferred  # steps wait for a 'density' label before they may be sampled
    self.num = env.num_envs
    self.carry, self.actions = agent.initial_carry(self.num), [None] * self.num
    self.episode_start = replay.count.copy()
    self.returns = np.zeros(self.num)
    self.timers = {'env': 0.0, 'policy': 0.0}

  def _act(self, state, obs, key, env_steps: int) -> np.ndarray:
    """float32 [N, A]: random during prefill (the latent still follows), else the policy."""
    inputs = {'image': obs['image'], 'is_first': obs['is_first']}
    action, self.carry = self.policy_fn(state, self.carry, inputs, key, np.bool_(False))
    if env_steps < self.prefill:
      action = env_actions.random_actions(self.host_rng, self.num, self.agent.action_dim,
                                          self.agent.discrete)
      self.carry = (self.carry[0], jnp.asarray(action))
    return np.asarray(action, np.float32)

  def step(self, state, key, env_steps: int) -> list[EpisodeEnd]:
    """Observes step t of every env, chooses a_t, appends to the replay; returns ended episodes."""
    tic = time.perf_counter()
    obs, _ = self.env.step(self.actions)
    self.timers['env'] += time.perf_counter() - tic
    tic = time.perf_counter()
    action = self._act(state, obs, key, env_steps)
    self.timers['policy'] += time.perf_counter() - tic
    space = self.env.action_space
    self.actions = [env_actions.to_env_action(a, space, self.agent.discrete) for a in action]
    step = {k: obs[k] for k in REPLAY_KEYS}
    step['action'] = action
    if self.deferred:
      step['density'] = np.zeros(self.num, np.float32)
    self.replay.add(step, ready=not self.deferred)

    self.returns += obs['reward']
    self.episode_start[obs['is_first']] = self.replay.count[obs['is_first']] - 1
    ended = [EpisodeEnd(int(i), int(self.episode_start[i]), int(self.replay.count[i]),
                        float(self.returns[i])) for i in np.flatnonzero(obs['is_last'])]
    for end in ended:
      self.returns[end.env] = 0.0
    return ended


def mean_metrics(rows: list[dict]) -> dict:
  """The mean of each metric over train steps (device arrays fetched once)."""
  rows = jax.device_get(rows)
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


class Learner:
  """Runs `train_ratio` replayed steps per policy step; keeps the metrics not yet logged."""

  def __init__(self, train_step, replay: Replay, mesh, agent_cfg, batch_size: int,
               host_rng: np.random.Generator, experts=None):
    self.train_step, self.replay, self.mesh = train_step, replay, mesh
    self.cfg, self.batch_size, self.host_rng, self.experts = agent_cfg, batch_size, host_rng, experts
    self.pending: list[dict] = []
    self.seconds = 0.0

  def _batch(self) -> dict:
    batch = self.replay.sample(self.batch_size, self.cfg.batch_length, self.host_rng)
    if self.experts is not None:
      batch['expert'] = self.experts.sample(self.batch_size * self.cfg.batch_length, self.host_rng)
    return agent_mesh.put_batch(batch, self.mesh)

  def train(self, state, key, counters: Counters, num_envs: int):
    """Pays the train steps owed for `num_envs` new policy steps. Returns (state, key)."""
    cfg = self.cfg
    if counters.env_steps < cfg.prefill or not self.replay.can_sample(cfg.batch_length):
      return state, key
    # Per host: its envs' steps against its share of the global batch.
    counters.updates_due += num_envs * cfg.train_ratio / (self.batch_size * cfg.batch_length)
    while counters.updates_due >= 1:
      batch = self._batch()
      key, train_key = jax.random.split(key)
      tic = time.perf_counter()
      state, metrics = self.train_step(state, batch, train_key)
      jax.block_until_ready(metrics['loss'])  # honest timers; CPU runs serially anyway
      self.seconds += time.perf_counter() - tic
      self.pending.append(metrics)
      counters.updates += 1
      counters.updates_due -= 1
    return state, key

  def metrics(self, clear: bool) -> dict | None:
    """The mean of the pending metrics (None if there are none); `clear` marks them logged."""
    if not self.pending:
      return None
    values = mean_metrics(self.pending)
    if clear:
      self.pending = []
    return values
