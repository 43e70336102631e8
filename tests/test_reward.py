"""Properties of the VIPER reward library (viper_jax.reward): one pass, chunks, streaming, windows,
alignment, sharding and input checks, on a tiny random-weight model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import synthetic_episode
from viper_jax import configs, parallel, reward
from viper_jax.video import presets, vqgan

ATOL = 2e-4  # float32 on CPU; different chunkings reorder a few sums


def _config(task='dmc:synthetic', tasks=(), frame_skip=1, size=32):
  config = configs.load_config(f'experiments/quickstart.py:{task}')
  config.env.size = (size, size)
  with config.unlocked():
    config.data.tasks = tuple(tasks)
    config.tokenizer = presets.tokenizer('tiny')
    config.prior = presets.prior('tiny')  # 2 layers, context 3: receptive field 5 frames
    config.prior.frame_skip = frame_skip
    config.prior.dtype = 'float32'
    config.tokenizer.dtype = 'float32'
  return config


def _model(**kwargs):
  return reward.RewardModel.init(_config(**kwargs), seed=1)


def _frames(batch=2, length=14, size=32, seed=0):
  return np.stack([synthetic_episode(seed + i, length, size)['image'] for i in range(batch)])


@pytest.fixture(scope='module')
def model():
  return _model()


@pytest.fixture(scope='module')
def frames():
  return _frames()


def test_shape_dtype_and_finite(model, frames):
  lp = model.log_likelihood(frames)
  assert lp.shape == frames.shape[:2] and lp.dtype == jnp.float32
  assert np.all(np.isfinite(lp)) and np.all(np.asarray(lp) <= 0)


def test_causal(model, frames):
  base = np.asarray(model.log_likelihood(frames))
  for t in (0, 5, 12):
    changed = frames.copy()
    changed[:, t + 1:] = 255 - changed[:, t + 1:]
    out = np.asarray(model.log_likelihood(changed))
    np.testing.assert_allclose(out[:, :t + 1], base[:, :t + 1], atol=ATOL)
    assert not np.allclose(out[:, t + 1:], base[:, t + 1:], atol=ATOL)


def test_batch_independent(model, frames):
  both = np.asarray(model.log_likelihood(frames))
  other = _frames(batch=2, seed=7)
  mixed = np.asarray(model.log_likelihood(np.stack([frames[0], other[1]])))
  alone = np.asarray(model.log_likelihood(frames[1:]))
  np.testing.assert_allclose(mixed[0], both[0], atol=ATOL)
  np.testing.assert_allclose(alone[0], both[1], atol=ATOL)


def test_alignment_hand_built(model):
  """lp[:, t] is log p(x_t | x_<t): the score of the frame ARRIVED at in step t, from the past.

  Hand-built case: trajectory A B C. Its three scores are (1) the first frame alone, scored from
  nothing, (2) B given A, computed by hand from the prior's logits on the codes, (3) C given A B.
  Replacing C changes only the last score; the reward of a transition (x_1, a_1, x_2) is lp[:, 2].
  """
  ep = _frames(batch=1, length=3)[0]
  a, b, c = ep
  lp = np.asarray(model.log_likelihood(ep[None]))[0]
  # (1) the first frame alone scores the same as inside the trajectory.
  np.testing.assert_allclose(np.asarray(model.log_likelihood(ep[None, :1]))[0, 0], lp[0],
                             atol=ATOL)
  # (2), (3) by hand: tokenizer codes, prior logits, log softmax at the frame's own codes.
  m = model._m
  codes = m.tokenizer.apply(model.params['tokenizer'], jnp.asarray(ep),
                            method=vqgan.VQGAN.encode).reshape(1, 3, -1)
  logits = m.prior.apply({'params': model.params['prior']}, codes, jnp.zeros((1,), jnp.int32))
  logp = jax.nn.log_softmax(logits, -1)
  by_hand = np.take_along_axis(np.asarray(logp), np.asarray(codes)[..., None], -1)[0, :, :, 0]
  np.testing.assert_allclose(lp, by_hand.sum(-1), atol=ATOL)
  other = np.asarray(model.log_likelihood(np.stack([a, b, 255 - c])[None]))[0]
  np.testing.assert_allclose(other[:2], lp[:2], atol=ATOL)
  assert abs(other[2] - lp[2]) > 1e-3


def test_chunked_equals_one_pass(frames):
  config = _config()
  long = _frames(batch=2, length=40)
  whole = reward.RewardModel.init(config, seed=1).log_likelihood(long)
  config.reward.chunk_frames = 6  # receptive field 5 < 6: chunks of 6 with 5 frames of warm-up
  config.reward.encode_batch = 7
  chunked = reward.RewardModel.init(config, seed=1).log_likelihood(long)
  np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), atol=ATOL)


@pytest.mark.parametrize('frame_skip', [1, 2])
def test_streaming_equals_one_pass(frame_skip):
  model = _model(frame_skip=frame_skip)
  frames = _frames(length=11)
  whole = np.asarray(model.log_likelihood(frames))
  state = model.init_stream(frames.shape[0])
  streamed = []
  for t in range(frames.shape[1]):
    state, lp = model.stream_step(state, frames[:, t])
    streamed.append(np.asarray(lp))
  np.testing.assert_allclose(np.stack(streamed, 1), whole, atol=ATOL)


def test_frame_skip_scores_interleaved_subsequences():
  skip2 = _model(frame_skip=2)
  skip1 = _model(frame_skip=1)  # same seed: the same weights
  frames = _frames(length=9)
  lp = np.asarray(skip2.log_likelihood(frames))
  np.testing.assert_allclose(lp[:, 0::2], np.asarray(skip1.log_likelihood(frames[:, 0::2])),
                             atol=ATOL)
  np.testing.assert_allclose(lp[:, 1::2], np.asarray(skip1.log_likelihood(frames[:, 1::2])),
                             atol=ATOL)


def test_window_mode_equals_explicit_loop(model, frames):
  """Each step scored as a fresh sequence of exactly its last `context` frames."""
  c = model.context
  window = np.asarray(model.log_likelihood(frames, mode='window'))
  for t in range(frames.shape[1]):
    alone = model.log_likelihood(frames[:, max(0, t - c + 1):t + 1])
    np.testing.assert_allclose(window[:, t], np.asarray(alone)[:, -1], atol=ATOL)
  one_pass = np.asarray(model.log_likelihood(frames))
  np.testing.assert_allclose(window[:, :c], one_pass[:, :c], atol=ATOL)  # same history so far


def test_four_devices_equal_one(model):
  assert len(jax.devices()) >= 4
  frames = _frames(batch=4, length=6)
  ids = jnp.zeros((4,), jnp.int32)
  fn = reward.log_likelihood_fn(model.config)
  one = jax.jit(fn)(model.params, frames, ids)
  mesh = parallel.make_mesh(jax.devices()[:4])
  data, replicated = parallel.data_sharding(mesh), parallel.replicated(mesh)
  sharded_fn = jax.jit(fn, in_shardings=(replicated, data, data), out_shardings=data)
  four = sharded_fn(model.params, jax.device_put(frames, data), jax.device_put(ids, data))
  assert len(four.sharding.device_set) == 4
  np.testing.assert_allclose(np.asarray(four), np.asarray(one), atol=ATOL)


def test_reduce_mean_and_scaling(frames):
  config = _config()
  base = reward.RewardModel.init(config, seed=1)
  lp = np.asarray(base.log_likelihood(frames))
  config.reward.reduce = 'mean'
  mean = np.asarray(reward.RewardModel.init(config, seed=1).log_likelihood(frames))
  tokens = base._m.prior.tokens_per_frame
  np.testing.assert_allclose(mean, lp / tokens, rtol=1e-5, atol=1e-6)
  config.reward.reduce = 'sum'
  stats = {'mean': jnp.float32(lp.mean()), 'std': jnp.float32(lp.std()),
           'min': jnp.float32(np.percentile(lp, 10)), 'max': jnp.float32(np.percentile(lp, 90))}
  config.reward.scale = 'standardize'
  std_model = reward.RewardModel(config, dict(base.params, stats=stats))
  np.testing.assert_allclose(std_model.log_likelihood(frames), (lp - lp.mean()) / lp.std(),
                             rtol=1e-4, atol=1e-4)
  config.reward.scale = 'minmax'
  mm = np.asarray(reward.RewardModel(config, dict(base.params, stats=stats)).log_likelihood(frames))
  assert mm.min() == 0.0 and mm.max() == 1.0
  config.reward.scale = 'floor'  # every score below the floor becomes the floor, the rest stay
  floor = np.float32(np.percentile(lp, 30))
  floored = np.asarray(reward.RewardModel(config, dict(base.params, stats=dict(
      stats, floor=jnp.float32(floor)))).log_likelihood(frames))
  np.testing.assert_allclose(floored, np.maximum(lp, floor), rtol=1e-5, atol=1e-5)
  assert (floored == floor).sum() >= 0.25 * lp.size
  config.reward.scale = 'floor_unit'  # the same, with the floor at 0 and the median at 1
  median = np.float32(np.percentile(lp, 50))
  unit = np.asarray(reward.RewardModel(config, dict(base.params, stats=dict(
      stats, floor=jnp.float32(floor), median=jnp.float32(median)))).log_likelihood(frames))
  np.testing.assert_allclose(unit, (np.maximum(lp, floor) - floor) / (median - floor),
                             rtol=1e-4, atol=1e-4)
  assert unit.min() == 0.0 and abs(np.median(unit) - 1.0) < 0.2
  with pytest.raises(ValueError, match='reward-stats'):
    reward.RewardModel(config, base.params).log_likelihood(frames)


def test_atari_score_region_is_masked():
  model = _model(task='atari:pong', size=64)
  frames = _frames(batch=1, length=4, size=64)
  lp = np.asarray(model.log_likelihood(frames))
  changed = frames.copy()
  changed[:, :, :2] = 255  # pong's score sits at the top of the frame
  np.testing.assert_allclose(np.asarray(model.log_likelihood(changed)), lp, atol=ATOL)


def test_bad_input_raises_value_error(model, frames):
  two_tasks = _model(tasks=('dmc:synthetic', 'dmc:other'))
  cases = [
      (model, frames[0], None, 'B, T, H, W, 3'),  # rank 4
      (model, frames.astype(np.float32), None, 'uint8'),
      (model, frames[:, :, :16, :16], None, '32x32'),
      (model, frames[:, :0], None, 'T >= 1'),
      (two_tasks, frames, None, 'task_ids'),  # missing for a conditioned model
      (two_tasks, frames, np.array([0, 2]), r'\[0, 2\)'),  # out of range
      (two_tasks, frames, np.array([0]), 'one per trajectory'),
  ]
  for m, x, ids, message in cases:
    with pytest.raises(ValueError, match=message):
      m.log_likelihood(x, ids)
  with pytest.raises(ValueError, match='mode'):
    model.log_likelihood(frames, mode='joint')
  state = model.init_stream(2)
  with pytest.raises(ValueError, match='started for 2 rows'):
    model.stream_step(state, frames[:1, 0])


def test_task_ids_select_the_task():
  two = _model(tasks=('dmc:synthetic', 'dmc:other'))
  assert two.task_id('dmc:other') == 1
  frames = _frames()
  lp0 = two.log_likelihood(frames, np.array([0, 0]))
  lp1 = two.log_likelihood(frames, np.array([1, 1]))
  assert lp0.shape == lp1.shape == frames.shape[:2]
  with pytest.raises(ValueError, match='unknown task'):
    two.task_id('dmc:nope')


def test_model_on_a_mesh_equals_one_device(model):
  frames = _frames(batch=4, length=5)
  mesh = parallel.make_mesh(jax.devices()[:4])
  sharded = reward.RewardModel(model.config, model.params, mesh=mesh)
  out = sharded.log_likelihood(frames)
  assert len(out.sharding.device_set) == 4
  np.testing.assert_allclose(np.asarray(out), np.asarray(model.log_likelihood(frames)), atol=ATOL)
  # A batch of 3 on 4 devices is padded, and the padding dropped from the result.
  three = sharded.log_likelihood(frames[:3])
  assert three.shape == (3, 5)
  np.testing.assert_allclose(np.asarray(three), np.asarray(model.log_likelihood(frames[:3])),
                             atol=ATOL)


@pytest.mark.parametrize('frame_skip', [1, 2])
def test_joint_likelihood_sums_the_last_context_conditionals(frame_skip):
  config = _config(frame_skip=frame_skip)
  frames = _frames(length=9)
  conditional = np.asarray(reward.RewardModel.init(config, seed=1).log_likelihood(frames))
  config.reward.likelihood = 'joint'
  model = reward.RewardModel.init(config, seed=1)
  joint = np.asarray(model.log_likelihood(frames))
  c, s = model.context, frame_skip
  for t in range(frames.shape[1]):
    steps = [k for k in range(t, -1, -s)][:c]  # t and its sub-sequence's previous c - 1 frames
    np.testing.assert_allclose(joint[:, t], conditional[:, steps].sum(1), rtol=1e-5, atol=ATOL)
  state, streamed = model.init_stream(2), []
  for t in range(frames.shape[1]):
    state, lp = model.stream_step(state, frames[:, t])
    streamed.append(np.asarray(lp))
  np.testing.assert_allclose(np.stack(streamed, 1), joint, atol=ATOL)


def test_reward_library_needs_no_environment_packages():
  """Other JAX projects import the reward without our envs: no gymnasium/dm_control/ale/mujoco."""
  import subprocess
  import sys
  code = ('import sys; from viper_jax import configs, reward; '
          "configs.load_config('experiments/quickstart.py'); "
          "print(sorted(m for m in ('gymnasium', 'dm_control', 'ale_py', 'mujoco') "
          'if m in sys.modules))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]', out.stdout


@pytest.mark.parametrize('attention', ['reference', 'xla'])
def test_bfloat16_streaming_chunked_and_one_pass_agree(attention):
  """bfloat16 compute forced (prior and tokenizer): streaming, chunked and one-pass scores agree
  within 0.5% of |lp|. The head is scaled up so that the distributions are as peaked as a trained
  model's (about 58 nats per code here), where bfloat16 rounding of logits or rotated keys shows."""
  config = _config()
  with config.unlocked():
    config.prior.dtype = config.tokenizer.dtype = 'bfloat16'
    config.prior.attention = attention
  params = reward.RewardModel.init(config, seed=1).params
  params['prior']['head']['kernel'] = params['prior']['head']['kernel'] * 30
  frames = _frames(length=12)
  model = reward.RewardModel(config, params)
  whole = np.asarray(model.log_likelihood(frames))
  assert np.abs(whole).mean() > 500  # peaked
  config.reward.chunk_frames = reward.likelihood.receptive_field(model._m.prior) + 1
  chunked = np.asarray(reward.RewardModel(config, params).log_likelihood(frames))
  state, streamed = model.init_stream(frames.shape[0]), []
  for t in range(frames.shape[1]):
    state, lp = model.stream_step(state, frames[:, t])
    streamed.append(np.asarray(lp))
  for other in (chunked, np.stack(streamed, 1)):
    assert np.max(np.abs(other - whole) / np.abs(whole)) < 0.005
