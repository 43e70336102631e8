"""Agent unit tests: networks, lambda-returns, return normalisation, replay, reward alignment."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from viper_jax.agent import actor_critic as ac
from viper_jax.agent import configs, labelling, learned_rewards, networks as nets, world_model as wm_lib
from viper_jax.agent.replay import Replay


def test_symlog_and_twohot_round_trip():
  x = jnp.array([-1e4, -3.5, -0.2, 0.0, 0.7, 12.0, 3e5])
  np.testing.assert_allclose(nets.symexp(nets.symlog(x)), x, rtol=1e-5)
  encoded = nets.twohot_encode(x)
  assert encoded.shape == (7, nets.NUM_BINS)
  np.testing.assert_allclose(encoded.sum(-1), 1.0, rtol=1e-6)
  assert int((encoded > 0).sum(-1).max()) <= 2  # at most two neighbouring bins
  # Decoding logits that put the two-hot weights back gives the value again.
  np.testing.assert_allclose(nets.symexp((encoded * nets.bins()).sum(-1)), x, rtol=1e-4, atol=1e-6)
  logits = jnp.log(encoded + 1e-12)
  np.testing.assert_allclose(nets.twohot_decode(logits), x, rtol=1e-3, atol=1e-5)


def test_zero_init_heads_predict_zero_and_unimix_floor():
  head = nets.Head(nets.NUM_BINS, 16, 1, zero_init=True)
  feat = jax.random.normal(jax.random.key(0), (3, 10))
  params = head.init(jax.random.key(1), feat)
  np.testing.assert_allclose(nets.twohot_decode(head.apply(params, feat)), 0.0, atol=1e-5)
  probs = jnp.exp(nets.unimix_logits(jnp.array([[100.0, 0.0, 0.0, 0.0]])))
  assert float(probs.min()) == pytest.approx(0.01 / 4, rel=1e-4)


def test_world_model_and_actor_shapes():
  # Shapes by abstract evaluation (no compilation: seconds instead of a minute on 2 cores).
  cfg = configs.agent_config('xs')
  m = cfg.model
  wm = wm_lib.build(m, action_dim=2, extra_heads=('density',), disag_heads=3)
  params = jax.eval_shape(lambda k: wm_lib.init_params(wm, k, (64, 64)), jax.random.key(0))
  b, t = 2, 3
  image = jnp.zeros((b, t, 64, 64, 3), jnp.uint8)
  post, prior = jax.eval_shape(
      lambda p: wm_lib.observe(wm, p, image, jnp.zeros((b, t, 2)), jnp.ones((b, t), bool),
                               jax.random.key(1)), params)
  assert post['deter'].shape == (b, t, m.deter)
  assert post['stoch'].shape == prior['logits'].shape == (b, t, m.stoch, m.classes)
  feat_dim = m.deter + m.stoch * m.classes
  assert jax.eval_shape(wm_lib.features, post).shape == (b, t, feat_dim)
  feat = jnp.zeros((b, feat_dim))
  recon = jax.eval_shape(lambda p: wm.apply({'params': p}, feat,
                                            method=wm_lib.WorldModel.decode), params)
  assert recon.shape == (b, 64, 64, 3)
  pred = jax.eval_shape(lambda p: wm.apply({'params': p}, feat, jnp.zeros((b, 2)),
                                           method=wm_lib.WorldModel.predict_next), params)
  assert pred.shape == (3, b, m.stoch * m.classes)
  assert learned_rewards.disagreement(jnp.ones(pred.shape)).shape == (b,)
  actor = ac.Actor(2, False, m.units, m.layers)
  actor_params = jax.eval_shape(lambda k: actor.init(k, feat)['params'], jax.random.key(2))

  def rollout(p, ap):
    act = lambda f, k: ac.sample_action(actor, actor.apply({'params': ap}, f), k)
    start = jax.tree.map(lambda x: jnp.zeros((b * t,) + x.shape[2:]), post)
    return wm_lib.imagine(wm, p, act, start, 4, jax.random.key(3))

  states, actions = jax.eval_shape(rollout, params, actor_params)
  assert states['deter'].shape == (5, b * t, m.deter) and actions.shape == (5, b * t, 2)
  # Straight-through one-hot samples are exact one-hots in the forward pass.
  sample = nets.sample_onehot_st(jax.random.key(4), jnp.zeros((3, 8, 8)))
  np.testing.assert_allclose(sample.sum(-1), 1.0, atol=1e-6)
  assert set(np.unique(np.asarray(sample)).round(6)) <= {0.0, 1.0}


def test_depth_to_space_puts_each_channel_block_at_its_subpixel():
  # x[b, h, w, (i*2 + j)*C + c] must land at out[b, 2h + i, 2w + j, c].
  x = jnp.arange(2 * 3 * 5 * 4 * 3, dtype=jnp.float32).reshape(2, 3, 5, 4 * 3)
  out = nets.depth_to_space(x)
  assert out.shape == (2, 6, 10, 3)
  for i in range(2):
    for j in range(2):
      np.testing.assert_array_equal(out[:, i::2, j::2], x[..., (i * 2 + j) * 3:(i * 2 + j + 1) * 3])


def test_decoder_pixels_depend_on_a_local_neighbourhood_of_the_top_grid():
  # With every upsampling a 3x3 conv + depth-to-space, changing one 4x4 cell of the first grid
  # must leave far-away output pixels unchanged (the decoder is convolutional, not a dense map).
  dec = nets.Decoder(depth=2)
  params = dec.init(jax.random.key(0), jnp.zeros((1, 8)))
  top = jax.random.normal(jax.random.key(1), (1, 4, 4, 16))

  def from_grid(grid):
    x = grid
    for mult in (4, 2, 1):
      conv = params['params'][f'Conv_{(4, 2, 1).index(mult)}']
      x = jax.lax.conv_general_dilated(x, conv['kernel'], (1, 1), 'SAME',
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      x = nets.depth_to_space(x)
      ln = params['params'][f'LayerNorm_{(4, 2, 1).index(mult)}']
      mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
      x = jax.nn.silu((x - mean) / jnp.sqrt(var + 1e-6) * ln['scale'] + ln['bias'])
    last = params['params']['Conv_3']
    x = jax.lax.conv_general_dilated(x, last['kernel'], (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + last['bias']
    return nets.depth_to_space(x)

  base = from_grid(top)
  changed = from_grid(top.at[0, 0, 0].add(5.0))
  diff = np.abs(np.asarray(changed - base)).max(-1)[0]
  assert base.shape == (1, 64, 64, 3)
  assert diff[:16, :16].max() > 1e-3  # the changed corner cell moves its own pixels
  assert diff[48:, 48:].max() == 0.0  # and not the far corner (receptive field ends at 46)
  # The module computes the same function as this hand-written chain.
  feat = jax.random.normal(jax.random.key(2), (1, 8))
  grid = (feat @ params['params']['Dense_0']['kernel'] + params['params']['Dense_0']['bias'])
  np.testing.assert_allclose(dec.apply(params, feat), from_grid(grid.reshape(1, 4, 4, 16)),
                             atol=2e-3)  # CPU conv/LayerNorm rounding differs slightly


def test_lambda_returns_hand_worked():
  # Three imagined steps, discount 0.5, lambda 0.5; s_3 is terminal (c_3 = 0).
  reward = jnp.array([1.0, 2.0, 3.0])  # r_1, r_2, r_3
  cont = jnp.array([1.0, 1.0, 0.0])  # c_1, c_2, c_3
  value = jnp.array([10.0, 20.0, 30.0, 40.0])  # v_0 .. v_3
  # R_2 = 3 + 0.5*0*(...) = 3
  # R_1 = 2 + 0.5*1*(0.5*30 + 0.5*3) = 10.25
  # R_0 = 1 + 0.5*1*(0.5*20 + 0.5*10.25) = 8.5625
  np.testing.assert_allclose(ac.lambda_returns(reward, cont, value, 0.5, 0.5),
                             [8.5625, 10.25, 3.0])
  # lambda = 0 is one-step TD; lambda = 1 is the discounted sum bootstrapped at the end.
  np.testing.assert_allclose(ac.lambda_returns(reward, jnp.ones(3), value, 0.5, 0.0),
                             [1 + 0.5 * 20, 2 + 0.5 * 30, 3 + 0.5 * 40])
  np.testing.assert_allclose(ac.lambda_returns(reward, jnp.ones(3), value, 0.5, 1.0),
                             [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 40,
                              2 + 0.5 * 3 + 0.25 * 40, 3 + 0.5 * 40])
  # Batched over trailing axes.
  assert ac.lambda_returns(jnp.ones((15, 4)), jnp.ones((15, 4)), jnp.ones((16, 4)),
                           0.997, 0.95).shape == (15, 4)


def test_return_normaliser_tracks_percentiles_and_never_scales_up():
  cfg = configs.agent_config('xs').ac
  norm = jnp.zeros(2)
  returns = jnp.linspace(0.0, 100.0, 101)
  for _ in range(2000):
    norm = ac.update_return_norm(norm, returns, cfg)
  np.testing.assert_allclose(norm, [5.0, 95.0], rtol=1e-3)
  assert float(ac.return_scale(norm)) == pytest.approx(90.0, rel=1e-3)
  assert float(ac.return_scale(jnp.array([0.1, 0.3]))) == 1.0


def _stream_steps(n_envs, t):
  """Frames whose mean pixel value encodes (env, step): env * 50 + t."""
  image = np.zeros((n_envs, 64, 64, 3), np.uint8) + (np.arange(n_envs) * 50 + t).astype(
      np.uint8)[:, None, None, None]
  return {'image': image, 'action': np.full((n_envs, 1), t, np.float32),
          'reward': np.full(n_envs, t, np.float32), 'is_first': np.full(n_envs, t == 0),
          'density': np.zeros(n_envs, np.float32)}


def test_replay_sequences_are_contiguous_and_survive_save_load(tmp_path):
  replay = Replay(capacity=20, num_envs=2)  # 10 steps per stream: the ring wraps
  for t in range(14):
    replay.add(_stream_steps(2, t))
  assert len(replay) == 20 and list(replay.oldest()) == [4, 4]
  batch = replay.sample(16, 5, np.random.default_rng(0))
  assert batch['image'].shape == (16, 5, 64, 64, 3)
  steps = batch['action'][..., 0]
  np.testing.assert_array_equal(np.diff(steps, axis=1), 1)  # consecutive steps, in order
  assert steps.min() >= 4 and steps.max() <= 13
  replay.save(tmp_path / 'r.npz')
  restored = Replay(capacity=20, num_envs=2)
  restored.load(tmp_path / 'r.npz')
  np.testing.assert_array_equal(restored.count, replay.count)
  for key in replay.data:
    np.testing.assert_array_equal(restored.data[key], replay.data[key])
  with pytest.raises(ValueError, match='replay_capacity'):
    Replay(capacity=30, num_envs=2).load(tmp_path / 'r.npz')


def test_viper_labels_align_with_arrival_frames():
  """Replay step t's density label = likelihood_fn(frames)[:, t] (reward for arriving at x_t)."""
  replay = Replay(capacity=100, num_envs=2)
  for t in range(13):
    replay.add(_stream_steps(2, t), ready=False)
  calls = []

  def fake_likelihood(frames):  # uint8 [B, T, H, W, 3] -> [B, T]: the frame's mean pixel
    calls.append(frames.shape)
    return frames.astype(np.float32).mean((2, 3, 4))

  labelling.label_episodes(replay, fake_likelihood, [(0, 0, 13), (1, 3, 10)], pad_to=8)
  assert calls == [(2, 16, 64, 64, 3)]  # one batched call, padded at the end to 16
  np.testing.assert_allclose(replay.read('density', 0, 0, 13), np.arange(13))
  np.testing.assert_allclose(replay.read('density', 1, 3, 10), 50 + np.arange(3, 10))
  assert replay.read('density', 1, 0, 3).sum() == 0  # outside the segment: untouched
  with pytest.raises(FloatingPointError, match='non-finite'):
    labelling.label_episodes(replay, lambda f: np.full(f.shape[:2], np.nan), [(0, 0, 5)], 8)


