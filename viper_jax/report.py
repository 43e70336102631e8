"""`viper report`: one self-contained report.html (and PNGs) of a pipeline workdir.

Reads what the stages wrote under <workdir> and writes <workdir>/report/:
  reconstructions.png      tokenizer: originals (top) and reconstructions (bottom)
  prior_sample.gif         prior: autoregressive samples, decoded
  reward_along_episodes.png  the reward per step along an expert and a random episode, with frames
  reward_vs_return.png     mean reward per episode vs true return, with Spearman and AUROC
  learning_curve.png       agent: VIPER reward and true return against environment steps
  eval_rollout.gif         agent: the newest evaluation episode
  report.html              all of the above, images embedded (opens offline, no network)
A part whose stage has not run yet is listed as missing instead.
"""
from __future__ import annotations

import base64
import html
import json
import shutil

import numpy as np
from etils import epath

from viper_jax import atomic
from viper_jax.metrics import read_metrics, save_figure


def _plt():
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def _save(fig, path: epath.Path) -> epath.Path:
  return save_figure(fig, path, dpi=100)


def _copy(src: epath.Path, dst: epath.Path) -> epath.Path | None:
  if not src.exists():
    return None
  dst.parent.mkdir(parents=True, exist_ok=True)
  shutil.copyfile(src, dst)
  return dst


def reward_along_episodes(workdir: epath.Path, out: epath.Path) -> epath.Path | None:
  """Per-step reward of the first expert and first random test episode, under 8 of its frames."""
  check_path = workdir / 'reward' / 'check.json'
  if not check_path.exists():
    return None
  check = json.loads(check_path.read_text())
  from viper_jax.data.store import EpisodeStore
  from viper_jax.data.episodes import load_episode
  config = json.loads((workdir / 'prior' / 'config.json').read_text())
  store = EpisodeStore(config['data'].get('root') or str(workdir / 'episodes'))
  chosen = [next((r for r in check['per_episode'] if r['group'] == g), None)
            for g in ('expert', 'random')]
  chosen = [r for r in chosen if r is not None]
  if not chosen:
    return None
  plt = _plt()
  fig, axes = plt.subplots(2 * len(chosen), 1, figsize=(9, 3.2 * len(chosen)),
                           gridspec_kw={'height_ratios': [1, 1.6] * len(chosen)})
  for i, row in enumerate(chosen):
    path = [p for p in store.paths(check['task'], 'test') if p.name == row['name']][0]
    frames = load_episode(path, keys=('image',))['image']
    picks = np.linspace(0, len(frames) - 1, 8).astype(int)
    axes[2 * i].imshow(np.concatenate(list(frames[picks]), axis=1))
    axes[2 * i].set_axis_off()
    axes[2 * i].set_title(f"{row['group']} episode {row['name']}: true return "
                          f"{row['true_return']:.0f}, mean reward {row['mean_reward']:.1f}",
                          fontsize=9)
    rewards = np.asarray(row['rewards'])
    axes[2 * i + 1].plot(rewards, lw=1)
    axes[2 * i + 1].scatter(picks, rewards[picks], s=12, c='tab:red', zorder=3)
    axes[2 * i + 1].set_xlim(0, len(rewards) - 1)
    axes[2 * i + 1].set_xlabel('step (red: the frames above)')
    axes[2 * i + 1].set_ylabel('VIPER reward (nats)')
  fig.tight_layout()
  return _save(fig, out / 'reward_along_episodes.png')


def learning_curve(workdir: epath.Path, out: epath.Path) -> epath.Path | None:
  """Evaluation true return and VIPER return of the agent against environment steps."""
  rows = [r for r in read_metrics(workdir / 'agent') if 'eval/return' in r] \
      if (workdir / 'agent' / 'metrics.jsonl').exists() else []
  if not rows:
    return None
  plt = _plt()
  fig, ax = plt.subplots(figsize=(6, 3.5))
  steps = [r['step'] for r in rows]
  ax.plot(steps, [r['eval/return'] for r in rows], 'o-', c='tab:blue', label='true return')
  ax.set_xlabel('environment steps')
  ax.set_ylabel('true task return', color='tab:blue')
  if any('eval/viper_return' in r for r in rows):
    twin = ax.twinx()
    pts = [(r['step'], r['eval/viper_return']) for r in rows if 'eval/viper_return' in r]
    twin.plot(*zip(*pts), 's--', c='tab:orange', label='VIPER return')
    twin.set_ylabel('VIPER reward summed over the episode', color='tab:orange')
  ax.set_title('agent evaluation')
  fig.tight_layout()
  return _save(fig, out / 'learning_curve.png')


