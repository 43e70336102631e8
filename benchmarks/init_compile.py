"""Seconds to compile and run each model's init: jitted as a step is vs `oneshot.run`.

Prints one JSON line: per model (quickstart tokenizer and prior, the CPU agent) the seconds of
both, their ratio and the largest weight difference. Run it with nothing cached
(no JAX_COMPILATION_CACHE_DIR).
"""
import json
import time

import jax
import numpy as np

from viper_jax import configs, oneshot
from viper_jax.agent import agent as agent_lib
from viper_jax.video import priors, vqgan


def _seconds(fn):
  start = time.time()
  out = jax.block_until_ready(fn())
  return out, time.time() - start


def main():
  video = configs.load_config('experiments/quickstart.py:dmc:cartpole-swingup')
  agent_config = configs.load_config('experiments/agent_cpu.py:dmc:cartpole-swingup')
  agent = agent_lib.Agent(agent_config.agent, 1, False, tuple(agent_config.env.size))
  inits = {
      'tokenizer': vqgan.init_fn(video.tokenizer, tuple(video.env.size)),
      'prior': priors.init_fn(priors.build_prior(video, 1), 2),
      'agent': agent.init,
  }
  result = {'backend': jax.default_backend()}
  for name, fn in inits.items():
    one, one_s = _seconds(lambda: oneshot.run(fn, jax.random.key(0)))
    jit, jit_s = _seconds(lambda: jax.jit(fn)(jax.random.key(0)))
    diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
               for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(jit)))
    result[name] = {'jit_s': round(jit_s, 2), 'oneshot_s': round(one_s, 2),
                    'speedup': round(jit_s / one_s, 2), 'max_abs_weight_diff': diff}
  print(json.dumps(result))


if __name__ == '__main__':
  main()
