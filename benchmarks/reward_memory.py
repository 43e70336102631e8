"""Memory of scoring one long trajectory: peak RSS for T = 1,000 and 10,000 frames.

  python benchmarks/reward_memory.py [--size=dmc] [--frames=1000,10000] [--max_seconds=1200]

Each T runs in its own process (under `nice -n 19`), so one peak does not hide another. A child
builds a random-weight reward model (experiments/dmc.py, or another preset size), makes uint8 frames [1, T, 64, 64, 3],
compiles `model.log_likelihood` and reports XLA's memory analysis of the compiled program (its
temporaries besides arguments and outputs), then scores the trajectory once and reports the
process's peak RSS and the seconds it took. The encoder runs `reward.encode_batch` frames at a
time and the prior `reward.chunk_frames` frames at a time, so the temporaries should not grow with
T beyond the codes and scores (bytes per frame: 4 per code, 4 per score), while the input frames
(12 KiB per frame at 64x64) are the caller's. A child that runs past --max_seconds is stopped; its
compile-time figures are still reported, with "scored": false. Prints one JSON line.
"""
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from absl import app, flags  # noqa: E402

_SIZE = flags.DEFINE_string('size', 'dmc', 'Preset size of tokenizer and prior.')
_FRAMES = flags.DEFINE_list('frames', ['1000', '10000'], 'Trajectory lengths, one process each.')
_MAX_SECONDS = flags.DEFINE_integer('max_seconds', 1200, 'Per-child time limit.')
_CHILD = flags.DEFINE_integer('child', None, 'Internal: score one trajectory of this length.')


def _mb(n: float) -> float:
  return round(n / 2 ** 20, 1)


def _rss_mb() -> float:
  return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def child(frames: int) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from viper_jax import configs, reward
  from viper_jax.reward import likelihood
  from viper_jax.video import presets
  config = configs.load_config('experiments/dmc.py:cartpole-swingup')
  if _SIZE.value != 'dmc':
    with config.unlocked():
      config.tokenizer = presets.tokenizer(_SIZE.value)
      config.prior = presets.prior(_SIZE.value)
  model = reward.RewardModel.init(config)
  video = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, frames, 64, 64, 3), np.uint8))
  rss_ready = _rss_mb()
  compiled = likelihood._jitted.lower(model._m, model.params, video, None, 'one_pass').compile()
  stats = compiled.memory_analysis()
  line = {'frames': frames, 'size': _SIZE.value, 'input_mb': _mb(video.nbytes),
          'chunk_frames': int(config.reward.chunk_frames),
          'encode_batch': int(config.reward.encode_batch),
          'rss_before_compile_mb': rss_ready,
          'xla_temp_mb': _mb(stats.temp_size_in_bytes) if stats else None,
          'xla_argument_mb': _mb(stats.argument_size_in_bytes) if stats else None,
          'rss_after_compile_mb': _rss_mb(), 'scored': False}
  print(json.dumps(line), flush=True)
  start = time.perf_counter()
  scores = jax.block_until_ready(model.log_likelihood(video))
  assert scores.shape == (1, frames) and bool(jnp.all(jnp.isfinite(scores)))
  line.update(scored=True, seconds=round(time.perf_counter() - start, 1), peak_rss_mb=_rss_mb())
  print(json.dumps(line), flush=True)


def main(_):
  if _CHILD.value is not None:
    child(_CHILD.value)
    return
  results = []
  for frames in map(int, _FRAMES.value):
    command = ['nice', '-n', '19', sys.executable, os.path.abspath(__file__), f'--child={frames}',
               f'--size={_SIZE.value}']
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    timed_out = False
    try:
      out, _ = process.communicate(timeout=_MAX_SECONDS.value)
    except subprocess.TimeoutExpired:
      process.kill()
      out, _ = process.communicate()
      timed_out = True
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{')]
    result = lines[-1] if lines else {'frames': frames}
    if timed_out:
      result['note'] = f'not scored within {_MAX_SECONDS.value} s; compile-time figures only'
    elif not result.get('scored'):
      result['error'] = f'the child exited with status {process.returncode} (its stderr is above)'
    results.append(result)
  print(json.dumps({'benchmark': 'reward_memory', 'results': results}))


if __name__ == '__main__':
  app.run(main)
