"""The quickstart experiment: the whole VIPER pipeline on one DMC task, sized for a 2-core CPU.

Usage: viper quickstart [--workdir=runs/quickstart]   (or any stage: viper collect --config=...)
ARG (experiments/quickstart.py:TASK) defaults to dmc:cartpole-swingup.

Everything is small so that it finishes in about a quarter of an hour on a laptop CPU. What it
shows: expert videos -> tokenizer -> prior -> a reward that ranks expert above noisy above random
behaviour -> an agent trained on that reward for a few episodes. The agent is far too small and
too briefly trained to solve the task here; experiments/dmc.py has the paper-scale settings.
"""
import ml_collections

from viper_jax.config_sections import experiment


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = experiment(arg or 'dmc:cartpole-swingup', tokenizer='small', prior='small', agent='xs')
  config.env.action_repeat = 2
  config.env.time_limit = 250  # agent steps (500 frames): the swing-up happens in the first 150
  config.collect.train_episodes = 8

  t = config.tokenizer  # 8x8 codes of 128; narrow and briefly trained
  t.channels = 16
  t.train.batch_size, t.train.steps, t.train.learning_rate = 16, 400, 1e-3
  t.train.image_every = t.train.checkpoint_every = 200

  p = config.prior  # 2 layers of 64 over 4-frame windows
  p.num_layers, p.width, p.num_heads, p.mlp_dim, p.context = 2, 64, 4, 256, 4
  p.train.window, p.train.batch_size, p.train.steps, p.train.learning_rate = 4, 16, 300, 1e-3
  p.train.eval_every = p.train.checkpoint_every = 150
  p.train.sample_every = 300

  # CPU: tokenizer batches of 8 frames are faster (likely cache-friendlier; not profiled): a
  # 2x101-frame batch scored in ~2.0 s against ~2.45 s with the accelerator default of 256
  # (the `small` tokenizer preset, 2 cores).
  config.reward.encode_batch = 8

  a = config.agent
  a.reward_source = 'viper'  # the VIPER likelihood only; the task reward is never used
  a.env_steps, a.prefill, a.eval_every, a.checkpoint_every = 1500, 250, 750, 750
  config.lock()
  return config
