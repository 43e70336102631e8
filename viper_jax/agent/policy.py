"""A trained agent as a collection Policy (`reset(seed)`, `__call__(obs, info) -> action`)."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from viper_jax import checkpoint
from viper_jax.agent import agent as agent_lib
from viper_jax.agent import env_actions


ACTING_PARAMS = ('wm', 'actor')  # the entries of the agent state that Agent.policy reads


def read_meta(directory) -> tuple[int, dict]:
  """(step, meta) of the newest checkpoint in an agent checkpoint directory."""
  path = epath.Path(directory).resolve()
  manager = ocp.CheckpointManager(path, item_names=('state', 'meta'))
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f'no agent checkpoint in {path} (expected <workdir>/checkpoints of '
                            '`viper train-agent`)')
  meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
  manager.close()
  if 'config' not in (meta or {}):
    raise ValueError(f'{path} step {step} is not an agent checkpoint (no config in its meta)')
  return step, dict(meta)


class AgentPolicy:
  """Acts with the agent's greedy (mode) action; keeps the latent state across an episode."""

  def __init__(self, agent: agent_lib.Agent, state, space, mode: bool = True):
    self.agent, self.state, self.space, self.mode = agent, state, space, mode
    self._policy = jax.jit(agent.policy)
    self.reset(0)

  def reset(self, seed: int) -> None:
    self._carry, self._first = self.agent.initial_carry(1), True
    self._key = jax.random.key(int(seed))

  def __call__(self, obs, info):
    self._key, sub = jax.random.split(self._key)
    action, self._carry = self._policy(
        self.state, self._carry, {'image': np.asarray(obs)[None],
                                  'is_first': np.array([self._first])}, sub,
        np.bool_(self.mode))
    self._first = False
    return env_actions.to_env_action(np.asarray(action)[0], self.space, self.agent.discrete)


def load_policy(directory: str, env) -> AgentPolicy:
  """Policy loader for 'agent:<checkpoint dir>' (pipeline.policy_loaders hands it to collection)."""
  step, meta = read_meta(directory)
  cfg = meta['config']
  agent_cfg = ml_collections.ConfigDict(cfg['agent'])
  action_dim, discrete = env_actions.action_spec(env.action_space)
  agent = agent_lib.Agent(agent_cfg, action_dim, discrete, tuple(cfg['env']['size']))
  # Shapes only, and only what acting reads (Agent.policy: the world model and the actor): the
  # optimiser states, critics and replay are neither templated nor read.
  shapes = jax.eval_shape(agent.init, jax.random.key(0))
  checkpointer = checkpoint.Checkpointer(directory)
  restored = checkpointer.restore_subtrees(
      step, {'agent': {name: shapes[name] for name in ACTING_PARAMS}})
  checkpointer.close()
  return AgentPolicy(agent, restored['agent'], env.action_space)

