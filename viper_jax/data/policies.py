"""Policies that drive environments during collection.

A policy is any object with `reset(seed)` (called at each episode start) and
`__call__(obs, info) -> action`, where `obs` is the uint8 [H, W, 3] frame and `info` the
environment's info dict (scripted experts read `info['state']` for DMC, `info['ram']` for Atari).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import gymnasium
import numpy as np


class Policy(Protocol):

  def reset(self, seed: int) -> None:
    ...

  def __call__(self, obs: np.ndarray, info: dict) -> Any:
    ...


class RandomPolicy:
  """Uniformly random actions from the action space (seeded per episode)."""

  def __init__(self, action_space: gymnasium.Space):
    self.action_space = action_space

  def reset(self, seed: int) -> None:
    self.action_space.seed(int(seed))

  def __call__(self, obs, info):
    return self.action_space.sample()


class NoisyPolicy:
  """An expert degraded toward random: each step, with probability `noise`, a random action.

  noise=0 is the expert, noise=1 the random policy; the expected return moves between the two
  as noise grows, which gives graded demonstrations for testing whether a reward ranks behaviour.
  """

  def __init__(self, expert: Policy, action_space: gymnasium.Space, noise: float):
    if not 0.0 <= noise <= 1.0:
      raise ValueError(f'noise must be in [0, 1], got {noise}')
    self.expert = expert
    self.noise = float(noise)
    self._random = RandomPolicy(action_space)
    self._rng = np.random.default_rng(0)

  def reset(self, seed: int) -> None:
    self.expert.reset(seed)
    self._random.reset(seed + 1)
    self._rng = np.random.default_rng([int(seed), 7])

  def __call__(self, obs, info):
    # The expert is always queried so that stateful experts keep their internal state consistent.
    action = self.expert(obs, info)
    if self.noise > 0 and self._rng.random() < self.noise:
      return self._random(obs, info)
    return action


# A loader builds the policy of a '<kind>:<argument>' spec: loader(argument, env) -> Policy
# (e.g. the agent's, for 'agent:<checkpoint dir>'). The callers that know such kinds (pipeline,
# CLI) hand it in, so this layer never imports the layers above it. It must be a module-level
# function, so that collection workers can unpickle it.
PolicyLoader = Callable[[str, gymnasium.Env], Policy]


def loader_for(spec: str, loaders: Mapping[str, PolicyLoader]) -> PolicyLoader | None:
  """The loader of a '<kind>:<argument>' spec among `loaders` ({kind: loader}); None for
  'expert' and 'random'. Unknown kinds raise ValueError naming the known ones."""
  if spec in ('expert', 'random'):
    return None
  kind, sep, _ = spec.partition(':')
  if not sep or kind not in loaders:
    raise ValueError(f'Unknown policy {spec!r}: expected "expert", "random" or '
                     f'"<kind>:<argument>" with kind in {sorted(loaders) or "[none given]"}')
  return loaders[kind]


def make_policy(spec: str, env: gymnasium.Env, task: str, noise: float = 0.0,
                loader: PolicyLoader | None = None) -> Policy:
  """Builds a policy from its spec: 'expert' (scripted), 'random', or '<kind>:<argument>'
  (built by `loader`, see `loader_for`).

  noise > 0 degrades it toward random (see NoisyPolicy); 'random' ignores noise.
  """
  if spec == 'random':
    return RandomPolicy(env.action_space)
  if spec == 'expert':
    from viper_jax.data.experts import make_expert
    base = make_expert(task, env)
  else:
    if loader is None:
      raise ValueError(f'policy {spec!r} needs a loader for its kind (see policies.loader_for)')
    base = loader(spec.partition(':')[2], env)
  return NoisyPolicy(base, env.action_space, noise) if noise > 0 else base
