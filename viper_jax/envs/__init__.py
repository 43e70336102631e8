"""Environments: `make('dmc:<domain>-<task>')` and `make('atari:<game>')`, pixels uint8 [H, W, 3].

All environments follow the Gymnasium API (`reset(seed=)`, `step` -> obs, reward, terminated,
truncated, info). `BatchedEnv` steps several together with DreamerV3-style auto-reset.
"""
from __future__ import annotations

from viper_jax.envs.batched import BatchedEnv  # noqa: F401

# Defaults per suite, as in the paper: DMC acts every 2 control steps, Atari every 4 frames.
DEFAULT_ACTION_REPEAT = {'dmc': 2, 'atari': 4}


def env_names() -> list[str]:
  """Every name `make` accepts."""
  from viper_jax.envs import atari, dmc
  return dmc.dmc_task_names() + atari.atari_game_names()


def make(name: str, *, size=(64, 64), action_repeat: int | None = None,
         time_limit: int | None = None, seed: int | None = None, **kwargs):
  """Builds one environment by name.

  Args:
    name: 'dmc:<domain>-<task>' (e.g. 'dmc:cartpole-swingup') or 'atari:<game>' (e.g. 'atari:pong').
    size: (height, width) of the pixel observations.
    action_repeat: environment steps per agent step (DMC default 2, Atari frameskip default 4).
    time_limit: episode length limit in agent steps (default: the suite's standard episode).
    seed: seed used by the first `reset()` that is not given one.
    **kwargs: suite-specific options (Atari: sticky_action_prob, mask_score, ...).
  Returns:
    A gymnasium.Env whose observations are uint8 [H, W, 3].
  """
  suite, sep, task = name.partition(':')
  if not sep or suite not in DEFAULT_ACTION_REPEAT:
    raise ValueError(f'Unknown environment {name!r}: expected "dmc:<domain>-<task>" or '
                     f'"atari:<game>". Valid names: {", ".join(env_names())}')
  if action_repeat is None:
    action_repeat = DEFAULT_ACTION_REPEAT[suite]
  if suite == 'dmc':
    from viper_jax.envs import dmc
    if name not in dmc.dmc_task_names():
      raise ValueError(f'Unknown DMC task {name!r}. Valid DMC tasks: '
                       f'{", ".join(dmc.dmc_task_names())}')
    domain, _, task_name = task.partition('-')
    return dmc.DMCEnv(domain, task_name, size=size, action_repeat=action_repeat,
                      time_limit=time_limit, seed=seed, **kwargs)
  from viper_jax.envs import atari
  if name not in atari.atari_game_names():
    raise ValueError(f'Unknown Atari game {name!r}. Valid games: '
                     f'{", ".join(atari.atari_game_names())}')
  return atari.AtariEnv(task, size=size, action_repeat=action_repeat, time_limit=time_limit,
                        seed=seed, **kwargs)
