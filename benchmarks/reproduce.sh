#!/usr/bin/env bash
# The paper's two phases on the 291 images, each for a fixed wall-clock budget, then one
# results table and both model files. A part of gpu_check.sh; runs anywhere:
#   OUT=/tmp/out BUDGET_S=360 GAN_BUDGET_S=120 bash benchmarks/reproduce.sh
# SRResNet-MSE (configs/srresnet_291.py, the paper's G) for BUDGET_S seconds, then
# SRGAN-MSE (configs/srgan_mse_291.py) from it for GAN_BUDGET_S, in $DTYPE (default
# bfloat16); budgets count from each run's start, compiling included, so the same script
# fits any device. Both are evaluated on Set5 and Set14 and on each folder in
# $EXTRA_EVAL_SETS (space-separated, each with HR/ and LR_bicubic/X4/). Writes to $OUT:
# results.md (the table, with the runs' steps and times), srresnet_291.npz and
# srgan_mse_291.npz (python -m srgan_jax.export), and each run's metrics.jsonl.
# $EXTRA_ARGS go to both trainings (e.g. smaller batches for a quick check).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
RUNS=${RUNS:-$OUT/runs}
BUDGET_S=${BUDGET_S:-360}
GAN_BUDGET_S=${GAN_BUDGET_S:-120}
DTYPE=${DTYPE:-bfloat16}
DATA=${SRGAN_JAX_DATA:-../shared/data}
EXTRA_ARGS=${EXTRA_ARGS:-}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
sets=(--data="$DATA/sr_benchmarks/Set5" --data="$DATA/sr_benchmarks/Set14")
for extra in ${EXTRA_EVAL_SETS:-}; do sets+=(--data="$extra"); done

train() {  # train NAME BUDGET_S ARGS...: one phase, timed, evaluated only at the end (below)
  local name=$1 budget=$2; shift 2
  local start=$SECONDS
  # shellcheck disable=SC2086
  python3 main.py --config="configs/$name.py" --workdir="$RUNS/$name" \
      --config.train.time_budget_s="$budget" --config.train.compute_dtype="$DTYPE" \
      --config.eval.sets='()' --config.train.image_every_steps=0 "$@" $EXTRA_ARGS
  echo "$name: $((SECONDS - start)) s, step $(tail -1 "$RUNS/$name/metrics.jsonl" \
      | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["step"])')" \
      | tee -a "$OUT/reproduce_times.txt"
  cp "$RUNS/$name/metrics.jsonl" "$OUT/$name.metrics.jsonl"
  python3 -m srgan_jax.export --workdir="$RUNS/$name" --output="$OUT/$name.npz"
}

train srresnet_291 "$BUDGET_S"
train srgan_mse_291 "$GAN_BUDGET_S" --config.init_from="$RUNS/srresnet_291"
{
  echo "Machine: $(python3 -c 'import jax; d = jax.devices()[0]; print(getattr(d, "device_kind", d.platform), jax.__version__)'); $DTYPE"
  cat "$OUT/reproduce_times.txt"
  echo
  python3 -m srgan_jax.evaluate --model="$OUT/srresnet_291.npz" --model="$OUT/srgan_mse_291.npz" \
      "${sets[@]}" --table=markdown | grep '^|'
} | tee "$OUT/results.md"
