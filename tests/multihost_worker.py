"""One process of the two-process test in test_multihost.py (not a test module itself).

usage: python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_DIR

Each process has 2 fake CPU devices; with NUM_PROCESSES=2 the mesh spans 4 devices on 2 "hosts".
It scores its own rows of a fixed batch with the reward model, runs 3 prior train steps on its own
share of fixed batches, and saves what it sees to OUT_DIR/process<ID>.npz.
"""
import os
import sys

process_id, num_processes, port, out_dir = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                            sys.argv[4])
devices_per_process = 4 // num_processes
# Its own device count; the suite's other XLA flags (tests/conftest.py) stay.
os.environ['XLA_FLAGS'] = ' '.join(
    [f for f in os.environ.get('XLA_FLAGS', '').split()
     if not f.startswith('--xla_force_host_platform_device_count')]
    + [f'--xla_force_host_platform_device_count={devices_per_process}'])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from viper_jax import parallel  # noqa: E402

if num_processes > 1:
  parallel.initialize_distributed(coordinator_address=f'localhost:{port}',
                                  num_processes=num_processes, process_id=process_id)

from conftest import synthetic_episode  # noqa: E402
from viper_jax import configs, reward  # noqa: E402
from viper_jax.video import presets, priors, train_prior  # noqa: E402


def tiny_config():
  config = configs.load_config('experiments/quickstart.py:dmc:synthetic')
  config.env.size = (32, 32)
  with config.unlocked():
    config.tokenizer = presets.tokenizer('tiny')
    config.prior = presets.prior('tiny')
    config.prior.dtype = config.tokenizer.dtype = 'float32'
  return config


def barrier(name: str) -> None:
  """Waits for every process. Cross-process collectives (gloo) give up after 30 s, and on a loaded
  2-core machine one process can still be compiling that long: meet before each of them."""
  if num_processes > 1:
    from jax._src import distributed
    distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=600_000)


def main():
  assert jax.device_count() == 4 and jax.process_count() == num_processes
  mesh = parallel.make_mesh()
  rows = parallel.host_shard(4)
  config = tiny_config()

  # Reward: this host's rows of a fixed batch of 4 trajectories.
  frames = np.stack([synthetic_episode(i, 6, 32)['image'] for i in range(4)])
  params = reward.RewardModel.init(config, seed=1).params
  barrier('reward')
  model = reward.RewardModel(config, params, mesh=mesh)  # replicates params: a collective check
  lp = np.asarray(model.log_likelihood(frames[rows]))

  # Prior: three data-parallel train steps; this host feeds its rows of each global batch.
  prior = priors.build_prior(config, num_tasks=1)
  tcfg = config.prior.train
  state = train_prior.init_state(prior, tcfg, jax.random.key(0), 3)
  barrier('state')
  state = parallel.put_replicated(state, mesh)
  step = parallel.jit_train_step(train_prior.make_train_step(prior, tcfg), mesh, donate=False)
  rng = np.random.default_rng(0)
  batches = [{'codes': rng.integers(0, 32, (8, 3, prior.tokens_per_frame)).astype(np.int32),
              'task_id': np.zeros((8,), np.int32)} for _ in range(3)]
  host_rows = parallel.host_shard(8)
  batches = [parallel.put_batch({k: v[host_rows] for k, v in b.items()}, mesh) for b in batches]
  step = step.lower(state, batches[0], jax.random.key(0)).compile()  # compile before meeting
  barrier('train')
  losses = []
  for i, batch in enumerate(batches):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
  params = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state['params'])]
  np.savez(os.path.join(out_dir, f'process{process_id}.npz'), lp=lp, losses=np.array(losses),
           **{f'param{i}': p for i, p in enumerate(params)})


if __name__ == '__main__':
  main()
