"""Training loops of the video model: sharded == single device. Resume == uninterrupted, through
real kills, is tests/test_kills.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import synthetic_episode

from viper_jax import checkpoint, parallel
from viper_jax.video import presets, priors, token_cache, train_prior, train_tokenizer


def _frames(count=8, size=32):
  return np.concatenate([synthetic_episode(i, length=count // 2, size=size)['image']
                         for i in range(2)])


def _assert_trees_close(a, b, rtol, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _assert_same_adam_step(a, b, learning_rate):
  """Params after one Adam step on 1 vs 4 devices.

  Only the order of the cross-device gradient sums differs (float32 round-off). Adam's first
  update is lr * g / (|g| + eps), which turns round-off in near-zero gradients into differences of
  up to lr for those few elements; so: every element within lr / 4, and the mean difference below
  lr / 1000 (a genuinely different step moves most elements by about lr).
  """
  diffs = np.concatenate([np.abs(np.asarray(x) - np.asarray(y)).ravel()
                          for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))])
  assert diffs.max() <= learning_rate / 4, diffs.max()
  assert diffs.mean() <= learning_rate / 1000, diffs.mean()


def _run_step(step, state, batch, devices):
  mesh = parallel.make_mesh(devices)
  fn = parallel.jit_train_step(step, mesh, donate=False)
  state = jax.device_put(state, parallel.replicated(mesh))
  return fn(state, jax.device_put(batch, parallel.data_sharding(mesh)), jax.random.key(3))


def test_four_devices_are_available():
  assert jax.device_count() >= 4, 'conftest must force 4 CPU devices'


def test_tokenizer_step_on_four_devices_equals_one_device():
  cfg = presets.tokenizer('tiny')
  cfg.gan_start_step = 0  # exercise the discriminator branch too
  state = train_tokenizer.init_state(cfg, jax.random.key(0), (32, 32))
  step = train_tokenizer.make_train_step(cfg)
  frames = _frames()
  one, m1 = _run_step(step, state, frames, jax.devices()[:1])
  four, m4 = _run_step(step, state, frames, jax.devices()[:4])
  _assert_same_adam_step(one['params'], four['params'], cfg.train.learning_rate)
  _assert_same_adam_step(one['disc_params'], four['disc_params'], cfg.train.disc_learning_rate)
  _assert_trees_close(one['vq_stats'], four['vq_stats'], rtol=1e-4, atol=1e-6)
  for key in ('loss', 'grad_norm', 'disc_loss', 'perplexity'):
    np.testing.assert_allclose(float(m1[key]), float(m4[key]), rtol=1e-5)
  assert not np.allclose(np.asarray(jax.tree.leaves(one['params'])[0]),
                         np.asarray(jax.tree.leaves(state['params'])[0]))  # it did train


@pytest.mark.parametrize('rows', [8, 3])
def test_prior_step_on_four_devices_equals_one_device(video_config, rows):
  """8 rows split over 4 devices, or 3 rows padded with a zero-weight row: the step equals one
  device's on the real rows."""
  prior = priors.build_prior(video_config, num_tasks=2)
  tcfg = video_config.prior.train
  state = train_prior.init_state(prior, tcfg, jax.random.key(0), window=3)
  rng = np.random.default_rng(rows)
  batch = {'codes': rng.integers(0, 32, (rows, 3, prior.tokens_per_frame)).astype(np.int32),
           'task_id': rng.integers(0, 2, rows).astype(np.int32)}
  step = train_prior.make_train_step(prior, tcfg)
  one, m1 = _run_step(step, state, batch, jax.devices()[:1])
  sharded = train_prior.pad_batch(batch, parallel.make_mesh(jax.devices()[:4]))
  if rows % 4:
    assert sharded['codes'].shape[0] == 4 and sharded['weight'].tolist() == [1, 1, 1, 0]
  four, m4 = _run_step(step, state, sharded, jax.devices()[:4])
  _assert_same_adam_step(one['params'], four['params'], tcfg.learning_rate)
  for key in ('loss', 'grad_norm'):
    np.testing.assert_allclose(float(m1[key]), float(m4[key]), rtol=1e-5)


def _final_state(directory, template):
  ckpt = checkpoint.Checkpointer(directory)
  state, _, step = ckpt.restore_latest(template)
  ckpt.close()
  return state, step


def test_two_tokenizers_sharing_a_store_keep_both_caches(video_config, tmp_path):
  from viper_jax.data.store import EpisodeStore
  store = EpisodeStore(video_config.data.root)
  tasks = ['dmc:synthetic']
  calls = []

  def encoder(offset):
    def encode(frames):
      calls.append(len(frames))
      return np.full((len(frames), 4, 4), offset, np.int32)
    return encode

  assert token_cache.build(store, tasks, encoder(1), {'step': 1}, batch_size=16) == 4
  assert token_cache.build(store, tasks, encoder(1), {'step': 1}, batch_size=16) == 0  # cached
  (episode,) = [e for e in token_cache.load(store, tasks, 'test', {'step': 1})]
  assert episode.codes.shape == (24, 4, 4) and np.all(episode.codes == 1)
  (later,) = token_cache.load(store, tasks, 'test', {'step': 1}, drop_first=5)  # data.drop_first_frames
  assert later.codes.shape == (19, 4, 4)
  # A second tokenizer (another experiment on the same store) gets a cache of its own ...
  assert token_cache.build(store, tasks, encoder(2), {'step': 2}, batch_size=16) == 4
  assert all(np.all(e.codes == 2) for e in token_cache.load(store, tasks, 'train', {'step': 2}))
  # ... and the first one's is untouched: still complete, still its codes.
  assert token_cache.build(store, tasks, encoder(1), {'step': 1}, batch_size=16) == 0
  assert all(np.all(e.codes == 1) for e in token_cache.load(store, tasks, 'train', {'step': 1}))
  with pytest.raises(ValueError, match='no token cache'):
    token_cache.load(store, tasks, 'train', {'step': 3})
  assert set(calls) == {16}  # fixed batch size: one compilation


