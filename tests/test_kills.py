"""Real kills: a stage runs as a subprocess (tests/fault_worker.py), gets SIGKILL at a seeded random
moment or in the middle of a checkpoint / episode write, is rerun, and must end where one
uninterrupted run ends (one shared reference run per stage kind). The killed `viper pipeline` is
tests/test_quickstart.py, the suite's one end-to-end run of it.

  tokenizer + prior  final parameters bitwise equal
  collect            the same episode files with the same contents
  agent              counters continue; every replay step is there once, none lost or duplicated

Each injected fault is appended to $VIPER_FAULT_LOG (a JSON line) when that variable is set.
"""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from viper_jax import metrics
from viper_jax.agent.replay import Replay

from conftest import saved_state

WORKER = str(pathlib.Path(__file__).parent / 'fault_worker.py')
ENV = {**os.environ, 'PYTHONPATH': os.pathsep.join(
    [str(pathlib.Path(__file__).parents[1]), os.environ.get('PYTHONPATH', '')])}


def _worker(kind, workdir):
  return [sys.executable, WORKER, kind, str(workdir)]


def run_to_end(command, timeout=600):
  done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]
  return done


def _inode(path):
  try:
    return path.stat().st_ino
  except FileNotFoundError:
    return None


def kill_at(command, workdir, moment, timeout=600) -> dict:
  """Runs `command`, sends SIGKILL at `moment` and returns what happened.

  moment: ('after', seconds) or ('while', glob relative to workdir): kill as soon as a path
  matching it exists, e.g. an orbax temporary checkpoint folder or an episode's temp file.
  If the process ends first, it was not killed ('killed': False).
  """
  workdir = pathlib.Path(workdir)
  process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  start, seen = time.time(), None
  kind, value = moment
  # Leftovers of earlier kills (same names, e.g. orbax's '<step>.orbax-checkpoint-tmp') don't count.
  before = {(str(p), p.stat().st_ino) for p in workdir.glob(value)} if kind == 'while' else set()
  while process.poll() is None and time.time() - start < timeout:
    if kind == 'after' and time.time() - start >= value:
      break
    if kind == 'while':
      seen = next((p for p in workdir.glob(value) if (str(p), _inode(p)) not in before), None)
      if seen is not None:
        break
    time.sleep(0.0005)
  killed = process.poll() is None
  if killed:
    process.send_signal(signal.SIGKILL)
  process.wait()
  event = {'command': ' '.join(command[1:]), 'moment': list(moment), 'killed': killed,
           'at_s': round(time.time() - start, 3), 'during': str(seen) if seen else None,
           'left_behind': str(seen) if seen is not None and seen.exists() else None}
  if os.environ.get('VIPER_FAULT_LOG'):
    with open(os.environ['VIPER_FAULT_LOG'], 'a') as f:
      f.write(json.dumps(event) + '\n')
  return event


def kill_chain(command, workdir, moments) -> list[dict]:
  """Kills `command` at each moment in turn (every run resumes the last), then runs it to the end."""
  events = [kill_at(command, workdir, m) for m in moments]
  run_to_end(command)
  return events


def _random_moments(seed, reference_seconds, count):
  rng = random.Random(seed)
  # Early in the reference's time: a rerun resumes with less left to do, and on a loaded machine
  # a late moment often comes after the rerun has finished.
  return [('after', round(rng.uniform(0.15, 0.5) * reference_seconds, 2)) for _ in range(count)]


