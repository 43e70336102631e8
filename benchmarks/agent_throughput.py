"""Agent throughput: env steps/s, train steps/s and the share of wall time spent on VIPER rewards.

  python benchmarks/agent_throughput.py [--env_steps=400] [--reward_size=small] [--agent_size=xs]

Runs `agent.loop.run` with reward_source 'viper' on dmc:cartpole-balance (100-step episodes) with
a random-weight reward model (`reward.RewardModel.init`, presets `--reward_size`). If the reward
package cannot be imported, a documented fake stands in: a causal per-frame score (mean pixel),
whose cost is negligible, and the JSON says so ('reward_model': 'fake'). A first, short run
compiles everything (train step, policy, reward model at the padded episode length); the timed
run resumes it, so the numbers are steady state:

  env_steps_per_s    policy steps / wall time of the timed run (acting, training, rewards, evals)
  train_steps_per_s  updates / time inside train_step (blocked until done)
  viper_share        time inside likelihood_fn / wall time of the timed run

Prints one JSON line.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
os.environ.setdefault('MUJOCO_GL', 'egl')

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from benchmarks import common  # noqa: E402

_ENV_STEPS = flags.DEFINE_integer('env_steps', 400, 'Policy steps of the timed run.')
_WARMUP = flags.DEFINE_integer('warmup_steps', 200, 'Policy steps of the compiling first run.')
_AGENT_SIZE = flags.DEFINE_string('agent_size', 'xs', "Agent size: 'xs', 's', 'm', 'l'.")
_REWARD_SIZE = flags.DEFINE_string('reward_size', 'small', 'Tokenizer/prior preset of the '
                                   'random-weight reward model.')
_TRAIN_RATIO = flags.DEFINE_integer('train_ratio', None, 'Replayed steps per policy step '
                                    '(default: the size preset).')


def fake_likelihood(frames):
  """Stand-in when viper_jax.reward is unavailable: causal, per-frame, nearly free."""
  return np.asarray(frames, np.float32).mean((2, 3, 4))


def build_config():
  """The quickstart experiment (agent 'xs'), resized by the flags, on cartpole-balance."""
  from viper_jax import configs
  from viper_jax.agent import agent_config
  from viper_jax.video import presets
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-balance')
  config.env.time_limit = 100
  with config.unlocked():
    config.agent = agent_config(_AGENT_SIZE.value)
    config.tokenizer = presets.tokenizer(_REWARD_SIZE.value)
    config.prior = presets.prior(_REWARD_SIZE.value)
  a = config.agent
  a.reward_source = 'viper'
  a.prefill, a.log_every, a.checkpoint_every = 100, 100, 10 ** 9
  a.eval_every, a.eval_episodes = 10 ** 9, 1
  a.replay_capacity = 10_000
  if _TRAIN_RATIO.value:
    a.train_ratio = _TRAIN_RATIO.value
  return config


def likelihood_for(config):
  try:
    from viper_jax import reward
    model = reward.RewardModel.init(config, seed=0)
    return (lambda frames: np.asarray(model.log_likelihood(frames))), 'random-weights:' + \
        _REWARD_SIZE.value
  except Exception as e:  # noqa: BLE001 - any failure: fall back and say so in the JSON
    print(f'reward model unavailable ({type(e).__name__}: {e}); using the fake', file=sys.stderr)
    return fake_likelihood, 'fake'


def main(_):
  from viper_jax.agent import loop
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = build_config()
  likelihood_fn, reward_model = likelihood_for(config)
  with tempfile.TemporaryDirectory() as workdir:
    config.agent.env_steps = _WARMUP.value
    loop.run(config, workdir, likelihood_fn)  # compiles; ends with a checkpoint to resume from
    config.agent.env_steps = _WARMUP.value + _ENV_STEPS.value
    result = loop.run(config, workdir, likelihood_fn)
  steps = result['counters']['env_steps'] - result['resumed_from']['env_steps']
  updates = result['counters']['updates'] - result['resumed_from']['updates']
  if updates == 0:
    # Training waits for a complete batch_length sequence of scored (finished-episode) steps.
    sys.exit(f'the timed run made no updates: with batch_length {config.agent.batch_length}, '
             f'{config.agent.num_envs} environments and {config.env.time_limit}-step episodes, '
             'raise --warmup_steps/--env_steps so that episodes finish before it ends')
  report = {
      'benchmark': 'agent_throughput', 'device': common.device_description(),
      'agent_size': _AGENT_SIZE.value, 'reward_model': reward_model,
      'train_ratio': config.agent.train_ratio, 'batch': [config.agent.batch_size,
                                                         config.agent.batch_length],
      'env_steps': steps, 'updates': updates, 'seconds': result['seconds'],
      'env_steps_per_s': steps / result['seconds'],
      'train_steps_per_s': updates / max(result['timers']['train'], 1e-9),
      'viper_share': result['reward_seconds'] / result['seconds'],
      'seconds_by_part': {**{k: round(v, 2) for k, v in result['timers'].items()},
                          'viper': round(result['reward_seconds'], 2)},
  }
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
