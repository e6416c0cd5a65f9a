#!/usr/bin/env bash
# Every GPU figure of the project in one run (under 8 minutes on one H100/H200: each part
# has its own time limit, 455 s in all, so one that hangs cannot eat the others' time).
# PARTS="train_step profile" runs only the parts named (default: all). Probes, at the
# end, are experiments that run only when PARTS names them, each within 8 minutes.
# Writes its figures to $OUT/gpu_check.txt and $OUT/train_step.jsonl, and the profiles'
# traces and steps' HLO as $OUT/trace_*.json.gz and $OUT/trace_*.hlo.txt.gz (for
# Perfetto, or `profile_step.py --from_trace`) (default OUT: benchmarks/out; few files,
# since a device session returns only a few); copy the figures to benchmarks/RESULTS.md.
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
} 2>&1 | tee -a "$OUT/gpu_check.txt"

PARTS=${PARTS:-all}
run() {  # run NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  [[ $PARTS == all || " $PARTS " == *" $name "* ]] || return 0
  echo "== $name ($(date -u +%T), limit ${limit} s): $*" | tee -a "$OUT/gpu_check.txt"
  timeout "$limit" "$@" 2>&1 | grep -v -E "^(I|W)[0-9]{4} |Unable to initialize backend" \
      | tee -a "$OUT/gpu_check.txt"
}
probe() {  # probe NAME TIMEOUT_S COMMAND...: as run, but only when PARTS names it
  [[ " $PARTS " == *" $1 "* ]] || return 0
  run "$@"
}
keep_trace() {  # keep_trace PART DIR NAME: if PART ran, the newest Perfetto trace under
  # DIR as $OUT/NAME.json.gz and the step's HLO as $OUT/NAME.hlo.txt.gz, which
  # `profile_step.py --from_trace=... --hlo=...` reads on any machine.
  [[ $PARTS == all || " $PARTS " == *" $1 "* ]] || return 0
  local trace
  trace=$(find "$2" -name '*perfetto_trace.json.gz' -printf '%T@ %p\n' 2>/dev/null \
      | sort -n | tail -1 | cut -d' ' -f2-)
  [[ -n $trace ]] && cp "$trace" "$OUT/$3.json.gz" && echo "trace: $OUT/$3.json.gz" \
      | tee -a "$OUT/gpu_check.txt"
  [[ -f $2/step.hlo.txt.gz ]] && cp "$2/step.hlo.txt.gz" "$OUT/$3.hlo.txt.gz"
  return 0
}

# Compiling dominates the run (an SRGAN step: about 40 s with autotuning on an H200, jax
# 0.11.2); the persistent cache lets the profile reuse a compile of train_step.
export JAX_COMPILATION_CACHE_DIR=/tmp/srgan_jax_xla_cache
# The headline: both steps, bf16, batch 64, beside PyTorch, with G's output conv in the
# configs' form (subpixel4: the direct form was slower in each of the runs in RESULTS.md).
# The state travels packed, as training passes it (srgan_jax/packing.py).
run train_step 155 python3 benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=64 \
    --dtypes=bfloat16 --output_convs=subpixel4 --peak_tflops="$PEAK" --torch --iters=50 \
    --json="$OUT/train_step.jsonl"
run fp32 110 python3 benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=64 \
    --dtypes=float32 --peak_tflops="$PEAK" --torch --iters=50 --json="$OUT/train_step.jsonl"
# Kernels per step, their device time and the idle time between them, as gaps with the
# ops on either side, and by network and kind (convolutions against the other fusions):
# first as compiled (XLA documents its command buffers, CUDA graphs, as off under a
# profiler), then compiled to keep them on (in the sixth run of RESULTS.md both ran
# kernels from command buffers, and their device times were the same to 1%).
run profile 60 python3 benchmarks/profile_step.py --model=srresnet --batch=64 --dtype=bfloat16 \
    --output_conv=subpixel4 --steps=10 --top=15 --graphs --trace_dir=/tmp/srgan_jax_trace/srresnet
keep_trace profile /tmp/srgan_jax_trace/srresnet/ops trace_srresnet
# Inference: the upscaler's default form on a GPU, beside PyTorch.
run upscale 35 python3 benchmarks/upscale.py --size=512 --dtypes=bfloat16 \
    --output_convs=subpixel4 --torch
# The input: what the trainer's producer threads (1, 2 and 4) feed a step, to compare
# with the steps' images/s, and the batch's cost on the device.
run input_pipeline 15 python3 benchmarks/input_pipeline.py \
    --source=skimage:astronaut,chelsea,coffee,rocket,hubble_deep_field,retina,motorcycle_left \
    --prefetch_batches=1,2,4 --workers= --seconds=1.5 --degradation
# Training itself: main.py's loop for the SRResNet phase (input thread, copies, one
# dispatch per step, metrics every 100 steps as the configs log them, a checkpoint, an
# evaluation), beside the bare step of the same config. It also runs the loop's
# mechanics end to end on the GPU (the test config's run it replaced took 34 s there).
run train_loop 80 python3 benchmarks/train_loop.py --model=srresnet --batch=64 \
    --dtype=bfloat16 --steps=600 --log_every=100 --eval_set=skimage:astronaut --step

# Probe: where the SRGAN step's device time goes, op by op and by network, and its idle
# gaps. Its trace comes back as $OUT/trace_srgan.json.gz.
probe profile_srgan 150 python3 benchmarks/profile_step.py --model=srgan --batch=64 \
    --dtype=bfloat16 --output_conv=subpixel4 --steps=10 --top=25 \
    --trace_dir=/tmp/srgan_jax_trace/srgan
keep_trace profile_srgan /tmp/srgan_jax_trace/srgan/ops trace_srgan
# Probe: whether a cost paid once per call (dispatch, passing arrays, XLA's work on its
# command buffers) leaves the device idle: 4 steps in one call (train_step.py
# --steps_per_call) against one step per call, 4 warm-up and 48 timed steps, so both
# variants run as many steps and their losses compare. The sixth run: x1.00 for SRResNet
# (x1.02 for SRGAN in the fifth): the steps keep the device busy.
probe steps_per_call 120 python3 benchmarks/train_step.py --models=srresnet --batch_sizes=64 \
    --dtypes=bfloat16 --steps_per_call=1,4 --rounds=3 --warmup=4 --iters=48 \
    --json="$OUT/train_step.jsonl"
# Probes: the PyTorch reference with CUDA graphs (torch.compile's reduce-overhead) against
# its eager step, which waits on the host. The sixth run: SRGAN 19.6 ms against 51.7 ms
# eager (compiling took 110 s), SRResNet 7.47 ms against 22.0 ms (7 s, after SRGAN's).
probe torch_compile 300 python3 benchmarks/torch_settings.py --model=srgan --batch=64 \
    --dtype=bfloat16 --rounds=3 --iters=20 --json="$OUT/torch_settings.jsonl" \
    --settings="-;compile_mode=reduce-overhead"
probe torch_compile_srresnet 150 python3 benchmarks/torch_settings.py --model=srresnet \
    --batch=64 --dtype=bfloat16 --rounds=3 --iters=30 --json="$OUT/torch_settings.jsonl" \
    --settings="-;compile_mode=reduce-overhead"
echo "done $(date -u)" | tee -a "$OUT/gpu_check.txt"
