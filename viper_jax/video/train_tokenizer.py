"""`viper train-tokenizer`: train the VQ-GAN on frames of the collected expert episodes.

Writes to `<workdir>/tokenizer/`: checkpoints/ (orbax: params, codebook statistics, optimiser
states, discriminator, step — the step is also the data-iterator state, see data/loaders.py),
metrics.jsonl + tb/ (losses, PSNR, codebook perplexity and usage), images/ (reconstruction grids:
originals above reconstructions) and config.json. A rerun resumes from the newest checkpoint.
"""
from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from viper_jax import parallel, validation
from viper_jax.data import loaders
from viper_jax.data.store import EpisodeStore
from viper_jax.metrics import image_grid, save_png
from viper_jax.video import training, vqgan
from viper_jax.video.training import make_optimizer


def store_and_tasks(config, workdir) -> tuple[EpisodeStore, list[str]]:
  """The episode store and the (sorted) tasks the video model is trained on."""
  store = EpisodeStore(config.data.root or epath.Path(workdir) / 'episodes')
  tasks = sorted(config.data.tasks) if config.data.tasks else [config.task]
  return store, tasks


def init_state(cfg, key, image_size) -> dict:
  """Train state pytree: step, params, vq_stats, opt_state, disc_params, disc_opt_state."""
  params, vq_stats, disc_params = vqgan.init_variables(key, cfg, tuple(image_size))
  optimizer = make_optimizer(cfg.train, cfg.train.learning_rate)
  disc_optimizer = make_optimizer(cfg.train, cfg.train.disc_learning_rate)
  return dict(step=jnp.zeros((), jnp.int32), params=params, vq_stats=vq_stats,
              opt_state=optimizer.init(params), disc_params=disc_params,
              disc_opt_state=disc_optimizer.init(disc_params))


def make_train_step(cfg, perceptual_fn=None):
  """train_step(state, frames uint8 [B, H, W, 3], key) -> (state, metrics). Pure; jit it."""
  optimizer = make_optimizer(cfg.train, cfg.train.learning_rate)
  disc_optimizer = make_optimizer(cfg.train, cfg.train.disc_learning_rate)

  def train_step(state, frames, key):
    step = state['step']
    grad_fn = jax.value_and_grad(vqgan.tokenizer_loss, has_aux=True)
    (_, (metrics, vq_stats)), grads = grad_fn(
        state['params'], state['vq_stats'], state['disc_params'], frames, step, key, cfg,
        perceptual_fn)
    updates, opt_state = optimizer.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    metrics['grad_norm'] = optax.tree.norm(grads)

    # Dead codes are moved onto this batch's encoder outputs; the extra encoder pass only runs
    # on steps that have dead codes.
    def restart(args):
      params, vq_stats = args
      outputs = vqgan.encoder_outputs(params, frames, cfg)
      return vqgan.restart_dead_codes(params, vq_stats, outputs, jax.random.fold_in(key, 1), cfg)

    if cfg.restart_dead_codes:
      params, vq_stats = jax.lax.cond(jnp.any(vqgan.dead_codes(vq_stats, cfg)), restart,
                                      lambda args: args, (params, vq_stats))

    disc_params, disc_opt_state = state['disc_params'], state['disc_opt_state']
    if cfg.gan_weight > 0:
      # The discriminator trains from the step the GAN term switches on (no compute before).
      def disc_update(args):
        disc_params, disc_opt_state = args
        (_, disc_metrics), disc_grads = jax.value_and_grad(vqgan.disc_loss_fn, has_aux=True)(
            disc_params, params, vq_stats, frames, cfg)
        updates, disc_opt_state = disc_optimizer.update(disc_grads, disc_opt_state, disc_params)
        return (optax.apply_updates(disc_params, updates), disc_opt_state,
                disc_metrics['loss'], disc_metrics['disc_accuracy'])

      def disc_skip(args):
        return (*args, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))

      disc_params, disc_opt_state, disc_loss, disc_accuracy = jax.lax.cond(
          step >= cfg.gan_start_step, disc_update, disc_skip, (disc_params, disc_opt_state))
      metrics.update(disc_loss=disc_loss, disc_accuracy=disc_accuracy)
    new_state = dict(step=step + 1, params=params, vq_stats=vq_stats, opt_state=opt_state,
                     disc_params=disc_params, disc_opt_state=disc_opt_state)
    return new_state, metrics

  return train_step


def jit_train_step(train_step, mesh):
  """Data parallel over the mesh: batch split on 'data', state replicated (XLA all-reduces)."""
  replicated, data = parallel.replicated(mesh), parallel.data_sharding(mesh)
  return jax.jit(train_step, in_shardings=(replicated, data, replicated),
                 out_shardings=(replicated, replicated), donate_argnums=0)