def _agent_rows(run: epath.Path) -> list[dict]:
  """Metrics rows of an agent run: `run` is a workdir (with agent/) or the agent dir itself."""
  for path in (run / 'agent' / 'metrics.jsonl', run / 'metrics.jsonl'):
    if path.exists():
      return read_metrics(path.parent)
  raise FileNotFoundError(f'no agent metrics in {run}: expected {run}/agent/metrics.jsonl or '
                          f'{run}/metrics.jsonl (written by `viper train-agent`)')


def run_action_repeat(run) -> int | None:
  """The env.action_repeat an agent run was trained with, from its newest checkpoint's metadata;
  None if it has no checkpoint. `run` is a workdir (with agent/) or the agent dir itself."""
  from viper_jax import checkpoint
  run = epath.Path(run)
  for directory in (run / 'agent' / 'checkpoints', run / 'checkpoints'):
    if directory.exists():
      checkpointer = checkpoint.Checkpointer(directory)
      try:
        step = checkpointer.latest_step()
        if step is not None:
          return int(checkpointer.restore_meta(step)['config']['env']['action_repeat'])
      finally:
        checkpointer.close()
  return None


def reward_tracking(run) -> dict | None:
  """Does the VIPER return the agent maximises track its true return along the run?

  Over a run's evaluations, the Spearman of eval/viper_return against eval/return, and how each
  changed from the first evaluation to the mean of the last three. A rising VIPER return with a
  falling true one is an agent exploiting the reward (cartpole-swingup at the 1st-percentile
  floor: VIPER return 5 -> 33 while the true return fell from a peak of 207 to 53). None for runs
  that log no VIPER return (e.g. the task-reward oracle) or have fewer than 3 evaluations.
  """
  from viper_jax.reward.shape import spearman
  evals = [(r['eval/return'], r['eval/viper_return']) for r in _agent_rows(epath.Path(run))
           if 'eval/return' in r and 'eval/viper_return' in r]
  if len(evals) < 3:
    return None
  true, viper = map(np.asarray, zip(*evals))
  return dict(evaluations=len(evals), spearman=spearman(viper, true),
              true_first=float(true[0]), true_last3=float(true[-3:].mean()),
              viper_first=float(viper[0]), viper_last3=float(viper[-3:].mean()))