def test_amp_reward_is_for_arriving_at_the_second_frame_of_a_pair():
  disc = learned_rewards.Discriminator(depth=4)
  params = jax.jit(disc.init)(jax.random.key(0), jnp.zeros((1, 64, 64, 6)))['params']
  image = np.random.default_rng(0).integers(0, 255, (2, 4, 64, 64, 3)).astype(np.uint8)
  is_first = np.zeros((2, 4), bool)
  is_first[1, 2] = True
  reward, mask = jax.jit(lambda p, i, f: learned_rewards.amp_rewards(disc, p, i, f))(params, image,
                                                                              is_first)
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 1, 0, 1]])
  pair = np.concatenate([image[0, 1], image[0, 2]], -1)[None]
  expected = jax.nn.softplus(jax.jit(disc.apply)({'params': params}, pair))[0]
  assert float(reward[0, 2]) == pytest.approx(float(expected), rel=1e-5)
  assert float(reward[1, 2]) == 0.0


def test_reinforce_actor_loss_is_advantage_weighted_log_prob_and_backprop_differs():
  # With REINFORCE the actor's gradient is d/dθ mean(w * (log π(a|s) * A + η H)): a larger
  # advantage for an action must pull the mean toward it; 'backprop' sees no log π term.
  cfg = configs.agent_config('xs').ac
  cfg.entropy = 0.0
  actor = ac.Actor(1, False, units=8, layers=1)
  feat = jnp.zeros((3, 4, 5))  # H+1=3 states, N=4 starts
  params = actor.init(jax.random.key(0), feat[0])['params']
  mean0 = actor.apply({'params': params}, feat[0])[0][0, 0]
  actions = jnp.full((3, 4, 1), mean0 + 0.5)  # every imagined action is right of the mean
  rewards = {'env': jnp.ones((2, 4))}
  cont, values, norms = jnp.ones((3, 4)), {'env': jnp.zeros((3, 4))}, {'env': jnp.zeros(2)}

  def loss(p, grad):
    cfg.actor_grad = grad
    return ac.actor_loss(actor, p, feat, actions, rewards, cont, values, norms, {'env': 1.0},
                         cfg)[0]

  grads = jax.grad(loss)(params, 'reinforce')
  stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
  assert actor.apply({'params': stepped}, feat[0])[0][0, 0] > mean0  # moved toward the action
  # Backprop: the returns do not depend on the actor here (fixed rollout), so no gradient at all.
  back = jax.grad(loss)(params, 'backprop')
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(back))
  with pytest.raises(ValueError, match='actor_grad'):
    loss(params, 'sideways')


