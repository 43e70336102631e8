"""Chains the stages of a VIPER experiment in one workdir; finished stages are skipped.

Stages, in order (each is also a `viper` command of its own):
  collect          scripted-expert, noisy and random episodes     -> episodes/
  train-tokenizer  VQ-GAN on expert frames                        -> tokenizer/
  train-prior      token cache + video prior                      -> prior/
  reward-stats     expert statistics of the reward (for scaling)  -> reward/expert_stats.json
  reward-check     held-out expert vs noisy vs random episodes    -> reward/check.json
  train-agent      DreamerV3 with the VIPER reward                -> agent/
  report           report.html and PNGs                           -> report/
A stage that finishes writes <workdir>/pipeline/<stage>.json; a rerun skips it. A stage killed
midway resumes from its own checkpoints. The report is rebuilt on every run, so a second run of a
finished pipeline only rebuilds the report.
"""
from __future__ import annotations

import json
import time
from typing import Callable

from etils import epath

from viper_jax import atomic

STAGES = ('collect', 'train-tokenizer', 'train-prior', 'reward-stats', 'reward-check',
          'train-agent')


def policy_loaders(config) -> dict:
  """The '<kind>:<argument>' policy loaders collection needs for `config.collect.policy`: the
  agent's for 'agent:<checkpoint dir>' (handed to the data layer, which never imports the agent)."""
  if str(config.collect.policy).startswith('agent:'):
    from viper_jax.agent import policy
    return {'agent': policy.load_policy}
  return {}


def _collect(config, workdir):
  from viper_jax.data import collect
  summary = collect.run(config, workdir, policy_loaders(config))
  return summary if isinstance(summary, dict) else {}


def _train_tokenizer(config, workdir):
  from viper_jax.video import train_tokenizer
  return train_tokenizer.run(config, workdir)


def _train_prior(config, workdir):
  from viper_jax.video import train_prior
  return train_prior.run(config, workdir)


def _reward_stats(config, workdir):
  from viper_jax.reward import expert_stats
  return expert_stats.run(config, workdir)


def _reward_check(config, workdir):
  from viper_jax.reward import check
  result = check.run(config, workdir)
  return {k: v for k, v in result.items() if k != 'per_episode'}


def check_frame_rate(model, config) -> None:
  """Raises ValueError when the agent's environment runs at another action repeat than the
  videos the reward model learned from: its frames would come at a frame rate the model never saw
  (the reference's videos and agents differed in exactly this way). Unrecorded: no check."""
  from viper_jax import envs
  if model.action_repeat is None:
    return
  task = config.agent.reward_task or config.task
  agent_repeat = config.env.action_repeat or envs.DEFAULT_ACTION_REPEAT[task.split(':')[0]]
  if int(agent_repeat) != int(model.action_repeat):
    raise ValueError(
        f'frame rate mismatch: the reward model in {model.checkpoint} learned from videos at '
        f'action repeat {model.action_repeat} (frame skip {model.frame_skip}), but this agent\'s '
        f'environment {config.task} runs at action repeat {agent_repeat}. Use a reward model '
        f'trained on videos collected at --config.env.action_repeat={agent_repeat}, or run the '
        f'agent at --config.env.action_repeat={model.action_repeat}.')


def viper_likelihood_fn(config, reward_checkpoint):
  """frames uint8 [B, T, H, W, 3] -> float32 [B, T] of the reward model in `reward_checkpoint`,
  for the agent's task (agent.reward_task, default config.task). The agent never imports the
  reward library; it gets this function."""
  import numpy as np
  from viper_jax import reward
  from viper_jax.agent import mesh as agent_mesh
  # The experiment's `reward` section (likelihood, reduce, scale) decides how the frozen model's
  # likelihoods become the agent's reward; the model's own section only says how it was checked.
  # The model runs on the agent's mesh.
  model = reward.load(reward_checkpoint, reward_config=config.reward,
                      mesh=agent_mesh.build(config.agent))
  check_frame_rate(model, config)
  task = config.agent.reward_task or config.task
  if task not in model.task_names:
    raise ValueError(f'task {task!r} is not one of the reward model\'s tasks {model.task_names}; '
                     'set --config.agent.reward_task')
  task_id = model.task_id(task)
  return lambda frames: model.log_likelihood(frames, np.full(len(frames), task_id, np.int32))


