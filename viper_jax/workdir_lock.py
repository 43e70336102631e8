"""One writer per workdir: `<workdir>/.viper.lock` holds {pid, host, command, started, heartbeat}.

A run creates the file exclusively and whole (`atomic.create_json`) and refreshes `heartbeat` from
a daemon thread. A second run on the same workdir stops at once with `WorkdirLockedError` naming the
holder. A lock is stale, and is taken over, when its pid no longer runs on this host or its
heartbeat is older than `stale_after` seconds (a killed run, or one on another machine that
stopped). Take-overs go through an exclusive `.viper.lock.takeover` file, so two runs finding the
same stale lock cannot both win.
Local paths only: on gs:// there is no exclusive create, and the lock is skipped.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid

from viper_jax import atomic

LOCK_NAME = '.viper.lock'
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 120.0


class WorkdirLockedError(RuntimeError):
  """Another live run holds the workdir; the message names its pid, host and command."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by someone else
  return True


def _read(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}  # half-written or garbage: no live holder can be named


def stale_reason(holder: dict, stale_after: float, now: float | None = None) -> str | None:
  """Why a lock record no longer guards its workdir, or None if its holder is alive."""
  now = time.time() if now is None else now
  if not holder:
    return 'unreadable lock file'
  if holder.get('host') == socket.gethostname() and not _pid_alive(int(holder.get('pid', -1))):
    return f"pid {holder.get('pid')} is not running"
  age = now - float(holder.get('heartbeat', 0))
  if age > stale_after:
    return f'last heartbeat {age:.0f} s ago (> {stale_after:.0f} s)'
  return None


def _take_over(path: str, record: dict, stale_after: float) -> str | None:
  """Replaces a stale lock by `record`; returns the reason, or None if the lock is not stale."""
  guard = f'{path}.takeover'
  guard_holder = _read(guard)
  if guard_holder is not None and stale_reason(guard_holder, stale_after) is not None:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(guard)  # a take-over that died half-way
  if not atomic.create_json(guard, record):
    return None  # someone else is taking over right now
  try:
    holder = _read(path)
    reason = 'lock file vanished' if holder is None else stale_reason(holder, stale_after)
    if holder == {} and time.time() - os.path.getmtime(path) < 5:
      reason = None  # perhaps mid-write by an older version (O_EXCL, then a write)
    if reason is not None:
      atomic.write_json(path, record)
    return reason
  finally:
    os.unlink(guard)


def describe(holder: dict) -> str:
  return (f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('command', '?')}, "
          f"started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}"
          f", heartbeat {time.time() - float(holder.get('heartbeat', 0)):.0f} s ago)")


@contextlib.contextmanager
def hold(workdir, command: str | None = None, heartbeat: float = HEARTBEAT_SECONDS,
         stale_after: float = STALE_AFTER_SECONDS, log=None):
  """Holds the workdir's lock for the duration of the block; raises WorkdirLockedError at once
  if a live run holds it."""
  workdir = str(workdir)
  if workdir.startswith('gs://'):
    yield None
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  now = time.time()
  record = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': now, 'heartbeat': now,
            'command': command or ' '.join(sys.argv), 'token': uuid.uuid4().hex}
  if not atomic.create_json(path, record):
    holder = _read(path) or {}
    reason = _take_over(path, record, stale_after)
    if reason is None:
      raise WorkdirLockedError(
          f'{workdir} is in use by another run: {describe(holder)}. Wait for it to finish, stop '
          f'it, or use another --workdir. (Lock file: {path}; it is taken over automatically once '
          f'that process is gone or its heartbeat is older than {stale_after:.0f} s.)')
    (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
        f'took over the stale lock on {workdir} from {describe(holder)}: {reason}')
  stop = threading.Event()

  def beat():
    while not stop.wait(heartbeat):
      if (_read(path) or {}).get('token') != record['token']:
        return  # taken over (we looked dead): never write over the new holder
      atomic.write_json(path, {**record, 'heartbeat': time.time()})

  thread = threading.Thread(target=beat, name='viper-workdir-lock', daemon=True)
  thread.start()
  try:
    yield path
  finally:
    stop.set()
    thread.join()
    if (_read(path) or {}).get('token') == record['token']:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