def compare_agents(runs: dict, out, target: float | None = None, smooth: int = 10,
                   title: str = 'true task return', x: str = 'frames') -> epath.Path:
  """One plot of several agent runs' true returns against environment frames (or updates).

  runs: {label: workdir or agent dir}. Evaluation returns are drawn as markers; training episode
  returns as a running mean over `smooth` episodes (thin line, same colour). `target` draws a
  dashed horizontal line (e.g. the return an issue asks for). With x='frames' the x axis is
  policy steps times each run's action repeat, so runs at different repeats line up; policy steps
  if a run has no checkpoint to read its repeat from. With x='updates' it is the number of
  gradient updates at each evaluation (evaluations only), which tells whether runs that differ in
  train ratio or batch size are limited by data or by compute. Returns the PNG path `out`.
  """
  if x not in ('frames', 'updates'):
    raise ValueError(f"x must be 'frames' or 'updates', got {x!r}")
  plt = _plt()
  fig, ax = plt.subplots(figsize=(7, 4))
  repeats = {label: run_action_repeat(run) for label, run in runs.items()} if x == 'frames' else {}
  in_frames = x == 'frames' and all(r is not None for r in repeats.values())
  for i, (label, run) in enumerate(runs.items()):
    rows = _agent_rows(epath.Path(run))
    colour = f'C{i}'
    if x == 'updates':
      evals = [r for r in rows if 'eval/return' in r]
      if any('eval/updates' not in r for r in evals):
        raise ValueError(f"run {label} ({run}) has evaluations without an update count "
                         "('eval/updates', logged since 51d6e39); plot it with x='frames'")
      ax.plot([r['eval/updates'] for r in evals], [r['eval/return'] for r in evals], 'o-',
              c=colour, label=f'{label} (evaluation)')
      continue
    scale = repeats[label] if in_frames else 1
    episodes = [(r['step'] * scale, r['episode/return']) for r in rows if 'episode/return' in r]
    if episodes:
      steps, returns = map(np.asarray, zip(*episodes))
      kernel = np.ones(min(smooth, len(returns))) / min(smooth, len(returns))
      ax.plot(steps[len(kernel) - 1:], np.convolve(returns, kernel, 'valid'), '-', c=colour,
              alpha=0.4, lw=1)
    evals = [(r['step'] * scale, r['eval/return']) for r in rows if 'eval/return' in r]
    if evals:
      ax.plot(*zip(*evals), 'o-', c=colour, label=f'{label} (evaluation)')
  if target is not None:
    ax.axhline(target, ls='--', c='k', lw=1, label=f'target {target:g}')
  if x == 'updates':
    ax.set_xlabel('gradient updates')
  else:
    unit = 'environment frames' if in_frames else 'policy steps'
    ax.set_xlabel(f'{unit} (thin lines: training episodes, running mean)')
  ax.set_ylabel('true task return')
  ax.set_title(title)
  ax.legend(loc='best', fontsize=8)
  fig.tight_layout()
  return _save(fig, epath.Path(out))


def _data_uri(path: epath.Path) -> str:
  kind = 'image/gif' if path.name.endswith('.gif') else 'image/png'
  return f'data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}'