def train_agent(config, workdir) -> dict:
  """Trains (or resumes) the agent in <workdir>/agent; writes and returns agent/result.json.

  The 'viper*' reward sources use the reward model in agent.reward_checkpoint, or in `workdir`
  itself when that holds a trained prior (the pipeline's layout).
  """
  from viper_jax import validation
  from viper_jax.agent import loop
  validation.validate(config, ['train-agent'], workdir)  # before the reward model is loaded
  root = epath.Path(workdir)
  likelihood_fn = None
  if config.agent.reward_source.startswith('viper'):
    checkpoint = config.agent.reward_checkpoint
    if not checkpoint and (root / 'prior' / 'config.json').exists():
      checkpoint = str(root)
    if not checkpoint:
      raise ValueError(f'agent.reward_source={config.agent.reward_source!r} needs a trained '
                       'VIPER reward model: --config.agent.reward_checkpoint=DIR, or run '
                       'train-tokenizer and train-prior in this workdir first')
    likelihood_fn = viper_likelihood_fn(config, checkpoint)
  result = loop.run(config, root / 'agent', likelihood_fn)
  evaluation = {k: float(v) for k, v in (result['eval'] or {}).items()}
  summary = dict(counters=dict(result['counters']), seconds=float(result['seconds']),
                 reward_seconds=float(result['reward_seconds']),
                 eval_return=evaluation.get('eval/return'), eval=evaluation,
                 reward_source=config.agent.reward_source)
  path = root / 'agent' / 'result.json'
  atomic.write_json(path, summary, indent=2)
  return summary


RUNNERS: dict[str, Callable] = {
    'collect': _collect, 'train-tokenizer': _train_tokenizer, 'train-prior': _train_prior,
    'reward-stats': _reward_stats, 'reward-check': _reward_check, 'train-agent': train_agent,
}


def _marker(workdir: epath.Path, stage: str) -> epath.Path:
  return workdir / 'pipeline' / f'{stage}.json'


def _write_marker(workdir: epath.Path, stage: str, result: dict, seconds: float) -> None:
  atomic.write(_marker(workdir, stage), json.dumps(
      {'stage': stage, 'seconds': seconds, 'result': result}, default=lambda o: repr(o)))


def _seconds(workdir: epath.Path, stage: str) -> float:
  """The seconds a stage's marker records; 0 without a marker."""
  marker = _marker(workdir, stage)
  return json.loads(marker.read_text())['seconds'] if marker.exists() else 0.0


# Finished stages that read the train episodes: more of those would need them retrained.
_TRAIN_READERS = ('train-tokenizer', 'train-prior', 'reward-stats')


def reopen_collect(configs, workdir, log: Callable[[str], None] = print) -> int:
  """Reopens a finished collect when the config now plans episodes the store lacks.

  configs: one config per task collected into the workdir's store. More test episodes change only
  the evaluation: collect and reward-check lose their markers, so the run adds the episodes and
  scores them all. More train episodes would change finished models, which are never retrained
  silently: that raises, naming the stages. Returns how many planned episodes were missing.
  """
  workdir = epath.Path(workdir)
  if not _marker(workdir, 'collect').exists():
    return 0
  from viper_jax.data import collect
  jobs = [job for c in configs for job in collect.missing(c, workdir, policy_loaders(c))]
  new_train = sum(job.split == 'train' for job in jobs)
  trained = [s for s in _TRAIN_READERS if _marker(workdir, s).exists()]
  if new_train and trained:
    raise ValueError(
        f'{workdir}: the config plans {new_train} train episodes that its store lacks, but '
        f'{", ".join(trained)} finished on the episodes there. Use a new workdir, or delete '
        f'those stages\' files in {workdir / "pipeline"} to retrain them on the larger set.')
  if jobs:
    log(f'[collect] the config plans {len(jobs)} episodes that the store lacks '
        f'({len(jobs) - new_train} test, {new_train} train): collecting them; reward-check reruns')
    reopened = ('collect', 'reward-check')
    # The reopened stages' time so far, so a row's wall time still counts all of it.
    spent = sum(_seconds(workdir, stage) for stage in ('reopened',) + reopened)
    atomic.write(_marker(workdir, 'reopened'), json.dumps({'seconds': spent}))
    for stage in reopened:
      _marker(workdir, stage).unlink(missing_ok=True)
  return len(jobs)


def run(config, workdir, stages=STAGES, log: Callable[[str], None] = print) -> dict:
  """Runs the missing stages in order, then rebuilds the report. Returns {stage: marker dict}.

  A finished collect is reopened when the config plans more episodes (see `reopen_collect`).
  """
  from viper_jax import report, validation
  validation.validate(config, stages, workdir)  # every stage's fields, before the first one runs
  workdir = epath.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if 'collect' in stages:
    reopen_collect([config], workdir, log)
  done = {}
  for stage in stages:
    marker = _marker(workdir, stage)
    if marker.exists():
      done[stage] = json.loads(marker.read_text())
      log(f'[{stage}] done before ({done[stage]["seconds"]:.0f} s): skipped')
      continue
    log(f'[{stage}] running')
    start = time.time()
    result = RUNNERS[stage](config, str(workdir)) or {}
    _write_marker(workdir, stage, result, time.time() - start)
    done[stage] = json.loads(marker.read_text())
    log(f'[{stage}] finished in {done[stage]["seconds"]:.0f} s')
  path = report.build(workdir)
  log(f'[report] {path}')
  return done
