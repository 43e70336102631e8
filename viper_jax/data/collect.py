"""`viper collect`: roll out policies in an environment and write episodes to the store.

Episodes are planned up front: every (split, policy, noise level, index) gets a fixed seed and file
name, so a rerun skips the files that already exist (resume) and collects exactly the missing ones.
Work is spread over worker processes (one environment each) because rendering is CPU-bound.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing as mp
import time
import zlib
from typing import Callable, Mapping

import numpy as np
import tqdm
from etils import epath

from viper_jax import atomic
from viper_jax.data import episodes as episodes_lib
from viper_jax.data import policies
from viper_jax.data.store import EpisodeStore, task_dirname


@dataclasses.dataclass(frozen=True)
class EpisodeJob:
  """Everything a worker needs to produce one episode file."""
  task: str
  split: str
  policy: str
  noise: float
  index: int
  seed: int
  path: str
  env_kwargs: tuple  # sorted (key, value) pairs for envs.make
  loader: Callable | None = None
  max_warmup: int = 0  # up to this many unrecorded random steps before the policy takes over
  random_state: bool = False  # start from a random joint state (DMC; envs.dmc.random_joint_state)


def episode_seed(base_seed: int, split: str, policy: str, noise: float, index: int) -> int:
  """A deterministic, well-mixed seed per planned episode."""
  entropy = [base_seed, zlib.crc32(split.encode()), zlib.crc32(policy.encode()),
             int(round(noise * 10_000)), index]
  return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def source_name(policy: str) -> str:
  return 'expert:scripted' if policy == 'expert' else policy


def random_warmup(env, seed: int, max_steps: int, random_state: bool = False):
  """Resets `env` and takes 0..max_steps (drawn from seed) uniform random actions, unrecorded.

  Returns (obs, info, steps taken). The policy then starts from a state a random policy reached
  rather than the task's own start distribution, so an expert's videos show it recovering from
  the states a learner visits (for a video-model reward, likelihood that rises toward the expert).
  random_state: reset to a random joint state (DMC only) instead of the task's initial state.
  """
  options = {'random_state': True} if random_state else None
  obs, info = env.reset(seed=seed, options=options)
  rng = np.random.default_rng([seed, 7])
  steps = int(rng.integers(0, max_steps + 1)) if max_steps > 0 else 0
  env.action_space.seed(int(rng.integers(2**31)))
  for _ in range(steps):
    obs, _, terminated, truncated, info = env.step(env.action_space.sample())
    if terminated or truncated:  # nothing left to record: start over without a warm-up
      obs, info = env.reset(seed=seed, options=options)
      return obs, info, 0
  return obs, info, steps


def rollout(env, actor, seed: int, task: str, source: str, max_warmup: int = 0,
            random_state: bool = False, **metadata) -> dict:
  """Runs one episode of `actor` (a Policy) and returns it in the episode format (episodes.py).

  max_warmup > 0: the episode is recorded from where `random_warmup` leaves the environment (the
  environment's time limit still counts the warm-up steps). random_state: see `random_warmup`
  (recorded as metadata 'initial_state').
  """
  obs, info, warmup = random_warmup(env, seed, max_warmup, random_state)
  if max_warmup > 0:
    metadata['warmup_steps'] = warmup
  if random_state:
    metadata['initial_state'] = 'random'
  actor.reset(seed)
  steps = {k: [] for k in episodes_lib.STEP_KEYS}
  reward, is_first, done, terminated = 0.0, True, False, False
  while True:
    action = actor(obs, info)
    for key, value in (('image', obs), ('action', action), ('reward', reward),
                       ('is_first', is_first), ('is_last', done), ('is_terminal', terminated)):
      steps[key].append(value)
    if done:
      break
    obs, reward, terminated, truncated, info = env.step(action)
    is_first, done = False, bool(terminated or truncated)
  return episodes_lib.make_episode(steps, task=task, source=source, seed=int(seed),
                                   action_repeat=int(getattr(env, 'action_repeat', 1)), **metadata)


_ENV_CACHE: dict = {}


def run_job(job: EpisodeJob) -> tuple[float, int]:
  """Collects and writes one planned episode; returns (true return, length)."""
  from viper_jax import envs
  key = (job.task, job.env_kwargs)
  if key not in _ENV_CACHE:  # one environment per worker process and setting, reused
    _ENV_CACHE.clear()
    _ENV_CACHE[key] = envs.make(job.task, **dict(job.env_kwargs))
  env = _ENV_CACHE[key]
  policy = policies.make_policy(job.policy, env, job.task, job.noise, loader=job.loader)
  episode = rollout(env, policy, job.seed, job.task, source_name(job.policy), job.max_warmup,
                    job.random_state, noise=job.noise, policy=job.policy)
  episodes_lib.save_episode(job.path, episode)
  return episodes_lib.episode_return(episode), episodes_lib.episode_length(episode)


def plan_jobs(config, store: EpisodeStore,
              policy_loaders: Mapping[str, policies.PolicyLoader] = {}) -> list[EpisodeJob]:
  """Every episode the config asks for, in a fixed order (policy_loaders: see `run`)."""
  cc = config.collect
  env_kwargs = {'size': tuple(config.env.size), 'action_repeat': config.env.action_repeat,
                'time_limit': config.env.time_limit}
  if config.task.startswith('atari:'):
    # Store the screen as the game draws it: the video model and the reward mask the score
    # region themselves when data.mask_score, so one store serves both sides of that ablation.
    env_kwargs['mask_score'] = False
  env_kwargs = tuple(sorted(env_kwargs.items()))
  # Train episodes from random joint states get the indices after the task-start ones, so adding
  # them leaves the existing files (names and seeds) as they are.
  train = cc.train_episodes + cc.train_random_states
  groups = [('train', cc.policy, noise, train) for noise in cc.train_noise_levels]
  groups += [('test', cc.policy, noise, cc.test_episodes) for noise in cc.test_noise_levels]
  groups.append(('test', 'random', 1.0, cc.random_test_episodes))
  loader = policies.loader_for(cc.policy, policy_loaders)
  jobs = []
  for split, policy, noise, count in groups:
    tag = policy.split(':')[0]
    for index in range(count):
      name = f'{tag}-noise{noise:.2f}-{index:04d}' if tag != 'random' else f'random-{index:04d}'
      jobs.append(EpisodeJob(
          task=config.task, split=split, policy=policy, noise=0.0 if tag == 'random' else noise,
          index=index, seed=episode_seed(config.seed, split, policy, noise, index),
          path=str(store.path(config.task, split, name)), env_kwargs=env_kwargs,
          loader=loader if policy == cc.policy else None,
          max_warmup=int(cc.train_random_steps) if split == 'train' else 0,
          random_state=split == 'train' and index >= cc.train_episodes))
  return jobs


def _existing_ok(path: str) -> bool:
  """True if a valid episode is already there. A broken file is reported and will be redone."""
  if not epath.Path(path).exists():
    return False
  try:
    episodes_lib.load_episode(path, keys=('reward', 'is_last'))
    return True
  except episodes_lib.EpisodeError as e:
    print(f'WARNING: {e}; collecting it again.')
    return False


def store_root(config, workdir) -> str:
  """The episode store a config collects into: collect.root, else <workdir>/episodes."""
  return config.collect.root or str(epath.Path(workdir) / 'episodes')


def missing(config, workdir,
            policy_loaders: Mapping[str, policies.PolicyLoader] = {}) -> list[EpisodeJob]:
  """The planned episodes whose files are not in the store (e.g. the config now asks for more
  test episodes than a finished collect wrote). Only names are checked, so this is cheap."""
  jobs = plan_jobs(config, EpisodeStore(store_root(config, workdir)), policy_loaders)
  return [job for job in jobs if not epath.Path(job.path).exists()]


def summarize(jobs: list[EpisodeJob]) -> list[dict]:
  """Mean true return per (split, policy, noise) over the planned episode files."""
  groups: dict[tuple, list] = {}
  for job in jobs:
    episode = episodes_lib.load_episode(job.path, keys=('reward',))
    groups.setdefault((job.split, job.policy, job.noise), []).append(
        (episodes_lib.episode_return(episode), len(episode['reward'])))
  rows = []
  for (split, policy, noise), values in groups.items():
    returns = np.array([v[0] for v in values])
    rows.append({'split': split, 'policy': policy, 'noise': noise, 'episodes': len(values),
                 'mean_return': float(returns.mean()), 'std_return': float(returns.std()),
                 'mean_length': float(np.mean([v[1] for v in values]))})
  return rows


def format_table(rows: list[dict]) -> str:
  header = f'{"split":<6} {"policy":<28} {"noise":>5} {"episodes":>8} {"return":>16} {"length":>7}'
  lines = [header, '-' * len(header)]
  for r in rows:
    lines.append(f'{r["split"]:<6} {r["policy"][:28]:<28} {r["noise"]:>5.2f} {r["episodes"]:>8d} '
                 f'{r["mean_return"]:>9.1f} ± {r["std_return"]:<5.1f}{r["mean_length"]:>7.0f}')
  return '\n'.join(lines)


def run(config, workdir, policy_loaders: Mapping[str, policies.PolicyLoader] = {}) -> dict:
  """Collects the episodes `config.collect` asks for into `<workdir>/episodes` (or collect.root).

  policy_loaders: {kind: loader} for a `collect.policy` of the form '<kind>:<argument>' (the
  pipeline passes the agent's for 'agent:<checkpoint dir>'; see policies.loader_for).

  Returns {'rows': summary rows, 'new_episodes', 'new_steps', 'steps_per_second'} and writes it to
  `<store root>/<task dir>/collect_summary.json`.
  """
  from viper_jax import validation
  validation.validate(config, ['collect'], workdir)
  store = EpisodeStore(store_root(config, workdir))
  jobs = plan_jobs(config, store, policy_loaders)
  todo = [job for job in jobs if not _existing_ok(job.path)]
  print(f'collect {config.task}: {len(jobs)} episodes planned, {len(jobs) - len(todo)} already '
        f'in {store.root}, {len(todo)} to collect with {config.collect.workers} worker(s).')
  new_steps, start = 0, time.time()
  with tqdm.tqdm(total=len(todo), unit='ep', desc='collect', dynamic_ncols=True) as bar:
    def done(result):
      nonlocal new_steps
      new_steps += result[1]
      bar.update(1)
      bar.set_postfix(steps_per_s=f'{new_steps / max(time.time() - start, 1e-9):.0f}')

    if config.collect.workers <= 1 or len(todo) <= 1:
      for job in todo:
        done(run_job(job))
    else:
      context = mp.get_context('spawn')
      with concurrent.futures.ProcessPoolExecutor(
          min(config.collect.workers, len(todo)), mp_context=context) as pool:
        futures = [pool.submit(run_job, job) for job in todo]
        try:
          for future in concurrent.futures.as_completed(futures):
            done(future.result())
        except BaseException:
          pool.shutdown(wait=False, cancel_futures=True)
          raise
  seconds = time.time() - start
  rows = summarize(jobs)
  print(format_table(rows))
  result = {'task': config.task, 'rows': rows, 'new_episodes': len(todo), 'new_steps': new_steps,
            'steps_per_second': new_steps / seconds if todo else None}
  summary_path = store.root / task_dirname(config.task) / 'collect_summary.json'
  atomic.write_json(summary_path, result, indent=2)
  return result
