"""Scripted experts vs random: mean true return per task and collection speed.

  python benchmarks/experts.py [--episodes=3] [--noise_levels=0.25,0.5,0.75] [--tasks=a,b]

Prints one JSON line: {"tasks": {task: {"expert": mean, "noise_0.25": ..., "random": ...,
"steps_per_s": ...}}, "steps_per_s_total": ..., ...}. Full-length episodes at the env defaults
(64x64, DMC action repeat 2, Atari frameskip 4), rendering included, spread over worker processes.
"""
import concurrent.futures
import json
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from absl import app, flags  # noqa: E402

_EPISODES = flags.DEFINE_integer('episodes', 3, 'Episodes per task and policy.')
_NOISE = flags.DEFINE_list('noise_levels', ['0.25', '0.5', '0.75'], 'Noisy-expert levels.')
_TASKS = flags.DEFINE_list('tasks', None, 'Tasks (default: every task with a scripted expert).')
_WORKERS = flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Worker processes.')
_TIME_LIMIT = flags.DEFINE_integer('time_limit', None, 'Agent steps per episode (default: full).')


def run_episode(task, policy, noise, seed, time_limit):
  from viper_jax import envs
  from viper_jax.data import collect, episodes, policies
  env = envs.make(task, seed=seed, time_limit=time_limit)
  actor = policies.make_policy(policy, env, task, noise)
  start = time.perf_counter()
  episode = collect.rollout(env, actor, seed, task, policy)
  seconds = time.perf_counter() - start
  env.close()
  return episodes.episode_return(episode), episodes.episode_length(episode) - 1, seconds


def main(_):
  from viper_jax.data.experts import expert_tasks
  tasks = _TASKS.value or expert_tasks()
  levels = [('expert', 0.0)] + [(f'noise_{n}', float(n)) for n in _NOISE.value] + [('random', 0.0)]
  jobs = [(task, name, 'random' if name == 'random' else 'expert', noise, 1000 + i)
          for task in tasks for name, noise in levels for i in range(_EPISODES.value)]
  start = time.time()
  results = {}
  with concurrent.futures.ProcessPoolExecutor(_WORKERS.value,
                                              mp_context=mp.get_context('spawn')) as pool:
    futures = {pool.submit(run_episode, t, p, n, s, _TIME_LIMIT.value): (t, name)
               for t, name, p, n, s in jobs}
    for future in concurrent.futures.as_completed(futures):
      results.setdefault(futures[future], []).append(future.result())
  wall = time.time() - start
  report = {'benchmark': 'experts', 'episodes_per_policy': _EPISODES.value,
            'workers': _WORKERS.value, 'tasks': {}}
  total_steps = 0
  for task in tasks:
    entry = {}
    steps = seconds = 0
    for name, _ in levels:
      values = results[(task, name)]
      entry[name] = round(sum(v[0] for v in values) / len(values), 1)
      steps += sum(v[1] for v in values)
      seconds += sum(v[2] for v in values)
    entry['expert_minus_random'] = round(entry['expert'] - entry['random'], 1)
    entry['steps_per_s_one_process'] = round(steps / seconds, 1)
    total_steps += steps
    report['tasks'][task] = entry
  report['steps_per_s_total'] = round(total_steps / wall, 1)
  report['wall_s'] = round(wall, 1)
  print(json.dumps(report))


if __name__ == '__main__':
  app.run(main)
