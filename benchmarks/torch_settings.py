"""Which of the PyTorch reference's settings pay: its step timed with each one undone.

  python benchmarks/torch_settings.py --model=srgan --batch=64 --dtype=bfloat16 \
      --settings="-;channels_last=false;cudnn_benchmark=false;fused_adam=false" \
      --rounds=3 [--profile]

The ratios in RESULTS.md are against `benchmarks/torch_reference.py` set up as a careful
user would (its `Settings`). If one of those settings cost time, the ratios would flatter
us; this script says. Every variant of the reference step is built and run once first
(torch.compile included), then the variants are timed in turn `--rounds` times in one
process, as `train_step.py --rounds` does for XLA options: the median, each round, and
the ratio to the first variant. A variant that fails to build or run costs only its own
row (and sets the exit status).

--profile then traces `--profile_steps` steps of the first variant with torch.profiler
and prints the kernels per step, their device time against the wall step and the idle
gaps between them, as `profile_step.py` does for ours (an eager step whose device idles
waits on the host launching its kernels one by one), then the top ops.
"""

import argparse
import functools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks import common, profile_step

# PyTorch is optional: `torch` and `torch_reference` are imported once the command line
# is read, so that --help works without it.
COMPILE_MODES = 'default, reduce-overhead, max-autotune-no-cudagraphs'


def kernel_lines(events: list, wall_s: float, steps: int) -> list:
  """The GPU kernels of a torch.profiler Chrome trace, summed as `profile_step.py` sums
  ours: their device time against the wall step, their number and the idle gaps."""
  kernel = lambda event: event.get('name') if event.get('cat') == 'kernel' else None
  totals = profile_step.op_times(events, kernel)
  if not totals:
    return [f'no GPU kernels in the trace (a CPU run): {1e3 * wall_s:.3f} ms per step '
            'under the profiler']
  return [profile_step.step_line(wall_s, totals.values(), steps, 'under the profiler'),
          profile_step.idle_line(profile_step.idle_gaps(events, kernel), steps)]


def profile(step, settings, steps: int, top: int, trace_path: str):
  """Profiles `steps` calls of `step` and prints kernels, idle gaps and the top ops."""
  import torch
  from benchmarks import torch_reference
  torch_reference.time_calls(step, 1, 1, settings)  # Sets the global switches; warms up.
  cuda = torch.cuda.is_available()
  activities = [torch.profiler.ProfilerActivity.CPU] + (
      [torch.profiler.ProfilerActivity.CUDA] if cuda else [])
  with torch.profiler.profile(activities=activities) as prof:
    start = time.perf_counter()
    for _ in range(steps):
      step()
    torch_reference.synchronize()
    wall = (time.perf_counter() - start) / steps
  prof.export_chrome_trace(trace_path)
  with open(trace_path) as f:
    print('\n'.join(kernel_lines(json.load(f)['traceEvents'], wall, steps)))
  print(f'trace: {trace_path}')
  sort = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
  print(prof.key_averages().table(sort_by=sort, row_limit=top))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='srgan', help='srgan or srresnet')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--dtype', default='bfloat16', help='float32 or bfloat16 (autocast)')
  parser.add_argument('--crop', type=int, default=96)
  parser.add_argument('--settings', default='-;channels_last=false;cudnn_benchmark=false;'
                      'fused_adam=false;freeze_d=false',
                      help='variants of torch_reference.Settings, split by ";", fields by '
                           'spaces, "-" for the defaults (the careful setup), e.g. '
                           '"-;compile_mode=default"; compile_mode is one of '
                           + COMPILE_MODES)
  parser.add_argument('--rounds', type=int, default=3, help='timings of each variant, in turn')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps before each timing')
  parser.add_argument('--iters', type=int, default=20, help='timed steps')
  parser.add_argument('--profile', action='store_true',
                      help='then profile the first variant with torch.profiler')
  parser.add_argument('--profile_steps', type=int, default=5)
  parser.add_argument('--top', type=int, default=20, help='ops listed by --profile')
  parser.add_argument('--json', default='', help='append one JSON line per variant to this file')
  args = common.parse_args(parser)
  if args.model not in ('srgan', 'srresnet'):
    parser.error(f'--model: srgan or srresnet, not {args.model!r}')
  if args.rounds < 1 or args.iters < 1:
    parser.error('--rounds and --iters must be at least 1')
  try:
    import torch
    from benchmarks import torch_reference
  except ImportError as error:
    sys.exit(f'torch_settings.py times the PyTorch reference and needs PyTorch ({error}): '
             'pip install torch')
  try:
    variants = torch_reference.parse_settings(args.settings)
  except ValueError as error:
    parser.error(str(error))
  device = f'CUDA {torch.cuda.get_device_name()}' if torch.cuda.is_available() else 'CPU'
  print(f'torch {torch.__version__}, {device}')

  built, failed = [], []
  for settings in variants:
    label = torch_reference.settings_label(settings)
    try:
      start = time.perf_counter()
      torch.manual_seed(0)
      step, _ = torch_reference.make_step(args.model, args.batch, args.dtype, args.crop,
                                          settings)
      torch_reference.time_calls(step, 1, 1, settings)  # The first call compiles and autotunes.
      print(f'built {label}: first step in {time.perf_counter() - start:.1f} s', flush=True)
      built.append((settings, step))
    except Exception as error:  # pylint: disable=broad-except
      row = {'impl': 'torch', 'model': args.model, 'settings': label,
             'error': f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'}
      common.emit(row, args.json)
      failed.append(row)

  def print_round(round_index, seconds):
    print(f'round {round_index + 1}: ' + ', '.join(
        f'{torch_reference.settings_label(s)} {1e3 * t[-1]:.3f} ms'
        for (s, _), t in zip(built, seconds)), flush=True)

  seconds = common.time_in_turns(
      [functools.partial(torch_reference.time_calls, step, args.warmup, args.iters, settings)
       for settings, step in built], args.rounds, print_round)
  for index, ((settings, _), times) in enumerate(zip(built, seconds)):
    median = float(np.median(times))
    row = {'impl': 'torch', 'model': args.model, 'batch': args.batch, 'dtype': args.dtype,
           'crop': args.crop, 'settings': torch_reference.settings_label(settings),
           'ms_per_step': 1e3 * median, 'images_per_s': args.batch / median,
           'ms_per_round': [round(1e3 * t, 4) for t in times]}
    if index and built[0][0] == variants[0]:
      row['speedup_over_first'] = float(np.median(seconds[0])) / median
    common.emit(row, args.json)

  if args.profile and built:
    settings, step = built[0]
    print(f'== torch.profiler, {args.profile_steps} steps of {torch_reference.settings_label(settings)}')
    profile(step, settings, args.profile_steps, args.top,
            os.path.join(tempfile.mkdtemp(prefix='srgan_jax_torch_profile_'), 'trace.json'))
  if failed:
    sys.exit(f'{len(failed)} variant(s) failed: '
             + '; '.join(f"{row['settings']}: {row['error']}" for row in failed))


if __name__ == '__main__':
  main()
