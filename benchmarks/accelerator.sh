#!/usr/bin/env bash
# One command for an accelerator machine: install what is missing, run the tokenizer, prior,
# reward and agent benchmarks, print one JSON line per benchmark (stdout; progress on stderr).
#
#   benchmarks/accelerator.sh                 # GPU/TPU: dmc sizes, bf16, within ~8 minutes
#   benchmarks/accelerator.sh --smoke         # CPU, tiny sizes: checks the script (about a minute
#                                             # on idle cores; compiling dominates)
#   benchmarks/accelerator.sh --fetch-wheels  # on a machine WITH PyPI: save the wheels a machine
#                                             # without it lacks into .whl/ (Python 3.12, x86-64)
#
# Install: when a needed package does not import, the script installs it: with PyPI reachable,
# `pip install -e .` (plus jax[cuda12] on an NVIDIA machine whose jax sees no GPU); without
# PyPI, from the wheels in $VIPER_WHEELS (default .whl/, made by --fetch-wheels) into a private
# folder on PYTHONPATH; with neither, it says what is missing and runs what it can (a benchmark
# that cannot run prints {"benchmark": ..., "error": ...}). The NVIDIA machines lent here have
# jax, flax, optax, chex, orbax, etils, absl and tqdm, but no PyPI: carry .whl/ there.
#
# MFU: each benchmark measures the matmul peak (bf16 on accelerators, float32 on CPU) in its own
# run and divides its achieved FLOP/s by it ('utilisation' in the JSON).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
MODE=${1:-full}
WHEELS=${VIPER_WHEELS:-$ROOT/.whl}
NEEDED=(jax flax optax chex orbax.checkpoint ml_collections etils absl tqdm numpy PIL tensorboardX)
# What the lent NVIDIA machines lack (see the header), with what those packages need.
FETCH=(ml_collections tensorboardX gymnasium farama-notifications cloudpickle imageio-ffmpeg
       grain dm_control dm-env dm-tree mujoco glfw pyopengl labmaze)

log() { echo "[accelerator.sh] $*" >&2; }

missing_modules() {
  "$PY" - "${NEEDED[@]}" <<'EOF' 2>/dev/null || echo "${NEEDED[*]}"
import importlib, sys
bad = []
for name in sys.argv[1:]:
  try:
    importlib.import_module(name)
  except Exception:
    bad.append(name)
print(' '.join(bad))
EOF
}

pypi_reachable() {
  "$PY" -c "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=5)" \
    >/dev/null 2>&1
}

fetch_wheels() {
  mkdir -p "$WHEELS"
  local platforms=()
  for n in 17 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
  for pkg in "${FETCH[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${platforms[@]}" -d "$WHEELS" "$pkg" || log "could not fetch $pkg"
  done
  log "wheels in $WHEELS: $(ls "$WHEELS" | wc -l) files; carry this folder to the device machine"
}

install() {
  local missing
  missing=$(missing_modules)
  local want_cuda=0
  if command -v nvidia-smi >/dev/null && ! "$PY" -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null; then
    want_cuda=1
  fi
  if [ -z "$missing" ] && [ $want_cuda = 0 ]; then
    log "all needed packages import; nothing to install"
  elif pypi_reachable; then
    log "installing from PyPI (missing: ${missing:-none}, cuda jax: $want_cuda)"
    local extra=()
    [ $want_cuda = 1 ] && extra=('jax[cuda12]')
    timeout 240 "$PY" -m pip install -q -e . "${extra[@]}" >&2 || log "pip install failed"
  elif [ -d "$WHEELS" ]; then
    log "no PyPI: installing the wheels in $WHEELS into /tmp/viper_site (missing: ${missing:-none})"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/viper_site "$WHEELS"/*.whl >&2 || log "wheel install failed"
    export PYTHONPATH=/tmp/viper_site:${PYTHONPATH:-}
  else
    log "no PyPI and no wheels ($WHEELS): running with what is there; missing: ${missing:-none}"
  fi
  [ $want_cuda = 1 ] && ! "$PY" -c "import jax; assert jax.default_backend() == 'gpu'" 2>/dev/null \
    && log "WARNING: nvidia-smi works but jax sees no GPU; the figures below are CPU figures"
  export PYTHONPATH=$ROOT:${PYTHONPATH:-}
}

# run_bench NAME TIMEOUT_S CMD...: prints the command's last JSON line, or an error line.
# VIPER_BENCH_TIMEOUT=S replaces every timeout (a loaded machine compiles slowly).
run_bench() {
  local name=$1 limit=${VIPER_BENCH_TIMEOUT:-$2}
  shift 2
  local out start=$SECONDS
  log "$name: $*"
  out=$(timeout "$limit" "$PY" "$@" 2>/tmp/accelerator_$name.err)
  local rc=$?
  local line
  line=$(printf '%s\n' "$out" | grep '^{' | tail -n 1)
  if [ $rc = 0 ] && [ -n "$line" ]; then
    echo "$line"
  else
    local why
    why=$( (tail -n 3 /tmp/accelerator_$name.err; [ $rc = 124 ] && echo "timed out after ${limit}s") \
           | tr '\n"\\' '   ' | cut -c1-400)
    echo "{\"benchmark\": \"$name\", \"error\": \"exit $rc: $why\"}"
  fi
  log "$name: $((SECONDS - start)) s"
}

case "$MODE" in
  --fetch-wheels) fetch_wheels; exit 0 ;;
  --smoke)
    export JAX_PLATFORMS=cpu
    install
    run_bench tokenizer_prior 120 benchmarks/video_train.py --size=tiny --tokenizer_batch=2 \
      --prior_batch=2 --repeats=1
    run_bench prior_reference 120 benchmarks/video_train.py --size=tiny --parts=prior \
      --prior_batch=2 --repeats=1 --prior_attention=reference
    run_bench reward 120 benchmarks/reward_throughput.py --size=tiny --batch=1 --frames=8 \
      --repeats=1 --fast_repeats=1
    run_bench agent_train_step 120 benchmarks/agent_train_step.py --agent_size=xs --batches=1,2 \
      --batch_length=4 --repeats=1
    ;;
  full)
    install
    # dmc size, the preset batches (tokenizer 128 frames, prior 64 windows of 16 frames), bf16.
    # Timeouts sum to 7 minutes, leaving one for the install.
    run_bench tokenizer_prior 130 benchmarks/video_train.py --size=dmc
    run_bench prior_reference 70 benchmarks/video_train.py --size=dmc --parts=prior \
      --prior_attention=reference
    run_bench prior_xla 60 benchmarks/video_train.py --size=dmc --parts=prior --prior_attention=xla
    run_bench reward 90 benchmarks/reward_throughput.py --size=dmc --batch=16 --frames=256 \
      --repeats=2 --fast_repeats=10
    run_bench agent_train_step 70 benchmarks/agent_train_step.py --agent_size=s --batches=16,32,64
    ;;
  *) echo "usage: $0 [--smoke | --fetch-wheels]" >&2; exit 2 ;;
esac