def _assert_same_tree(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _reference(tmp_path_factory, kind):
  root = tmp_path_factory.mktemp(f'{kind}_reference')
  start = time.time()
  run_to_end(_worker(kind, root))
  return root, time.time() - start


@pytest.fixture(scope='module')
def video_reference(tmp_path_factory):
  return _reference(tmp_path_factory, 'video')


@pytest.fixture(scope='module')
def agent_reference(tmp_path_factory):
  return _reference(tmp_path_factory, 'agent')


@pytest.fixture(scope='module')
def collect_reference(tmp_path_factory):
  return _reference(tmp_path_factory, 'collect')


def test_killed_tokenizer_and_prior_end_bitwise_equal(video_reference, tmp_path):
  reference, seconds = video_reference
  moments = [('while', 'tokenizer/checkpoints/*orbax-checkpoint-tmp*'),
             *_random_moments(20, seconds, 1),
             ('while', 'prior/checkpoints/*orbax-checkpoint-tmp*')]
  events = kill_chain(_worker('video', tmp_path), tmp_path, moments)
  assert sum(e['killed'] for e in events) >= 2, events
  for stage in ('tokenizer', 'prior'):
    step_a, a = saved_state(reference / stage / 'checkpoints')
    step_b, b = saved_state(tmp_path / stage / 'checkpoints')
    assert step_a == step_b == 6
    _assert_same_tree(a, b)
  assert (tmp_path / 'tokenizer' / 'reconstructions.png').exists()
  assert (tmp_path / 'prior' / 'sample.gif').exists()
  result = json.loads((tmp_path / 'prior' / 'result.json').read_text())
  assert 0 < result['val_bits_per_token'] and result['uniform_bits_per_token'] == 5.0


def _episodes(root):
  files = sorted((root / 'episodes').rglob('*.npz'))
  return {str(p.relative_to(root)): dict(np.load(p)) for p in files}


def test_killed_collect_ends_with_the_same_episode_set(collect_reference, tmp_path):
  reference, seconds = collect_reference
  moments = [('while', 'episodes/*/train/*.tmp-*'), *_random_moments(21, seconds, 1),
             ('while', 'episodes/*/test/*.tmp-*')]
  events = kill_chain(_worker('collect', tmp_path), tmp_path, moments)
  assert any(e['killed'] for e in events), events
  a, b = _episodes(reference), _episodes(tmp_path)
  assert sorted(a) == sorted(b) and len(a) == 3 + 2 + 1
  for name in a:
    assert sorted(a[name]) == sorted(b[name]), name
    for key in a[name]:
      np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f'{name}: {key}')
  # Temp files of killed writes may stay behind; they are never read as episodes.


def test_killed_agent_continues_its_counters_and_loses_no_replay_step(agent_reference, tmp_path):
  reference, seconds = agent_reference
  moments = [('while', 'replay/*.tmp-*'), ('while', 'checkpoints/*orbax-checkpoint-tmp*'),
             *_random_moments(22, seconds, 1)]
  events = kill_chain(_worker('agent', tmp_path), tmp_path, moments)
  assert sum(e['killed'] for e in events) >= 2, events
  runs = [json.loads(line) for line in (tmp_path / 'runs.jsonl').read_text().splitlines()]
  ref = json.loads((reference / 'runs.jsonl').read_text())
  got, want = runs[-1]['counters'], ref['counters']
  for key in ('env_steps', 'updates', 'updates_due'):  # continue exactly across the kills
    assert got[key] == want[key], (key, got, want)
  # A resume starts new episodes, so an episode a kill cut short never finishes: at most one
  # fewer finished episode per kill.
  killed = sum(e['killed'] for e in events)
  assert want['episodes'] - killed <= got['episodes'] <= want['episodes'], (got, want)
  # A checkpoint, never past one (150: a kill after the last checkpoint, before the run ended).
  assert runs[-1]['resumed_from']['env_steps'] in (0, 50, 100, 150)
  final = Replay(1000, 1)
  final.load(tmp_path / 'replay' / 'replay_150.npz')
  expected = Replay(1000, 1)
  expected.load(reference / 'replay' / 'replay_150.npz')
  # Every env step is in the replay exactly once: 150 steps, none lost or duplicated.
  assert final.count.tolist() == [150] == expected.count.tolist()
  # A resume starts a new episode at its checkpoint, so only the steps before the first
  # checkpoint (50) are the reference's whatever the kills hit (killed runs leave no runs.jsonl
  # line saying where they resumed).
  for key in ('image', 'action', 'reward', 'is_first'):
    np.testing.assert_array_equal(final.data[key][:, :50], expected.data[key][:, :50])
  resumed = runs[-1]['resumed_from']['env_steps']
  if 0 < resumed < 150:
    assert final.data['is_first'][0, resumed], 'the resumed run starts a new episode'
  steps = [r['step'] for r in metrics.read_metrics(tmp_path) if 'loss' in r]
  assert steps == sorted(set(steps))  # logged once per step, in order, across the kills
