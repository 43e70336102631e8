"""Does the VIPER reward rank behaviour like the true reward? Train small, score held-out episodes.

  python benchmarks/reward_quality.py --task=dmc:cartpole-swingup [--workdir=...]
      [--time_limit=200] [--tokenizer_steps=600] [--prior_steps=500] ...

Stages (each resumes by itself, so a rerun with the same workdir continues where it stopped):
  1. collect expert episodes (train: noise 0) and test episodes (expert at several noise levels,
     plus random) into <workdir>/episodes;
  2. train a tokenizer and a prior on the expert train episodes, a fast CPU-sized config;
  3. `reward.load(workdir)` and score every test episode in one pass.

The per-episode VIPER score is the mean of lp[:, t] over ALL steps t (lp[:, 0], the first frame
from the task alone, included); the true return is the episode's reward sum. Reported: Spearman
rank correlation of the two over all test episodes (and over the expert-noise episodes only),
AUROC of expert (noise 0) vs random episodes by VIPER score, per-group means, stage times,
tokenizer test PSNR and prior validation bits per token. Prints one JSON line.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_TASK = flags.DEFINE_string('task', 'dmc:cartpole-swingup', 'Task with a scripted expert.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Default: runs/reward_quality/<task dir>.')
_TIME_LIMIT = flags.DEFINE_integer('time_limit', 200, 'Agent steps per episode.')
_TRAIN_EPISODES = flags.DEFINE_integer('train_episodes', 8, 'Expert (noise 0) train episodes.')
_TEST_NOISE = flags.DEFINE_list('test_noise_levels', ['0.0', '0.25', '0.5', '0.75', '1.0'],
                                'Noise levels of the expert test episodes.')
_TEST_EPISODES = flags.DEFINE_integer('test_episodes', 2, 'Test episodes per noise level.')
_RANDOM_EPISODES = flags.DEFINE_integer('random_test_episodes', 3, 'Random-policy test episodes.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Collection worker processes.')
_TOK_SIZE = flags.DEFINE_string('tokenizer_size', 'small', 'Tokenizer preset.')
_TOK_CHANNELS = flags.DEFINE_integer('tokenizer_channels', 16, 'Tokenizer base channels.')
_TOK_BATCH = flags.DEFINE_integer('tokenizer_batch', 16, 'Tokenizer frames per step.')
_TOK_STEPS = flags.DEFINE_integer('tokenizer_steps', 600, 'Tokenizer train steps.')
_TOK_LR = flags.DEFINE_float('tokenizer_lr', 1e-3, 'Tokenizer learning rate.')
_PRIOR_SIZE = flags.DEFINE_string('prior_size', 'small', 'Prior preset.')
_PRIOR_LAYERS = flags.DEFINE_integer('prior_layers', None, 'Prior layers (default: preset).')
_PRIOR_WIDTH = flags.DEFINE_integer('prior_width', None, 'Prior width (default: preset).')
_PRIOR_CONTEXT = flags.DEFINE_integer('prior_context', 8, 'Prior context (= train window).')
_PRIOR_BATCH = flags.DEFINE_integer('prior_batch', 16, 'Prior windows per step.')
_PRIOR_STEPS = flags.DEFINE_integer('prior_steps', 500, 'Prior train steps.')
_PRIOR_LR = flags.DEFINE_float('prior_lr', 1e-3, 'Prior learning rate.')

TIMES_FILE = 'reward_quality_times.json'


def make_config(task: str):
  from viper_jax import configs
  from viper_jax.video import presets
  config = configs.load_config(f'experiments/quickstart.py:{task}')
  tok = presets.tokenizer(_TOK_SIZE.value)
  tok.channels = _TOK_CHANNELS.value
  tok.train.batch_size = _TOK_BATCH.value
  tok.train.steps = _TOK_STEPS.value
  tok.train.learning_rate = tok.train.disc_learning_rate = _TOK_LR.value
  tok.train.warmup_steps = min(tok.train.warmup_steps, _TOK_STEPS.value // 10)
  tok.train.image_every = tok.train.checkpoint_every = max(_TOK_STEPS.value // 2, 1)
  prior = presets.prior(_PRIOR_SIZE.value)
  if _PRIOR_LAYERS.value:
    prior.num_layers = _PRIOR_LAYERS.value
  if _PRIOR_WIDTH.value:
    prior.width, prior.mlp_dim = _PRIOR_WIDTH.value, 4 * _PRIOR_WIDTH.value
  prior.context = prior.train.window = _PRIOR_CONTEXT.value
  prior.train.batch_size = _PRIOR_BATCH.value
  prior.train.steps = _PRIOR_STEPS.value
  prior.train.learning_rate = _PRIOR_LR.value
  prior.train.warmup_steps = min(prior.train.warmup_steps, _PRIOR_STEPS.value // 10)
  prior.train.eval_every = prior.train.checkpoint_every = max(_PRIOR_STEPS.value // 2, 1)
  prior.train.sample_every = _PRIOR_STEPS.value  # one sample video at the end
  with config.unlocked():
    config.env.time_limit = _TIME_LIMIT.value
    config.collect.train_noise_levels = (0.0,)
    config.collect.train_episodes = _TRAIN_EPISODES.value
    config.collect.test_noise_levels = tuple(float(n) for n in _TEST_NOISE.value)
    config.collect.test_episodes = _TEST_EPISODES.value
    config.collect.random_test_episodes = _RANDOM_EPISODES.value
    config.collect.workers = _WORKERS.value
    config.tokenizer = tok
    config.prior = prior
  return config


def group_name(path) -> str:
  """'expert-noise0.25-0000.npz' -> 'expert_noise0.25'; 'random-0000.npz' -> 'random'."""
  stem = path.name[:-len('.npz')]
  return stem.rsplit('-', 1)[0].replace('-', '_')


def timed(times: dict, stage: str, fn):
  start = time.time()
  result = fn()
  times[stage] = times.get(stage, 0.0) + time.time() - start  # summed over resumed runs
  return result


def score_episodes(model, paths):
  """Mean VIPER reward (over all steps) and true return of each episode file."""
  import jax
  from viper_jax.data import episodes
  loaded = [episodes.load_episode(p, keys=('image', 'reward')) for p in paths]
  by_length = {}
  for i, ep in enumerate(loaded):
    by_length.setdefault(len(ep['image']), []).append(i)
  mean_lp = np.zeros(len(paths))
  for indices in by_length.values():  # one compilation per distinct length
    frames = np.stack([loaded[i]['image'] for i in indices])
    lp = np.asarray(jax.device_get(model.log_likelihood(frames)))  # [B, T]
    mean_lp[indices] = lp.mean(axis=1)
  returns = np.array([episodes.episode_return(ep) for ep in loaded])
  return mean_lp, returns, len(loaded[0]['image'])


def main(_):
  from etils import epath
  from viper_jax import reward
  from viper_jax.data import collect
  from viper_jax.reward import check
  from viper_jax.data.store import EpisodeStore, task_dirname
  from viper_jax.video import train_prior, train_tokenizer

  task = _TASK.value
  workdir = epath.Path(_WORKDIR.value or os.path.join('runs', 'reward_quality', task_dirname(task)))
  workdir.mkdir(parents=True, exist_ok=True)
  config = make_config(task)
  times_path = workdir / TIMES_FILE
  times = json.loads(times_path.read_text()) if times_path.exists() else {}

  def save_times():
    times_path.write_text(json.dumps(times))

  timed(times, 'collect_s', lambda: collect.run(config, workdir))
  save_times()
  tok_result = timed(times, 'tokenizer_s', lambda: train_tokenizer.run(config, workdir))
  save_times()
  prior_result = timed(times, 'prior_s', lambda: train_prior.run(config, workdir))
  save_times()

  start = time.time()
  model = reward.load(workdir)
  store = EpisodeStore(workdir / 'episodes')
  paths = store.paths(task, 'test')
  mean_lp, returns, length = score_episodes(model, paths)
  score_s = time.time() - start
  groups = [group_name(p) for p in paths]
  is_expert0 = np.array([g == 'expert_noise0.00' for g in groups])
  is_random = np.array([g == 'random' for g in groups])
  is_expert = ~is_random

  per_group = {}
  for g in sorted(set(groups), key=lambda g: (g == 'random', g)):
    sel = np.array([x == g for x in groups])
    per_group[g] = {'episodes': int(sel.sum()), 'viper_mean': float(mean_lp[sel].mean()),
                    'true_return': float(returns[sel].mean())}
  report = {
      'benchmark': 'reward_quality', 'task': task,
      'spearman': check.spearman(mean_lp, returns),
      'spearman_expert_noise_only': check.spearman(mean_lp[is_expert], returns[is_expert]),
      'auroc_expert_vs_random': (check.auroc(mean_lp[is_expert0], mean_lp[is_random])
                                 if is_expert0.any() and is_random.any() else None),
      'viper_score': 'mean over all steps of lp[:, t] (lp[:, 0] included), nats per frame',
      'test_episodes': len(paths), 'episode_length': length, 'per_group': per_group,
      'per_episode': {p.name[:-len('.npz')]: [round(float(v), 2), round(float(r), 2)]
                      for p, v, r in zip(paths, mean_lp, returns)},  # [viper mean, return]
      'tokenizer_test_psnr': tok_result.get('psnr'),
      'tokenizer_codebook_usage': tok_result.get('usage'),
      'prior_val_bits_per_token': prior_result.get('val_bits_per_token'),
      'prior_uniform_bits_per_token': prior_result.get('uniform_bits_per_token'),
      'times_s': {**{k: round(v, 1) for k, v in times.items()}, 'score_s': round(score_s, 1)},
      'config': {'time_limit': _TIME_LIMIT.value, 'train_episodes': _TRAIN_EPISODES.value,
                 'tokenizer': f'{_TOK_SIZE.value} ch{_TOK_CHANNELS.value} '
                              f'b{_TOK_BATCH.value} x{_TOK_STEPS.value}',
                 'prior': f'{_PRIOR_SIZE.value} L{config.prior.num_layers} '
                          f'W{config.prior.width} c{config.prior.context} '
                          f'b{_PRIOR_BATCH.value} x{_PRIOR_STEPS.value}'},
      'workdir': str(workdir),
  }
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
