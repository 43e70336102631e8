"""Between the agent's actions and an environment's: spaces, conversion, construction."""
from __future__ import annotations

import numpy as np


def make_env(task, size, action_repeat, time_limit, seed):
  """One pixel environment (envs.make), imported late so the agent package loads without it."""
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


def random_actions(rng: np.random.Generator, num: int, action_dim: int,
                   discrete: bool) -> np.ndarray:
  """float32 [num, A]: uniform in [-1, 1], or uniform one-hot (the prefill policy)."""
  if discrete:
    return np.eye(action_dim, dtype=np.float32)[rng.integers(0, action_dim, num)]
  return rng.uniform(-1, 1, (num, action_dim)).astype(np.float32)
