"""World-model fit on a saved agent replay: how fast a world model learns, per update and per second.

  python benchmarks/world_model_fit.py --replay=runs/balance_env/agent/replay/replay_5000.npz \
      [--config=experiments/agent_cpu.py] [--config.agent.model.depth=16] [--updates=300]

Trains only the world model (`world_model.loss`, the agent's optimiser), from fresh weights, on
sequences sampled from every replay stream but the last, and evaluates on the held-out last stream:
it observes `--context` real frames, then imagines `--open_loop` steps with the recorded actions.
That separates the world model from the actor (the agent learns only as well as its model
predicts, and a policy that never balances is no evidence either way) and compares sizes and
settings at equal data. Prints one JSON line; per evaluation point:

  image_mse          posterior reconstruction error per pixel value, in the [-0.5, 0.5] scale
  reward_mae         |reward head - true reward| from the posterior (filtering)
  open_loop_mae      the same after each imagined step 1..open_loop (prediction)
  open_loop_image_mse  reconstruction error of the last imagined frame
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks import common  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'experiments',
                           'agent_cpu.py'), 'Experiment config (its agent section is used).')
_REPLAY = flags.DEFINE_string('replay', None, 'replay_<step>.npz of an agent run.', required=True)
_UPDATES = flags.DEFINE_integer('updates', 300, 'World-model updates.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 100, 'Updates between evaluations.')
_CONTEXT = flags.DEFINE_integer('context', 5, 'Observed frames before imagining.')
_OPEN_LOOP = flags.DEFINE_integer('open_loop', 8, 'Imagined steps.')
_EVAL_BATCH = flags.DEFINE_integer('eval_batch', 32, 'Held-out sequences per evaluation.')


def stream_view(replay, streams: slice):
  """A Replay over a slice of another's streams (shared arrays, no copy)."""
  from viper_jax.agent.replay import Replay
  count = replay.count[streams]
  view = Replay(replay.cap * len(count), len(count))
  view.data = {k: v[streams] for k, v in replay.data.items()}
  view.count, view.ready = count, replay.ready[streams]
  return view


def make_eval(wm, context: int, open_loop: int):
  from viper_jax.agent import world_model as wm_lib
  nets = wm_lib.nets

  def evaluate(params, batch, key):
    """batch [B, context + open_loop] -> dict of scalars and open_loop_mae [open_loop]."""
    apply = lambda method, *a: wm.apply({'params': params}, *a, method=method)
    images = batch['image'][:, :context]
    actions = batch['action']
    prev_action = jnp.concatenate([jnp.zeros_like(actions[:, :1]), actions[:, :context - 1]], 1)
    is_first = batch['is_first'][:, :context].at[:, 0].set(True)
    post, _ = wm_lib.observe(wm, params, images, prev_action, is_first, key)
    target = batch['image'].astype(jnp.float32) / 255.0 - 0.5
    feat = wm_lib.features(post)
    recon = nets.flatten_batch(lambda f: apply(wm_lib.WorldModel.decode, f), feat, 2)
    reward = nets.twohot_decode(apply(wm_lib.WorldModel.head, 'reward', feat))

    def step(state, inputs):
      action, k = inputs
      state = apply(wm_lib.WorldModel.img_step, state, action, k)
      return state, wm_lib.features(state)

    start = jax.tree.map(lambda x: x[:, -1], post)
    keys = jax.random.split(jax.random.fold_in(key, 1), open_loop)
    imagined_actions = jnp.moveaxis(actions[:, context - 1:context - 1 + open_loop], 1, 0)
    _, imagined = jax.lax.scan(step, start, (imagined_actions, keys))  # [open_loop, B, F]
    imagined_reward = nets.twohot_decode(apply(wm_lib.WorldModel.head, 'reward', imagined))
    true_future = jnp.moveaxis(batch['reward'][:, context:], 1, 0)
    last_frame = apply(wm_lib.WorldModel.decode, imagined[-1])
    return {
        'image_mse': jnp.mean((recon - target[:, :context]) ** 2),
        'reward_mae': jnp.mean(jnp.abs(reward - batch['reward'][:, :context])),
        'open_loop_mae': jnp.mean(jnp.abs(imagined_reward - true_future), axis=1),
        'open_loop_image_mse': jnp.mean((last_frame - target[:, -1]) ** 2),
    }

  return jax.jit(evaluate)


