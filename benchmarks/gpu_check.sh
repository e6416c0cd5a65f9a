#!/usr/bin/env bash
# Every GPU figure of the project in one run (under 8 minutes on one H100/H200: each part
# has its own time limit, 455 s in all, so one that hangs cannot eat the others' time).
# Writes its figures under $OUT (default benchmarks/out); copy them to benchmarks/RESULTS.md.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
# Packages missing on the GPU machine travel as wheels in .whl/ (see RESULTS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
# JAX and PyTorch share the GPU in one process: no up-front allocation by JAX.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
PEAK=${PEAK_TFLOPS:-989}  # H100/H200 SXM dense bf16 spec; the H200 measures ~790 on matmul

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
} 2>&1 | tee "$OUT/machine.txt"

run() {  # run NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/$name.txt"
  timeout "$limit" "$@" 2>&1 | grep -v -E "^(I|W)[0-9]{4} |Unable to initialize backend" | tee -a "$OUT/$name.txt"
}

run train_step 130 python3 benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=64 \
    --dtypes=bfloat16,float32 --peak_tflops="$PEAK" --torch --iters=20 --json="$OUT/train_step.jsonl"
# The regrouped conv forms (srgan_jax/models/layers.py); the direct forms are the rows above.
run forms 80 python3 benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=64 \
    --dtypes=bfloat16 --output_convs=subpixel2,subpixel4 --peak_tflops="$PEAK" --iters=20 \
    --json="$OUT/forms.jsonl"
run forms 25 python3 benchmarks/train_step.py --models=srgan --batch_sizes=64 --dtypes=bfloat16 \
    --strided_convs=space_to_depth --peak_tflops="$PEAK" --iters=20 --json="$OUT/forms.jsonl"
# The step's device time op by op, with the layer each op belongs to.
run profile 40 python3 benchmarks/profile_step.py --model=srgan --batch=64 --dtype=bfloat16 \
    --steps=5 --top=50
run layers 30 python3 benchmarks/layers.py --batch=64 --dtype=bfloat16 --warmup=2 --iters=10 \
    --layers=conv_out,conv1,conv3,conv5,conv7 --json="$OUT/layers.jsonl"
run upscale 60 python3 benchmarks/upscale.py --size=512 --dtypes=bfloat16,float32 \
    --torch --torch_compile
run upscale 20 python3 benchmarks/upscale.py --size=512 --dtypes=bfloat16 \
    --output_convs=subpixel2,subpixel4
run train_step 25 python3 benchmarks/train_step.py --models=srgan --batch_sizes=16 \
    --dtypes=bfloat16 --peak_tflops="$PEAK" --iters=20 --json="$OUT/train_step.jsonl"
run input_pipeline 15 python3 benchmarks/input_pipeline.py \
    --source=skimage:astronaut,chelsea,coffee,rocket,hubble_deep_field,retina,motorcycle_left \
    --workers=1,16 --seconds=3 --degradation
# The real training loop on the GPU (test config): checkpoints, metrics, evaluation.
run e2e 30 python3 main.py --config=configs/test.py --workdir=/tmp/srgan_jax_gpu_e2e
echo "done $(date -u)" | tee -a "$OUT/machine.txt"
