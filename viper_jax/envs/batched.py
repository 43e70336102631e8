"""Step N environments together, DreamerV3-style: a finished environment is reset on the next step.

`step(actions)` returns stacked arrays for all N environments:
  image uint8 [N, H, W, 3], reward float32 [N], is_first / is_last / is_terminal bool [N]
and a list of N info dicts. An environment whose previous step ended its episode ignores its
action and is reset instead (is_first=True, reward 0), which is exactly the step layout of the
episode format (step t holds the frame x_t and the reward for arriving at it).

mode='serial' steps in this process; mode='process' runs each environment in its own worker
process (spawned, so MuJoCo/EGL state is never forked), which uses every core for rendering;
there the constructors must be picklable (e.g. functools.partial(envs.make, name, ...)).
"""
from __future__ import annotations

import multiprocessing as mp
from typing import Callable, Sequence

import numpy as np


def _transition(env, action, needs_reset: bool, seed):
  """One environment's contribution to a batched step."""
  if needs_reset:
    obs, info = env.reset(seed=seed)
    return obs, 0.0, True, False, False, info
  obs, reward, terminated, truncated, info = env.step(action)
  return obs, reward, False, bool(terminated or truncated), bool(terminated), info


def _worker(pipe, make_env):
  env = make_env()
  try:
    while True:
      command, payload = pipe.recv()
      if command == 'transition':
        pipe.send(_transition(env, *payload))
      elif command == 'spaces':
        pipe.send((env.observation_space, env.action_space))
      elif command == 'close':
        break
  except (EOFError, KeyboardInterrupt):
    pass
  finally:
    env.close()
    pipe.close()


class BatchedEnv:
  """N environments stepped together with auto-reset. See the module docstring."""

  def __init__(self, make_fns: Sequence[Callable[[], object]], mode: str = 'serial'):
    if not make_fns:
      raise ValueError('BatchedEnv needs at least one environment constructor')
    if mode not in ('serial', 'process'):
      raise ValueError(f"mode must be 'serial' or 'process', got {mode!r}")
    self.mode = mode
    self.num_envs = len(make_fns)
    if mode == 'serial':
      self._envs = [make() for make in make_fns]
      self.observation_space = self._envs[0].observation_space
      self.action_space = self._envs[0].action_space
    else:
      context = mp.get_context('spawn')
      self._pipes, self._procs = [], []
      for make in make_fns:
        parent, child = context.Pipe()
        proc = context.Process(target=_worker, args=(child, make), daemon=True)
        proc.start()
        child.close()
        self._pipes.append(parent)
        self._procs.append(proc)
      self._pipes[0].send(('spaces', None))
      self.observation_space, self.action_space = self._pipes[0].recv()
    self._needs_reset = np.ones(self.num_envs, bool)

  def step(self, actions, seeds: Sequence[int | None] | None = None):
    """Steps every environment (resetting those whose episode ended).

    Args:
      actions: N actions (ignored for environments being reset).
      seeds: optional N seeds used for the resets that happen in this step.
    Returns:
      (batch dict of stacked arrays, list of N info dicts); see module docstring.
    """
    seeds = [None] * self.num_envs if seeds is None else list(seeds)
    payloads = [(actions[i], bool(self._needs_reset[i]), seeds[i]) for i in range(self.num_envs)]
    if self.mode == 'serial':
      results = [_transition(env, *p) for env, p in zip(self._envs, payloads)]
    else:
      for pipe, payload in zip(self._pipes, payloads):
        pipe.send(('transition', payload))
      results = [pipe.recv() for pipe in self._pipes]
    obs, reward, is_first, is_last, is_terminal, infos = zip(*results)
    self._needs_reset = np.array(is_last, bool)
    batch = {
        'image': np.stack(obs).astype(np.uint8),
        'reward': np.asarray(reward, np.float32),
        'is_first': np.asarray(is_first, bool),
        'is_last': np.asarray(is_last, bool),
        'is_terminal': np.asarray(is_terminal, bool),
    }
    return batch, list(infos)

  def close(self):
    if self.mode == 'serial':
      for env in self._envs:
        env.close()
    else:
      for pipe, proc in zip(self._pipes, self._procs):
        try:
          pipe.send(('close', None))
        except (BrokenPipeError, OSError):
          pass
        proc.join(timeout=5)
        if proc.is_alive():
          proc.terminate()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