def main(_):
  from viper_jax.agent import agent as agent_lib
  from viper_jax.agent import world_model as wm_lib
  from viper_jax.agent.replay import Replay
  config = _CONFIG.value
  ac = config.agent
  with np.load(_REPLAY.value) as npz:
    saved = {k: npz[k] for k in npz.files}
  streams = len(saved['count'])
  if streams < 2:
    raise SystemExit(f'{_REPLAY.value} has {streams} stream; one is held out, so at least 2 '
                     'are needed')
  filled = saved['data/image'].shape[1]
  if saved['count'].max() <= filled:  # never wrapped: allocate only what was filled
    saved['cap'] = np.array(filled)
  replay = Replay(int(saved['cap']) * streams, streams)
  replay.load_state_dict(saved)
  replay.ready[:] = replay.count  # labels other than the task reward are not used here
  train = stream_view(replay, slice(0, streams - 1))
  held_out = stream_view(replay, slice(streams - 1, streams))
  action_dim = replay.data['action'].shape[-1]
  agent = agent_lib.Agent(ac, action_dim, discrete=False, image_size=tuple(config.env.size))
  params = wm_lib.init_params(agent.wm, jax.random.key(ac.seed), tuple(config.env.size))
  opt_state = agent.wm_opt.init(params)
  keys = ('image', 'action', 'reward', 'is_first', 'is_last', 'is_terminal')

  @jax.jit
  def update(params, opt_state, batch, key):
    params, opt_state, _, metrics = agent.update_world_model(params, opt_state, batch, key, {})
    return params, opt_state, metrics

  evaluate = make_eval(agent.wm, _CONTEXT.value, _OPEN_LOOP.value)
  rng = np.random.default_rng(ac.seed)
  length = _CONTEXT.value + _OPEN_LOOP.value
  eval_batch = {k: v for k, v in held_out.sample(_EVAL_BATCH.value, length, rng).items()
                if k in keys}
  points, seconds, key = [], 0.0, jax.random.key(ac.seed + 1)
  for i in range(1, _UPDATES.value + 1):
    batch = {k: v for k, v in train.sample(ac.batch_size, ac.batch_length, rng).items()
             if k in keys}
    key, k_update = jax.random.split(key)
    tic = time.perf_counter()
    params, opt_state, metrics = common.block(update(params, opt_state, batch, k_update))
    if i > 1:  # the first call compiles
      seconds += time.perf_counter() - tic
    if i % _EVAL_EVERY.value == 0 or i == _UPDATES.value:
      result = jax.device_get(evaluate(params, eval_batch, jax.random.key(0)))
      points.append({'updates': i, 'train_loss': float(metrics['wm/loss']),
                     'image_mse': float(result['image_mse']),
                     'reward_mae': float(result['reward_mae']),
                     'open_loop_mae': [round(float(x), 4) for x in result['open_loop_mae']],
                     'open_loop_image_mse': float(result['open_loop_image_mse'])})
      print(json.dumps(points[-1]), file=sys.stderr)
  m = ac.model
  print(json.dumps({
      'benchmark': 'world_model_fit', 'device': common.device_description(),
      'replay': _REPLAY.value, 'model': {k: m[k] for k in ('deter', 'units', 'depth', 'stoch',
                                                           'classes', 'foreground_weight')},
      'batch': [ac.batch_size, ac.batch_length], 'wm_lr': ac.opt.wm_lr,
      'seconds_per_update': seconds / max(_UPDATES.value - 1, 1),
      'mean_abs_reward': float(np.mean(np.abs(eval_batch['reward'][:, _CONTEXT.value:]))),
      'points': points}))


if __name__ == '__main__':
  app.run(main)
