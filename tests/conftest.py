import os
import subprocess
import sys
import tempfile

os.environ.setdefault('MUJOCO_GL', 'egl')
# Stages re-jit their steps on every run (a resumed run is a new process in real life). One
# persistent compilation cache, set in the environment before jax is imported, serves this process
# and every subprocess a test starts (a stage rerun after SIGKILL, the pipeline CLI, a sweep), so an
# identical program compiles once per suite.
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                      os.path.join(tempfile.gettempdir(), 'viper_jax_test_jit_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')
# Set before jax, and inherited by subprocesses (set once, by whichever process imports this
# first; the xdist workers and every subprocess find them already in XLA_FLAGS):
# - four fake CPU devices, so sharded code is tested on a real multi-device mesh;
# - compile fast rather than run fast. The tiny test programs spend far longer compiling than
#   running, and the semantics do not depend on how XLA emits code (floats may differ in the last
#   bits, on both sides of every comparison alike). No LLVM backend optimisation (the killed
#   pipeline test: 229 s with it, 155 s without), and XLA:CPU's older loop emitters instead of its
#   fusion emitters (the tiny agent's train step compiles in 5.8 s instead of 19.7 s).
DEVICES_FLAG = '--xla_force_host_platform_device_count=4'
FAST_COMPILE_FLAGS = ('--xla_backend_optimization_level=0', '--xla_cpu_use_fusion_emitters=false')


def _xla_accepts(flags) -> bool:
  """Whether this jaxlib knows every flag: XLA aborts the process on an unknown one."""
  env = dict(os.environ, XLA_FLAGS=' '.join(flags), JAX_PLATFORMS='cpu')
  probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'], env=env,
                         capture_output=True)
  return probe.returncode == 0


if DEVICES_FLAG.split('=')[0] not in os.environ.get('XLA_FLAGS', ''):
  flags = [f for f in FAST_COMPILE_FLAGS if f.split('=')[0] not in os.environ.get('XLA_FLAGS', '')]
  if not _xla_accepts(flags):  # another jaxlib: compile the default way rather than not at all
    flags = [f for f in flags if _xla_accepts([f])]
  os.environ['XLA_FLAGS'] = ' '.join([os.environ.get('XLA_FLAGS', ''), DEVICES_FLAG, *flags]).strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def tiny_config():
  """The quickstart config shrunk to seconds: 16x16 frames, 12-step episodes, 1 worker."""
  from viper_jax import configs
  config = configs.load_config('experiments/quickstart.py:dmc:cartpole-balance')
  config.env.size = (16, 16)
  config.env.time_limit = 12
  config.collect.train_episodes = 2
  config.collect.test_episodes = 1
  config.collect.test_noise_levels = (0.0, 0.5)
  config.collect.random_test_episodes = 1
  config.collect.workers = 1
  return config


def saved_state(ckpt_dir):
  """(step, state) of the newest checkpoint in `ckpt_dir`, read with no template: the saved
  arrays as they are, on the host (only the state item; meta needs its own args)."""
  import jax
  import orbax.checkpoint as ocp
  from viper_jax import checkpoint
  c = checkpoint.Checkpointer(ckpt_dir)
  step = c.latest_step()
  restored = c._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  c.close()
  return step, jax.device_get(restored['state'])


def synthetic_episode(seed: int, length: int = 24, size: int = 32, task: str = 'dmc:synthetic'):
  """A square bouncing over a striped background: structured, predictable frames."""
  rng = np.random.default_rng(seed)
  frames = np.zeros((length, size, size, 3), np.uint8)
  frames[..., 2] = 60 + 40 * (np.arange(size) // 4 % 2)[None, None, :]
  pos, vel = rng.integers(0, size - 8, 2), rng.choice([-2, 2], 2)
  for t in range(length):
    frames[t, pos[0]:pos[0] + 8, pos[1]:pos[1] + 8] = (230, 180, 40)
    vel = np.where((pos + vel < 0) | (pos + vel > size - 8), -vel, vel)
    pos = pos + vel
  is_last = np.arange(length) == length - 1
  return {'image': frames, 'action': np.zeros((length, 1), np.float32),
          'reward': np.zeros(length, np.float32), 'is_first': np.arange(length) == 0,
          'is_last': is_last, 'is_terminal': np.zeros(length, bool), 'task': task,
          'source': 'expert:scripted', 'seed': seed, 'noise': 0.0, 'action_repeat': 2}


def synthetic_video_config(root):
  """A tiny tokenizer + prior config over a store of synthetic 32x32 episodes in root/episodes
  (3 train, 1 test). Tests that train on it keep its step counts and schedules where they can:
  the same programs then compile once per suite (the persistent cache)."""
  from viper_jax import configs
  from viper_jax.data.store import EpisodeStore
  store = EpisodeStore(root / 'episodes')
  for i in range(3):
    store.save(synthetic_episode(i), 'train', f'ep{i}')
  store.save(synthetic_episode(10), 'test', 'ep10')
  config = configs.load_config('experiments/quickstart.py:dmc:synthetic')
  config.env.size = (32, 32)
  config.data.root = str(store.root)
  from viper_jax.video import presets
  with config.unlocked():
    config.tokenizer = presets.tokenizer('tiny')
    config.prior = presets.prior('tiny')
  t = config.tokenizer.train
  t.steps, t.batch_size, t.log_every, t.image_every, t.checkpoint_every = 6, 8, 2, 3, 2
  p = config.prior.train
  p.steps, p.batch_size, p.log_every, p.eval_every, p.checkpoint_every, p.sample_every = (
      6, 4, 2, 3, 2, 6)
  p.ema_decay = 0.5  # so that the EMA params differ from the raw ones after a few steps
  return config


@pytest.fixture
def video_config(tmp_path):
  return synthetic_video_config(tmp_path)
