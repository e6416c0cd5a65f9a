#!/usr/bin/env bash
# Every GPU figure of the project in one call, the reproduction run included. Each part
# has its own time limit, 565 s in all, so one that hangs cannot eat the others' time
# (a device call may take 600 s). PARTS="train_step upscale" runs only the parts named
# (default: all but real_world, which runs only when named). Writes its figures to
# $OUT/gpu_check.txt and $OUT/train_step.jsonl, and the reproduction's table and model
# files to $OUT (default OUT: benchmarks/out); copy the figures to benchmarks/RESULTS.md
# and the README with the date and the machine.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh
# Packages missing on the GPU machine travel as wheels in .whl/.
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
PEAK=${PEAK_TFLOPS:-989}  # H100/H200 SXM dense bf16 spec sheet figure.

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, jax.devices())"
} 2>&1 | tee -a "$OUT/gpu_check.txt"

PARTS=${PARTS:-all}
run() {  # run NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  [[ $PARTS == all || " $PARTS " == *" $name "* ]] || return 0
  echo "== $name ($(date -u +%T), limit ${limit} s): $*" | tee -a "$OUT/gpu_check.txt"
  timeout "$limit" "$@" 2>&1 | grep -v -E "^(I|W)[0-9]{4} |Unable to initialize backend" \
      | tee -a "$OUT/gpu_check.txt"
}

# Compiling dominates the run; the persistent cache lets later parts reuse compiles.
export JAX_COMPILATION_CACHE_DIR=/tmp/srgan_jax_xla_cache
# The headline: both steps, bf16, batch 64, beside PyTorch in the same process (its
# CUDA-graph form, `--torch_compile`, compiles for minutes: run it in a call of its own).
run train_step 80 python3 benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=64 \
    --dtypes=bfloat16 --peak_tflops="$PEAK" --torch --iters=50 --json="$OUT/train_step.jsonl"
# Inference: the upscaler's default form on a GPU, beside PyTorch.
run upscale 20 python3 benchmarks/upscale.py --size=512 --dtypes=bfloat16 \
    --output_convs=subpixel4 --torch
# The input on a GPU host's cores: crops/s per core of the in-memory cache and of raw
# records (1 and 8 workers) against the steps' needs, from scikit-image's photos; the
# device part of a batch and the in-step degradation.
run input_pipeline 30 python3 benchmarks/input_pipeline.py \
    --folder="$(python3 -c 'import skimage.data; print(skimage.data.data_dir)')" \
    --sources=memory,records-raw --workers=1,8 --seconds=2 --degradation
# Training itself: main.py's loop for the SRResNet phase (input threads, copies, metrics,
# a checkpoint, an evaluation) beside the bare step of the same config.
run train_loop 35 python3 benchmarks/train_loop.py --model=srresnet --batch=64 \
    --dtype=bfloat16 --steps=600 --log_every=100 --eval_set=skimage:astronaut --step
# The perceptual metrics: LPIPS image pairs/s at 512x512 on the device, NIQE s per image.
run metrics 15 python3 benchmarks/metrics.py --size=512 --batch=8 --iters=10
# The real-world degradation's share of the SRGAN step (batch 16 of 96x96 crops cut from
# 152x152 degraded, as configs/real_*.py train; the target: at most 10%), the degradation
# alone timed beside the whole step with each LR synthesis.
run real_degradation 45 python3 benchmarks/train_step.py --models=srgan --batch_sizes=16 \
    --dtypes=bfloat16 --degradations=bicubic,realesrgan --crop_pad_size=152 --iters=20 \
    --json="$OUT/train_step.jsonl"
# Its Poisson draws: the CDF table against jax.random.poisson, first-stage canvas.
run poisson_sampler 10 python3 benchmarks/poisson_sampler.py --batch=16 --side=160 \
    --json="$OUT/train_step.jsonl"
# The reproduction: SRResNet-MSE on the 291 images for 180 s, SRGAN-MSE from it for 70,
# both evaluated (Set5, Set14, $EXTRA_EVAL_SETS) and exported: $OUT/results.md and
# $OUT/*.npz (benchmarks/reproduce.sh says how).
run reproduce 330 env BUDGET_S=180 GAN_BUDGET_S=70 OUT="$OUT" bash benchmarks/reproduce.sh
# Only when named (PARTS=real_world, a call of its own: it needs most of one): the
# real-world use case at the paper's G size, which this CPU cannot train in a session.
# Two 16x64 SRResNets, 10,000 steps each of batch 16 of 96x96 (152x152 degraded), one on
# bicubic LR and one on Real-ESRGAN's degradation with 30% clean samples; the table
# (degraded and clean Set14) is printed and written to $OUT/real_world/results.json.
if [[ " $PARTS " == *" real_world "* ]]; then
  run real_world 560 python3 benchmarks/real_world.py --steps=10000 --blocks=16 --features=64 \
      --batch=16 --crop=96 --crop_pad_size=152 --clean_prob=0.3 --learning_rate=2e-4 \
      --out="$OUT/real_world"
fi
echo "done $(date -u)" | tee -a "$OUT/gpu_check.txt"
