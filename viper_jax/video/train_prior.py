"""`viper train-prior`: tokenize the episodes (token cache), then train the video prior on windows.

Writes to `<workdir>/prior/`: checkpoints/ (orbax: params, EMA params, optimiser state, step — the
step is the data-iterator state), metrics.jsonl + tb/ (training loss, validation NLL in bits per
token on held-out expert episodes), samples/ (autoregressive samples decoded to GIF) and
config.json. A rerun resumes from the newest checkpoint.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from viper_jax import atomic, parallel, validation
from viper_jax.data import loaders
from viper_jax.metrics import save_video
from viper_jax.data.store import store_and_tasks
from viper_jax.video import priors, token_cache, train_tokenizer, training, transformer, vqgan
from viper_jax.video.training import make_optimizer


def init_state(prior, train_cfg, key, window: int) -> dict:
  """Train state: step, params, ema_params, opt_state."""
  params = priors.init_params(prior, key, window)
  return dict(step=jnp.zeros((), jnp.int32), params=params,
              ema_params=jax.tree.map(jnp.copy, params),  # distinct buffers: the step donates
              opt_state=make_optimizer(train_cfg).init(params))


def nll_per_token(prior, params, batch, train: bool = False, key=None) -> jax.Array:
  """Mean negative log-likelihood (nats) per code of batch {'codes' [B,T,N], 'task_id' [B]}.

  An optional batch['weight'] float32 [B] (0: a padding row, see `pad_batch`) weights the rows.
  train=True: the kind's training loss (MaskGIT: its masked-token loss; key draws the masks and
  dropout); train=False: the scoring NLL (every frame from the past only), for any kind.
  """
  if train:
    return priors.kind_of(prior).train_loss(prior, params, batch, key, train=True)
  return transformer.nll_per_code(prior, params, batch)


def pad_batch(batch: dict, mesh) -> dict:
  """This host's batch padded to a multiple of its devices, with 'weight' marking the real rows:
  a batch of any size trains as it would on one device."""
  batch, weight = parallel.pad_rows(batch, mesh)
  return dict(batch, weight=weight)


def make_train_step(prior, train_cfg):
  """train_step(state, batch, key) -> (state, metrics). Pure; jit it."""
  optimizer = make_optimizer(train_cfg)

  def train_step(state, batch, key):
    loss, grads = jax.value_and_grad(
        lambda p: nll_per_token(prior, p, batch, train=True, key=key))(state['params'])
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    decay = train_cfg.ema_decay
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state['ema_params'], params)
    metrics = dict(loss=loss, bits_per_token=loss / math.log(2), grad_norm=optax.tree.norm(grads))
    return dict(step=state['step'] + 1, params=params, ema_params=ema, opt_state=opt_state), metrics

  return train_step


def run(config, workdir, stop_after: int | None = None) -> dict:
  """Builds the token cache, trains (or resumes) the prior; returns validation figures."""
  validation.validate(config, ['train-prior'], workdir)
  pcfg, tcfg = config.prior, config.prior.train
  workdir = epath.Path(workdir)
  out = workdir / 'prior'
  out.mkdir(parents=True, exist_ok=True)
  atomic.write(out / 'config.json', config.to_json_best_effort(indent=2))
  mesh = parallel.make_mesh()
  store, tasks = store_and_tasks(config, workdir)

  # Tokenize every episode once with the trained tokenizer (one cache per tokenizer checkpoint).
  tok_cfg, tok_params, tok_stats, fingerprint = train_tokenizer.load(workdir, config.tokenizer)
  encode = vqgan.make_encode_fn(tok_cfg, tok_params, tok_stats, mesh)
  token_cache.build(store, tasks, encode, fingerprint, batch_size=64 * mesh.size,
                    mask_score=config.data.mask_score)
  load = functools.partial(token_cache.load, store, tasks, fingerprint=fingerprint,
                           max_noise=config.data.max_noise,
                           drop_first=config.data.drop_first_frames)
  train_eps = load(split='train')
  test_eps = load(split='test') or train_eps
  window = tcfg.window
  train_windows = loaders.WindowSource(train_eps, window, pcfg.frame_skip)
  val_windows = loaders.WindowSource(test_eps, window, pcfg.frame_skip, stride=window)
  batches = loaders.window_batches(train_windows, tcfg.batch_size, tcfg.seed)

  prior = priors.build_prior(config, len(tasks))
  state = parallel.put_replicated(init_state(prior, tcfg, jax.random.key(tcfg.seed), window), mesh)
  step_fn = parallel.jit_train_step(make_train_step(prior, tcfg), mesh)
  eval_fn = jax.jit(lambda params, batch: nll_per_token(prior, params, batch))
  uniform_bits = math.log2(config.tokenizer.codebook_size)
  result = {'uniform_bits_per_token': uniform_bits}

  def evaluate(state, step):
    params = state['ema_params'] if tcfg.ema_decay > 0 else state['params']
    count = min(len(val_windows), 256)
    losses = []
    for start in range(0, count, tcfg.batch_size):
      items = [val_windows[i % count] for i in range(start, start + tcfg.batch_size)]
      batch = {k: np.stack([item[k] for item in items]) for k in items[0]}
      losses.append(float(eval_fn(params, batch)))
    bits = float(np.mean(losses)) / math.log(2)
    result.update(val_bits_per_token=bits, step=int(step))
    return {'val/bits_per_token': bits, 'val/uniform_bits_per_token': uniform_bits}

  decode = jax.jit(lambda codes: vqgan.frames_to_uint8(vqgan.VQGAN.from_config(tok_cfg).apply(
      {'params': tok_params, 'vq_stats': tok_stats}, codes, method=vqgan.VQGAN.decode)))
  h, w = priors.grid_shape(config.tokenizer, config.env.size)

  def samples(state, step):
    params = state['ema_params'] if tcfg.ema_decay > 0 else state['params']
    # One real frame, then the prior's continuation; a one-frame window (a per-frame density,
    # context 1) has nothing to continue, so it samples whole frames.
    num_prompt = min(1, window - 1)
    prompt = np.stack([val_windows[0]['codes'][:num_prompt],
                       val_windows[len(val_windows) // 2]['codes'][:num_prompt]])
    task_ids = np.array([val_windows[0]['task_id'], val_windows[len(val_windows) // 2]['task_id']])
    codes = priors.kind_of(prior).sample(params, prior, jax.random.key(step), jnp.asarray(task_ids), window,
                      prompt_codes=jnp.asarray(prompt, jnp.int32) if num_prompt else None)
    frames = np.asarray(decode(codes.reshape(-1, h, w))).reshape(2, window, *config.env.size, 3)
    video = np.concatenate(list(frames), axis=2)  # the two samples side by side
    save_video(out / 'samples' / f'sample_{step:08d}.gif', video, fps=8)
    save_video(out / 'sample.gif', video, fps=8)
    return None

  state = training.train_loop(
      name='prior', workdir=out, state=state, step_fn=step_fn,
      batch_fn=lambda step: pad_batch(batches[step], mesh), steps=tcfg.steps, seed=tcfg.seed,
      log_every=tcfg.log_every, checkpoint_every=tcfg.checkpoint_every,
      keep_checkpoints=tcfg.keep_checkpoints, mesh=mesh,
      hooks=[(tcfg.eval_every, evaluate), (tcfg.sample_every, samples)],
      meta={'tasks': tasks, 'tokenizer': fingerprint, 'frame_skip': int(pcfg.frame_skip),
            # the frame rate of the training videos: the reward refuses an agent at another one
            'action_repeat': store.action_repeat(tasks)},
      stop_after=stop_after)
  if 'val_bits_per_token' not in result:
    evaluate(state, int(state['step']))
  atomic.write_json(out / 'result.json', result)
  return result
