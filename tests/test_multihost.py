"""Two local processes joined by jax.distributed (2 fake CPU devices each) compute the same
sharded reward and the same data-parallel prior train steps as one process with 4 devices."""
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'multihost_worker.py')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _run(num_processes: int, out_dir) -> list[dict]:
  port = _free_port()
  env = dict(os.environ)  # the worker sets its own device count
  env.pop('JAX_PLATFORMS', None)
  procs = [subprocess.Popen([sys.executable, WORKER, str(i), str(num_processes), str(port),
                             str(out_dir)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=os.path.dirname(os.path.dirname(WORKER)))
           for i in range(num_processes)]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out.decode()[-3000:]
  return [dict(np.load(out_dir / f'process{i}.npz')) for i in range(num_processes)]


def test_two_processes_equal_one(tmp_path):
  (tmp_path / 'one').mkdir()
  (tmp_path / 'two').mkdir()
  [one] = _run(1, tmp_path / 'one')
  two = _run(2, tmp_path / 'two')
  # Reward: each host got its own rows' scores; together they equal the single process's.
  np.testing.assert_allclose(np.concatenate([two[0]['lp'], two[1]['lp']]), one['lp'], atol=2e-4)
  # Training: the same losses on every host and the same params as the single process
  # (the cross-host gradient sum only reorders float32 additions).
  for proc in two:
    np.testing.assert_allclose(proc['losses'], one['losses'], rtol=1e-5)
    params = sorted(k for k in one if k.startswith('param'))
    for key in params:
      np.testing.assert_allclose(proc[key], one[key], atol=3e-4)  # 3 Adam steps of lr 1e-3
  assert not np.allclose(one['losses'][0], one['losses'][-1])  # it trained