def test_only_process_zero_writes_the_token_cache(video_config, monkeypatch):
  from viper_jax.data.store import EpisodeStore
  store = EpisodeStore(video_config.data.root)
  encoded = []

  def encode(frames):
    encoded.append(len(frames))
    return np.zeros((len(frames), 4, 4), np.int32)

  monkeypatch.setattr(jax, 'process_index', lambda: 1)  # process 1 of a run: encodes, never writes
  assert token_cache.build(store, ['dmc:synthetic'], encode, {'step': 1}, batch_size=16) == 4
  assert encoded and not token_cache.token_dir(store, 'dmc:synthetic', {'step': 1}).exists()


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path):
  from viper_jax.video import training

  def step_fn(state, batch, key):  # diverges at its 5th step
    state = {'x': state['x'] + 1.0}
    return state, {'loss': jnp.where(state['x'] >= 5, jnp.nan, state['x'])}

  mesh = parallel.make_mesh(jax.devices()[:1])
  with pytest.raises(FloatingPointError, match='last good checkpoint is step 4'):
    training.train_loop(name='t', workdir=tmp_path, state={'x': jnp.zeros(())}, step_fn=step_fn,
                        batch_fn=lambda step: np.zeros(1), steps=10, seed=0, log_every=1,
                        checkpoint_every=2, keep_checkpoints=5, mesh=mesh)
  state, step = _final_state(tmp_path / 'checkpoints', {'x': jnp.zeros(())})
  assert step == 4 and float(state['x']) == 4.0  # the bad step was not saved


def test_one_frame_prior_trains_samples_and_scores_each_frame_alone(video_config, tmp_path):
  """context 1 (a per-frame density): training and its sample GIF work, and a frame's reward depends
  on no earlier frame except through the last code of the one before (the input shift; see
  video/transformer.py)."""
  from viper_jax import reward
  video_config.prior.context = video_config.prior.train.window = 1
  train_tokenizer.run(video_config, tmp_path)
  result = train_prior.run(video_config, tmp_path)
  assert np.isfinite(result['val_bits_per_token'])
  assert (tmp_path / 'prior' / 'sample.gif').exists()
  model = reward.load(tmp_path)
  frames = synthetic_episode(0, length=5, size=32)['image'][None]
  changed = frames.copy()
  changed[0, 2] = 255 - changed[0, 2]
  task = np.zeros((1,), np.int32)
  a = np.asarray(model.log_likelihood(frames, task))[0]
  b = np.asarray(model.log_likelihood(changed, task))[0]
  np.testing.assert_allclose(a[[0, 1, 4]], b[[0, 1, 4]], rtol=1e-5)
  assert a[2] != b[2]


def test_cosine_decay_warms_up_then_falls_to_a_tenth_at_the_last_step():
  from viper_jax.video import training
  rate = training.warmup_schedule(1e-3, 10, 'cosine', 100)
  values = np.array([float(rate(i)) for i in range(120)])
  assert values[0] == pytest.approx(1e-4) and values[9] == pytest.approx(1e-3)
  assert np.all(np.diff(values[:10]) > 0) and np.all(np.diff(values[9:100]) < 0)
  assert values[100] == pytest.approx(1e-4) and values[119] == pytest.approx(1e-4)
  constant = training.warmup_schedule(1e-3, 10, 'constant', 100)
  assert float(constant(99)) == pytest.approx(1e-3)
  with pytest.raises(ValueError, match="train.decay must be 'constant' or 'cosine'"):
    training.warmup_schedule(1e-3, 10, 'linear', 100)


def test_the_optimizer_follows_train_decay():
  """Same gradients, same first steps; after the warm-up the cosine optimizer moves params less."""
  import ml_collections
  from viper_jax.video import training
  def moved(decay):
    cfg = ml_collections.ConfigDict(dict(learning_rate=1e-2, warmup_steps=1, weight_decay=0.0,
                                         grad_clip=1e9, steps=10, decay=decay))
    opt = training.make_optimizer(cfg)
    params = {'w': jnp.zeros(3)}
    state = opt.init(params)
    steps = []
    for _ in range(9):
      updates, state = opt.update({'w': jnp.ones(3)}, state, params)
      steps.append(float(jnp.abs(updates['w'][0])))
    return np.array(steps)
  constant, cosine = moved('constant'), moved('cosine')
  assert constant[0] == pytest.approx(cosine[0], rel=1e-4)
  assert cosine[-1] < constant[-1] / 2