def _display_width(path: epath.Path) -> int:
  """Pixel-sized videos (64 px frames) are shown enlarged; plots at their own size."""
  from PIL import Image
  with path.open('rb') as f:
    width = Image.open(f).size[0]
  return width * max(1, min(4, 512 // max(width, 1)))


def _section(title: str, path: epath.Path | None, caption: str, missing: str) -> str:
  if path is None:
    return f'<h2>{html.escape(title)}</h2><p class="missing">Not yet: {html.escape(missing)}</p>'
  return (f'<h2>{html.escape(title)}</h2><figure><img src="{_data_uri(path)}" '
          f'width="{_display_width(path)}" alt="{html.escape(title)}">'
          f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def build(workdir) -> epath.Path:
  """Writes <workdir>/report/ (PNGs, GIFs and report.html); returns the html path."""
  workdir = epath.Path(workdir)
  out = workdir / 'report'
  out.mkdir(parents=True, exist_ok=True)
  facts = {}
  for name, path in (('tokenizer', 'tokenizer/result.json'), ('prior', 'prior/result.json'),
                     ('reward_check', 'reward/check.json'), ('reward_shape', 'reward/shape.json'),
                     ('agent', 'agent/result.json')):
    if (workdir / path).exists():
      facts[name] = json.loads((workdir / path).read_text())
  videos = sorted((workdir / 'agent' / 'videos').glob('eval_*.gif')) \
      if (workdir / 'agent' / 'videos').exists() else []
  parts = [
      ('Tokenizer: originals (top) and reconstructions (bottom)',
       _copy(workdir / 'tokenizer' / 'reconstructions.png', out / 'reconstructions.png'),
       _tokenizer_caption(facts), 'viper train-tokenizer'),
      ('Prior: samples from a one-frame prompt',
       _copy(workdir / 'prior' / 'sample.gif', out / 'prior_sample.gif'),
       _prior_caption(facts), 'viper train-prior'),
      ('Reward along an expert and a random episode', reward_along_episodes(workdir, out),
       'Reward of step t = log p(x_t | x_<t): the log-likelihood of the frame the step arrived '
       'at.', 'viper reward-check'),
      ('Reward vs true return (held-out episodes)',
       _copy(workdir / 'reward' / 'reward_vs_return.png', out / 'reward_vs_return.png'),
       _check_caption(facts), 'viper reward-check'),
      ('Reward shape: per step, against the true reward',
       _copy(workdir / 'reward' / 'shape.png', out / 'reward_shape.png'),
       _shape_caption(workdir),
       'viper reward-check (test episodes) or viper reward-shape --source=REPLAY'),
      ('Agent learning curve', learning_curve(workdir, out),
       'Evaluation episodes: the true task return (the agent never sees it) and the VIPER '
       'return it maximises.', 'viper train-agent'),
      ('Agent evaluation rollout',
       _copy(videos[-1], out / 'eval_rollout.gif') if videos else None,
       f'The newest evaluation episode ({videos[-1].name if videos else ""}).',
       'viper train-agent'),
  ]
  body = '\n'.join(_section(*p) for p in parts)
  page = f'''<!doctype html>
<html><head><meta charset="utf-8"><title>VIPER report: {html.escape(str(workdir))}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}
img{{max-width:100%;image-rendering:pixelated;border:1px solid #ddd}}
figcaption{{color:#555;font-size:90%}} .missing{{color:#a00}}
pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:80%}}</style></head><body>
<h1>VIPER: video prediction rewards</h1>
<p>Workdir <code>{html.escape(str(workdir))}</code>. The agent is rewarded by the likelihood the
frozen video model gives each frame it reaches; the true task reward is only used for evaluation.</p>
{body}
<h2>Figures</h2><pre>{html.escape(json.dumps(_summary(facts), indent=2))}</pre>
</body></html>'''
  path = out / 'report.html'
  atomic.write(path, page)
  return path


def _tokenizer_caption(facts) -> str:
  t = facts.get('tokenizer', {})
  return f"Test PSNR {t['psnr']:.1f} dB at step {t['step']}." if 'psnr' in t else ''


def _prior_caption(facts) -> str:
  p = facts.get('prior', {})
  if 'val_bits_per_token' not in p:
    return ''
  return (f"Validation NLL {p['val_bits_per_token']:.3f} bits per code (uniform: "
          f"{p['uniform_bits_per_token']:.1f}) at step {p['step']}.")


def _check_caption(facts) -> str:
  c = facts.get('reward_check', {})
  if 'spearman' not in c:
    return ''
  return (f"Spearman rank correlation {c['spearman']:.2f} over {c['episodes']} episodes; "
          f"AUROC expert vs random {c['auroc_expert_vs_random']:.2f}.")


def _shape_caption(workdir: epath.Path) -> str:
  path = workdir / 'reward' / 'shape.json'
  if not path.exists():
    return ''
  s = json.loads(path.read_text())
  return (f"Mean VIPER reward per bin of the step's true reward over {s['steps']} steps of "
          f"{s['source']}: per-step Spearman {s['spearman']:.2f}, {s['spearman_low']:.2f} over the "
          'steps away from the expert (true reward below half its range)'
          + (f", {s['episode_spearman']:.2f} between summed reward and true return over "
             f"{s['episodes']} episodes" if 'episode_spearman' in s else '')
          + '. A flat run of bins is a reward the agent cannot climb.')


def _summary(facts) -> dict:
  summary = {}
  if 'tokenizer' in facts:
    summary['tokenizer_test_psnr_db'] = facts['tokenizer'].get('psnr')
  if 'prior' in facts:
    summary['prior_val_bits_per_token'] = facts['prior'].get('val_bits_per_token')
  if 'reward_check' in facts:
    c = facts['reward_check']
    summary.update(spearman=c.get('spearman'), auroc_expert_vs_random=c.get('auroc_expert_vs_random'),
                   groups=c.get('groups'))
  if 'reward_shape' in facts:
    s = facts['reward_shape']
    summary.update(per_step_spearman=s.get('spearman'),
                   per_step_spearman_away_from_expert=s.get('spearman_low'))
  if 'agent' in facts:
    summary['agent'] = facts['agent']
  return summary
