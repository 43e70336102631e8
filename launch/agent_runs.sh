#!/usr/bin/env bash
# The VIPER-vs-task-reward agent runs of one task, in the background, from a pinned worktree.
#
#   launch/agent_runs.sh TASK [SOURCES] [EXTRA viper flags...]
#   launch/agent_runs.sh dmc:cartpole-balance env,viper,viper+disag --config.agent.train_ratio=64
#
# 1. `git worktree add` of HEAD under $RUNS/wt-<commit> (refactoring the checkout later does not
#    change a running run's code);
# 2. the reward model (collect, tokenizer, prior, reward-stats, reward-check) in
#    $RUNS/<name>_rm, with experiments/agent_cpu.py:TASK (skipped when finished);
# 3. one `viper train-agent` per reward source, all at once, each under setsid/nohup with its log
#    in $RUNS/<name>_<source>.log; 'env' is the task-reward oracle, the 'viper*' runs get the
#    reward model of step 2 and never the task reward.
# Rerunning the same line resumes every stage and run from its newest checkpoint.
# RUNS defaults to runs/; CONFIG to experiments/agent_cpu.py. Compare when they finish:
#   viper compare --runs=env=$RUNS/<name>_env,viper=$RUNS/<name>_viper --out=<name>.png
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,17p "$0" >&2; exit 2; }
TASK=$1; SOURCES=${2:-env,viper}; shift $(( $# >= 2 ? 2 : 1 ))
cd "$(dirname "$0")/.."
REPO=$PWD; PY=$REPO/.venv/bin/python
RUNS=$(realpath -m "${RUNS:-runs}"); CONFIG=${CONFIG:-experiments/agent_cpu.py}
[ -x "$PY" ] || { echo "no $PY: install first (README, first command)" >&2; exit 2; }
COMMIT=$(git rev-parse --short HEAD)
WT=$RUNS/wt-$COMMIT
mkdir -p "$RUNS"
[ -d "$WT" ] || git worktree add --detach "$WT" "$COMMIT" >/dev/null
NAME=$(echo "${TASK#*:}" | tr -c 'a-zA-Z0-9\n' '_')
viper() {  # the viper CLI of the pinned worktree
  (cd "$WT" && PYTHONPATH=$WT "$PY" -c \
    "import sys; from viper_jax.cli import console_main; sys.argv[0] = 'viper'; console_main()" "$@")
}
echo "commit $COMMIT, worktree $WT, runs in $RUNS"
viper pipeline --config="$WT/$CONFIG:$TASK" --config.agent.reward_source=viper \
  --stages=collect,train-tokenizer,train-prior,reward-stats,reward-check \
  --workdir="$RUNS/${NAME}_rm" "$@" > "$RUNS/${NAME}_rm.log" 2>&1
echo "reward model: $RUNS/${NAME}_rm ($(cat "$RUNS/${NAME}_rm/reward/check.json" | head -c 80)...)"
for SOURCE in ${SOURCES//,/ }; do
  RUN=$RUNS/${NAME}_${SOURCE/+/_}
  ARGS=(train-agent --config="$WT/$CONFIG:$TASK" --config.agent.reward_source="$SOURCE"
        --workdir="$RUN" "$@")
  [ "$SOURCE" = env ] || ARGS+=(--config.agent.reward_checkpoint="$RUNS/${NAME}_rm")
  (export -f viper; export WT PY; setsid nohup bash -c 'viper "$@"' _ "${ARGS[@]}" \
     > "$RUN.log" 2>&1 &)
  echo "started $SOURCE: $RUN (log $RUN.log)"
done
