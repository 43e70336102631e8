#!/usr/bin/env bash
# Run one viper command on every host of a Cloud TPU pod slice (multi-host, jax.distributed).
#
#   launch/tpu_pod.sh create NAME ZONE ACCELERATOR [VERSION]   # e.g. v4-32 tpu-ubuntu2204-base
#   launch/tpu_pod.sh setup  NAME ZONE                         # copy this repo, install on all hosts
#   launch/tpu_pod.sh run    NAME ZONE viper train-prior --config=experiments/dmc.py:all \
#                                 --workdir=gs://BUCKET/viper/dmc-all
#   launch/tpu_pod.sh delete NAME ZONE
#
# `run` starts the same command on every worker (`--worker=all`) with VIPER_DISTRIBUTED=1, so
# viper calls jax.distributed.initialize(), which finds the coordinator on TPU pods by itself.
# Each host reads its own shard of the data; only host 0 writes logs; all hosts write orbax
# checkpoints together, so the workdir must be on a shared store (gs://).
set -euo pipefail
action=${1:?usage: launch/tpu_pod.sh create|setup|run|delete NAME ZONE ...}
name=${2:?TPU name}
zone=${3:?zone, e.g. us-central2-b}
shift 3
repo_dir=viper_jax_repo
case "$action" in
  create)
    accelerator=${1:?accelerator type, e.g. v4-32}
    version=${2:-tpu-ubuntu2204-base}
    gcloud compute tpus tpu-vm create "$name" --zone="$zone" --accelerator-type="$accelerator" \
      --version="$version"
    ;;
  setup)
    tar czf /tmp/viper_jax_repo.tgz --exclude=.git --exclude=.venv --exclude=runs \
      -C "$(dirname "$0")/.." .
    gcloud compute tpus tpu-vm scp /tmp/viper_jax_repo.tgz "$name":/tmp/ --zone="$zone" --worker=all
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
      set -e; mkdir -p ~/$repo_dir && tar xzf /tmp/viper_jax_repo.tgz -C ~/$repo_dir &&
      cd ~/$repo_dir && python3 -m venv .venv && .venv/bin/pip install -q -r requirements-tpu.txt &&
      .venv/bin/pip install -q -e ."
    ;;
  run)
    [ $# -gt 0 ] || { echo "run needs a command, e.g. viper train-prior ..." >&2; exit 2; }
    command=$(printf '%q ' "$@")
    gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="
      cd ~/$repo_dir && VIPER_DISTRIBUTED=1 PATH=\$PWD/.venv/bin:\$PATH $command"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone="$zone" --quiet
    ;;
  *)
    echo "unknown action $action (create|setup|run|delete)" >&2; exit 2 ;;
esac
