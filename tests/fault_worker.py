"""A stage at test size, as its own process, for tests/test_kills.py to SIGKILL and rerun.

Usage: python tests/fault_worker.py KIND WORKDIR, KIND one of
  video    tokenizer then prior on synthetic episodes (tests/conftest.py's config: 6 steps each,
           a checkpoint every 2, so its programs are the ones other tests compile)
  collect  tiny dmc:cartpole-balance collection (16x16, 12-step episodes)
  agent    tiny DreamerV3 run on dmc:cartpole-balance, env reward, 150 env steps
Each run appends one JSON line to WORKDIR/runs.jsonl when it finishes. Started by a test, it
inherits the suite's persistent compilation cache through the environment (tests/conftest.py).
"""
import json
import os
import pathlib
import sys

os.environ.setdefault('MUJOCO_GL', 'egl')
sys.path.insert(0, str(pathlib.Path(__file__).parent))


def video_config(root):
  from conftest import synthetic_video_config
  config = synthetic_video_config(root)
  # Evaluations only at the end: what they run is not what the kills test.
  config.prior.train.eval_every = config.prior.train.sample_every = config.prior.train.steps
  config.tokenizer.train.image_every = config.tokenizer.train.steps
  return config


def collect_config():
  from viper_jax import configs
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-balance')
  config.env.size, config.env.time_limit = (16, 16), 12
  c = config.collect
  c.train_episodes, c.test_episodes, c.random_test_episodes, c.workers = 3, 1, 1, 1
  c.test_noise_levels = (0.0, 0.5)
  return config


def agent_config():
  from test_agent_loop import tiny_config
  config = tiny_config('env', env_steps=150)
  config.agent.checkpoint_every = 50
  return config


def main(kind: str, workdir: str) -> None:
  root = pathlib.Path(workdir)
  result = {}
  if kind == 'video':
    from viper_jax.video import train_prior, train_tokenizer
    config = video_config(root)
    train_tokenizer.run(config, root)
    train_prior.run(config, root)
  elif kind == 'collect':
    from viper_jax.data import collect
    collect.run(collect_config(), root)
  elif kind == 'agent':
    from viper_jax.agent import loop
    out = loop.run(agent_config(), root)
    result = {'counters': out['counters'], 'resumed_from': out['resumed_from']}
  else:
    raise SystemExit(f'unknown kind {kind!r}')
  with open(root / 'runs.jsonl', 'a') as f:
    f.write(json.dumps({'kind': kind, **result}) + '\n')


if __name__ == '__main__':
  main(*sys.argv[1:])
