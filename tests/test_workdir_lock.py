"""One writer per workdir, with real processes: a second run stops at once naming the holder; a
lock left by a SIGKILLed run (dead pid) or one whose heartbeat expired is taken over."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from viper_jax import workdir_lock

HOLDER = """
import sys, time
from viper_jax import workdir_lock
with workdir_lock.hold(sys.argv[1], command='test holder', heartbeat=0.2):
  print('held', flush=True)
  time.sleep(120)
"""


def _start_holder(workdir):
  process = subprocess.Popen([sys.executable, '-c', HOLDER, str(workdir)], stdout=subprocess.PIPE,
                             text=True)
  assert process.stdout.readline().strip() == 'held'
  return process


def test_second_run_stops_at_once_and_a_killed_holder_is_taken_over(tmp_path):
  holder = _start_holder(tmp_path)
  try:
    lock = json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())
    assert lock['pid'] == holder.pid and lock['host'] == socket.gethostname()
    time.sleep(0.5)
    assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['heartbeat'] > lock[
        'heartbeat']  # the holder's heartbeat thread refreshes it
    # A real `viper collect` on the same workdir refuses before doing anything.
    start = time.time()
    second = subprocess.run(
        [sys.executable, '-m', 'viper_jax.cli', 'collect', '--config=experiments/quickstart.py',
         f'--workdir={tmp_path}'], capture_output=True, text=True, timeout=300)
    assert second.returncode == 3, second.stderr
    assert f'pid {holder.pid} on {socket.gethostname()} (test holder' in second.stderr
    assert not (tmp_path / 'episodes').exists()
    print(f'refused in {time.time() - start:.1f} s (process start included)')
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The killed holder left its lock file; the next run sees the dead pid and takes over.
  assert (tmp_path / workdir_lock.LOCK_NAME).exists()
  taker = subprocess.run(
      [sys.executable, '-c', 'import sys\nfrom viper_jax import workdir_lock\n'
       'with workdir_lock.hold(sys.argv[1]): print("took it")', str(tmp_path)],
      capture_output=True, text=True, timeout=120)
  assert taker.returncode == 0 and 'took it' in taker.stdout
  assert f'stale lock on {tmp_path} from pid {holder.pid}' in taker.stderr
  assert f'pid {holder.pid} is not running' in taker.stderr
  assert not (tmp_path / workdir_lock.LOCK_NAME).exists()  # released on exit


def _fake_lock(workdir, heartbeat_age: float):
  now = time.time()
  record = {'pid': 1, 'host': 'another-host', 'started': now - 5000,
            'heartbeat': now - heartbeat_age, 'command': 'viper train-prior', 'token': 'x'}
  (workdir / workdir_lock.LOCK_NAME).write_text(json.dumps(record))


def test_lock_of_another_host_is_kept_while_its_heartbeat_is_fresh_and_taken_when_expired(
    tmp_path):
  _fake_lock(tmp_path, heartbeat_age=5)
  with pytest.raises(workdir_lock.WorkdirLockedError, match='pid 1 on another-host'):
    with workdir_lock.hold(tmp_path, stale_after=60):
      pass
  _fake_lock(tmp_path, heartbeat_age=600)
  messages = []
  with workdir_lock.hold(tmp_path, stale_after=60, log=messages.append):
    assert json.loads((tmp_path / workdir_lock.LOCK_NAME).read_text())['pid'] == os.getpid()
  assert 'last heartbeat 600 s ago (> 60 s)' in messages[0]


def test_concurrent_takeovers_have_one_winner(tmp_path):
  _fake_lock(tmp_path, heartbeat_age=600)
  code = ('import sys, time\nfrom viper_jax import workdir_lock\n'
          'try:\n  with workdir_lock.hold(sys.argv[1], stale_after=60, log=lambda m: None):\n'
          '    print("won", flush=True); time.sleep(15)\n'
          'except workdir_lock.WorkdirLockedError:\n  print("lost", flush=True)\n')
  racers = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE,
                             text=True) for _ in range(3)]
  outcomes = sorted(p.communicate(timeout=120)[0].strip() for p in racers)
  assert outcomes == ['lost', 'lost', 'won']
