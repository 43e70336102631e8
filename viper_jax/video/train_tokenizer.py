"""`viper train-tokenizer`: train the VQ-GAN on frames of the collected expert episodes.

Writes to `<workdir>/tokenizer/`: checkpoints/ (orbax: params, codebook statistics, optimiser
states, discriminator, step — the step is also the data-iterator state, see data/loaders.py),
metrics.jsonl + tb/ (losses, PSNR, codebook perplexity and usage), images/ (reconstruction grids:
originals above reconstructions) and config.json. A rerun resumes from the newest checkpoint.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath

from viper_jax import atomic, parallel, validation
from viper_jax.data import loaders
from viper_jax.data.store import store_and_tasks
from viper_jax.metrics import image_grid, save_png
from viper_jax.video import restore, token_cache, training, vqgan
from viper_jax.video.training import make_optimizer


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
  atomic.write(out / 'config.json', config.to_json_best_effort(indent=2))
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
  step_fn = parallel.jit_train_step(make_train_step(cfg, perceptual_fn), mesh)
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
  atomic.write_json(out / 'result.json', result)
  return result


def load(workdir, cfg=None):
  """The newest tokenizer checkpoint under `<workdir>/tokenizer` (params only, see restore.py).

  Returns (cfg, params, vq_stats, fingerprint); fingerprint identifies the tokenizer by its
  weights (for the token cache), not by where it is stored: a copied or moved tokenizer reuses its
  codes (re-encoding reacher-easy's 158 episodes at 16x16 took 14 min on 2 cores). cfg defaults to
  the tokenizer section saved beside the checkpoint.
  """
  cfg, variables, step = restore.tokenizer(workdir, cfg)
  fingerprint = {'step': int(step), 'params': token_cache.params_digest(variables['params'])}
  return cfg, variables['params'], variables['vq_stats'], fingerprint
