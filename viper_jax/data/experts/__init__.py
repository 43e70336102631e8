"""Scripted expert policies by environment name. Each reads privileged state from `info`
(`info['state']` for DMC, `info['ram']` for Atari), never the pixels."""
from __future__ import annotations


def _table() -> dict:
  from viper_jax.data.experts.atari import ATARI_EXPERTS
  from viper_jax.data.experts.dmc import DMC_EXPERTS
  return {**DMC_EXPERTS, **ATARI_EXPERTS}


def expert_tasks() -> list[str]:
  """Environment names that have a scripted expert."""
  return sorted(_table())


def make_expert(task: str, env):
  """The scripted expert for `task`, bound to `env` (reads its action space and constants)."""
  table = _table()
  if task not in table:
    raise ValueError(f'No scripted expert for {task!r}; experts exist for: '
                     f'{", ".join(sorted(table))}. Use policy "random" or "agent:<checkpoint>".')
  return table[task](env)
