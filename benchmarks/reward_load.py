"""Time and peak memory of `reward.load` (prints JSON; not part of the test suite).

  python benchmarks/reward_load.py make WORKDIR [CONFIG]   # a checkpoint of random train states
  python benchmarks/reward_load.py load WORKDIR            # one fresh process: load + measure

`make` saves full train states (optimiser states, discriminator, EMA) the way the train stages
do, so `load` reads a real-sized reward checkpoint. Peak memory is the growth of this process's
peak resident set (ru_maxrss) across the load; run `load` once per code version to compare.
"""
import json
import resource
import sys
import time


def make(workdir, config_arg='experiments/dmc.py:cartpole-swingup'):
  import jax
  from etils import epath
  from viper_jax import checkpoint, configs
  from viper_jax.video import train_prior, train_tokenizer
  config = configs.load_config(config_arg)
  root = epath.Path(workdir)
  for stage in ('tokenizer', 'prior'):
    (root / stage).mkdir(parents=True, exist_ok=True)
    (root / stage / 'config.json').write_text(config.to_json_best_effort(indent=2))
  tok = train_tokenizer.init_state(config.tokenizer, jax.random.key(0), config.env.size)
  saver = checkpoint.Checkpointer(root / 'tokenizer' / 'checkpoints')
  saver.save(1, tok, {'tasks': [config.task]})
  saver.close()
  build = getattr(train_prior, 'build_prior', None)
  if build is None:
    from viper_jax.video import priors
    build = priors.build_prior
  prior = build(config, 1)
  state = train_prior.init_state(prior, config.prior.train, jax.random.key(1),
                                 config.prior.train.window)
  saver = checkpoint.Checkpointer(root / 'prior' / 'checkpoints')
  saver.save(1, state, {'tasks': [config.task]})
  saver.close()


def load(workdir):
  import jax
  from viper_jax import reward
  jax.numpy.zeros(()).block_until_ready()  # backend start-up is not the load's cost
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  start = time.perf_counter()
  model = reward.load(workdir)
  jax.block_until_ready(model.params)
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  size = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(model.params))
  print(json.dumps({'load_seconds': round(seconds, 2),
                    'peak_rss_growth_mb': round((peak - before) / 1024, 1),
                    'params_mb': round(size / 2**20, 1)}))


if __name__ == '__main__':
  {'make': make, 'load': load}[sys.argv[1]](*sys.argv[2:])