def make_encode_fn(cfg, params, vq_stats, mesh):
  """Jitted, batch-sharded: uint8 [B, H, W, 3] -> int32 codes [B, h, w]."""
  model = vqgan.VQGAN.from_config(cfg)
  variables = parallel.put_replicated({'params': params, 'vq_stats': vq_stats}, mesh)
  encode = jax.jit(lambda v, frames: model.apply(v, frames, method=vqgan.VQGAN.encode),
                   in_shardings=(parallel.replicated(mesh), parallel.data_sharding(mesh)))
  return lambda frames: np.asarray(jax.device_get(
      encode(variables, parallel.put_batch(frames, mesh) if jax.process_count() > 1 else frames)))


def _reconstruct_fn(cfg):
  model = vqgan.VQGAN.from_config(cfg)

  @jax.jit
  def reconstruct(params, vq_stats, frames):
    recon, aux = model.apply({'params': params, 'vq_stats': vq_stats}, frames, train=False)
    return vqgan.frames_to_uint8(recon), vqgan.psnr(frames, recon), aux['usage']
  return reconstruct


def run(config, workdir, stop_after: int | None = None) -> dict:
  """Trains (or resumes) the tokenizer; returns the final {'psnr', 'usage', 'step'} on test frames."""
  validation.validate(config, ['train-tokenizer'], workdir)
  cfg = config.tokenizer
  workdir = epath.Path(workdir)
  out = workdir / 'tokenizer'
  out.mkdir(parents=True, exist_ok=True)
  (out / 'config.json').write_text(config.to_json_best_effort(indent=2))
  store, tasks = store_and_tasks(config, workdir)
  mesh = parallel.make_mesh()
  parallel.check_batch_divisible(cfg.train.batch_size, mesh, 'tokenizer.train.batch_size')
  train_frames = loaders.FrameSource(store, tasks, 'train', config.data.max_noise,
                                     config.data.mask_score)
  try:
    eval_frames = loaders.FrameSource(store, tasks, 'test', config.data.max_noise,
                                      config.data.mask_score).frames
  except ValueError:
    eval_frames = train_frames.frames
  eval_frames = eval_frames[np.linspace(0, len(eval_frames) - 1, 64).astype(int)]
  batches = loaders.frame_batches(train_frames, cfg.train.batch_size, cfg.train.seed)

  perceptual_fn = None
  if cfg.perceptual_weight > 0:
    from viper_jax.video import perceptual
    perceptual_fn = perceptual.load_perceptual_fn(cfg.perceptual_weights_path)
  state = parallel.put_replicated(
      init_state(cfg, jax.random.key(cfg.train.seed), config.env.size), mesh)
  step_fn = jit_train_step(make_train_step(cfg, perceptual_fn), mesh)
  reconstruct = _reconstruct_fn(cfg)
  result = {}

  def evaluate(state, step):
    recon, psnr, usage = reconstruct(state['params'], state['vq_stats'], eval_frames)
    save_png(out / 'images' / f'reconstructions_{step:08d}.png',
             image_grid([eval_frames[:8], np.asarray(recon[:8])]))
    save_png(out / 'reconstructions.png', image_grid([eval_frames[:8], np.asarray(recon[:8])]))
    result.update(psnr=float(psnr), usage=float(usage), step=int(step))
    return {'eval/psnr': float(psnr), 'eval/codebook_usage': float(usage)}

  state = training.train_loop(
      name='tokenizer', workdir=out, state=state, step_fn=step_fn,
      batch_fn=lambda step: batches[step], steps=cfg.train.steps, seed=cfg.train.seed,
      log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every,
      keep_checkpoints=cfg.train.keep_checkpoints, mesh=mesh,
      hooks=[(cfg.train.image_every, evaluate)], meta={'tasks': tasks},
      stop_after=stop_after)
  if not result:
    evaluate(state, int(state['step']))
  (out / 'result.json').write_text(json.dumps(result))
  return result


def load(workdir, cfg=None, mesh=None):
  """The newest tokenizer checkpoint under `<workdir>/tokenizer`.

  Returns (cfg, params, vq_stats, fingerprint); fingerprint identifies the checkpoint (for the
  token cache). cfg defaults to the tokenizer section saved beside the checkpoint.
  """
  from viper_jax import checkpoint
  import ml_collections
  from viper_jax.video import token_cache
  out = epath.Path(workdir) / 'tokenizer'
  saved = json.loads((out / 'config.json').read_text()) if (out / 'config.json').exists() else None
  if cfg is None:
    if saved is None:
      raise FileNotFoundError(f'no tokenizer in {out}: run `viper train-tokenizer` first')
    cfg = ml_collections.ConfigDict(saved['tokenizer'])
  image_size = tuple(saved['env']['size']) if saved else (64, 64)
  checkpointer = checkpoint.Checkpointer(out / 'checkpoints')
  state, _, step = checkpointer.restore_latest(init_state(cfg, jax.random.key(0), image_size))
  checkpointer.close()
  if step is None:
    raise FileNotFoundError(f'no tokenizer checkpoint in {out / "checkpoints"}: run '
                            '`viper train-tokenizer` first')
  fingerprint = {'checkpoint': str(out.resolve() if not str(out).startswith('gs://') else out),
                 'step': int(step), 'params': token_cache.params_digest(state['params'])}
  return cfg, state['params'], state['vq_stats'], fingerprint
