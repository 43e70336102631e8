"""Programs that run once, such as parameter init, compiled for compile time, not run time.

XLA's CPU backend spends most of an init's compile time in LLVM optimising code that runs a
single time: the tiny test tokenizer's init (3,300 HLO lines, mostly threefry for 120 weight
tensors) compiles in 36 s by default and in 4 s without backend optimisation, and its weights
differ by at most 1 ulp. Steps that run many times keep the default.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

# Only the CPU backend: there the LLVM pass is the cost, and the option is known to be honoured.
_CPU_ONE_SHOT_OPTIONS = {'xla_backend_optimization_level': 0}


def run(fn: Callable[..., Any], *args) -> Any:
  """fn(*args), jitted and compiled for one run (concrete args; under a trace, use fn itself)."""
  jitted = jax.jit(fn)
  if jax.default_backend() != 'cpu':
    return jitted(*args)
  return jitted.lower(*args).compile(compiler_options=_CPU_ONE_SHOT_OPTIONS)(*args)
