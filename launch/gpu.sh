#!/usr/bin/env bash
# Run a viper command on the GPUs of this machine, or on several GPU machines (one process each).
#
# One machine (all its GPUs form the mesh; no distributed setup needed):
#   launch/gpu.sh viper train-prior --config=experiments/dmc.py:cartpole-swingup --workdir=runs/dmc
#
# Several machines: run the same line on every machine with its own process id:
#   COORDINATOR=host0:1234 NUM_PROCESSES=2 PROCESS_ID=0 launch/gpu.sh viper train-prior ...
#   COORDINATOR=host0:1234 NUM_PROCESSES=2 PROCESS_ID=1 launch/gpu.sh viper train-prior ...
# (the workdir must then be shared storage, e.g. gs://BUCKET/...).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: launch/gpu.sh viper <command> --config=... --workdir=..." >&2; exit 2; }
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/viper ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -U "jax[cuda12]"
  .venv/bin/pip install -q -e .
fi
export PATH=$PWD/.venv/bin:$PATH
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
if [ -n "${COORDINATOR:-}" ]; then
  export VIPER_DISTRIBUTED=1 JAX_COORDINATOR_ADDRESS=$COORDINATOR
  export JAX_NUM_PROCESSES=${NUM_PROCESSES:?NUM_PROCESSES} JAX_PROCESS_ID=${PROCESS_ID:?PROCESS_ID}
fi
exec "$@"