def test_foreground_weight_reaches_the_world_model_image_loss():
  # The weighting itself is tested in test_vqgan; here: the config switch is wired into wm.loss.
  cfg = configs.agent_config('xs')
  m = cfg.model
  wm = wm_lib.build(m, action_dim=1)
  params = wm_lib.init_params(wm, jax.random.key(0), (64, 64))
  frames = np.full((2, 4, 64, 64, 3), 50, np.uint8)
  for t in range(4):
    frames[:, t, 30:40, 10 + 8 * t:14 + 8 * t] = 220  # a block moving across a fixed background
  batch = {'image': jnp.asarray(frames), 'action': jnp.zeros((2, 4, 1)),
           'reward': jnp.zeros((2, 4)), 'is_first': jnp.zeros((2, 4), bool),
           'is_terminal': jnp.zeros((2, 4), bool)}

  def image_loss(weight):
    m.foreground_weight = weight
    return float(wm_lib.loss(wm, params, batch, jax.random.key(1), m)[1][1]['wm/image_loss'])

  plain, weighted = image_loss(0.0), image_loss(10.0)
  assert np.isfinite(weighted) and weighted != plain


def test_reinforce_scores_raw_samples_so_a_constant_advantage_leaves_the_std_alone():
  # A wide policy (std ~0.9 about 0) puts ~1/4 of its samples outside [-1, 1]. Scoring clipped
  # samples biases REINFORCE: with the same positive advantage everywhere (a lagging critic) the
  # std would shrink by itself. Raw samples keep E[d log pi / d std] = 0.
  cfg = configs.agent_config('xs').ac
  cfg.entropy = 0.0
  actor = ac.Actor(1, False, units=8, layers=1)
  n = 8192
  feat = jnp.zeros((2, n, 5))  # H+1=2 states, N starts
  params = actor.init(jax.random.key(0), feat[0])['params']
  dist = actor.apply({'params': params}, feat)
  raw = ac.sample_action(actor, dist, jax.random.key(1))
  assert float(jnp.abs(raw).max()) > 1.5  # the sample itself is not clipped
  clipped = nets.clip_action_st(raw)
  assert float(jnp.abs(clipped).max()) == 1.0
  rewards = {'env': jnp.ones((1, n))}
  cont, values, norms = jnp.ones((2, n)), {'env': jnp.zeros((2, n))}, {'env': jnp.zeros(2)}

  def std_after_step(actions):
    grads = jax.grad(lambda p: ac.actor_loss(actor, p, feat, actions, rewards, cont, values, norms,
                                             {'env': 1.0}, cfg)[0])(params)
    stepped = jax.tree.map(lambda p, g: p - 10.0 * g, params, grads)  # a large step: see the drift
    return float(actor.apply({'params': stepped}, feat[0])[1][0, 0])

  std0 = float(dist[1][0, 0, 0])
  assert abs(std_after_step(raw) - std0) < 0.005
  assert std_after_step(clipped) < std0 - 0.015  # the bias this guards against


def test_imagination_feeds_clipped_actions_to_the_dynamics_and_returns_raw_ones():
  m = configs.agent_config('xs').model
  wm = wm_lib.build(m, action_dim=1)
  params = wm_lib.init_params(wm, jax.random.key(0), (64, 64))
  start = wm.apply({'params': params}, 3, method=wm_lib.WorldModel.initial)

  def rollout(value):
    return wm_lib.imagine(wm, params, lambda f, k: jnp.full((f.shape[0], 1), value), start, 3,
                          jax.random.key(1))

  states_far, actions_far = rollout(3.0)
  states_edge, _ = rollout(1.0)
  np.testing.assert_allclose(actions_far, 3.0)
  np.testing.assert_allclose(states_far['deter'], states_edge['deter'], atol=1e-6)
  states_mid, _ = rollout(0.5)
  assert float(jnp.abs(states_mid['deter'][1] - states_edge['deter'][1]).max()) > 1e-4
