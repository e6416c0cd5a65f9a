"""Where one train step's device time goes, op by op, with the layer each op came from.

  python benchmarks/profile_step.py --model=srgan --batch=64 --dtype=bfloat16 \
      [--output_conv=direct] [--steps=5] [--top=40] [--trace_dir=DIR]

Runs the compiled step a few times under `jax.profiler` (the trace, for Perfetto or
TensorBoard, is kept in --trace_dir), then sums the device time of every op the step's
executable ran (trace events that carry an `hlo_op`), and prints the largest ones per
step with their share, output shape and the source op they came from (the HLO's
`op_name` metadata, which names the module path, e.g. `.../Generator/conv_out/...`).
Totals by network (Generator, Discriminator, VGG19Features, other) close the report.
The first line compares the ops' device time with the wall step: a small share means
the device idles between kernels, and a faster kernel would not make the step faster.
The second gives the host's cost of passing the step's arguments (the state's leaves) to
a compiled call, which is part of that idle time.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

from benchmarks import common
from benchmarks.train_step import StepRunner, step_config

NETWORKS = ('Generator', 'Discriminator', 'VGG19Features')


def hlo_ops(hlo_text: str) -> dict:
  """Instruction name -> (output shape, op_name metadata) from optimised HLO text.

  A fusion without metadata of its own is named after the first instruction with
  metadata in the computation it calls.
  """
  ops, calls, computation_source = {}, {}, {}
  computation = ''
  for line in hlo_text.splitlines():
    header = re.match(r'(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\{\s*$', line)
    if header:
      computation = header.group(1)
      continue
    match = re.match(r'\s+(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)', line)
    if not match:
      continue
    name, rest = match.groups()
    shape = re.search(r'\w+\[[\d,]*\]', rest)
    op_name = re.search(r'op_name="([^"]*)"', rest)
    called = re.search(r'calls=%?([\w.\-]+)', rest)
    if called:
      calls[name] = called.group(1)
    if op_name:
      computation_source.setdefault(computation, op_name.group(1))
    ops[name] = (shape.group(0) if shape else '', op_name.group(1) if op_name else '')
  for name, (shape, op_name) in ops.items():
    if not op_name and name in calls:
      ops[name] = (shape, computation_source.get(calls[name], ''))
  return ops


def trace_events(trace_dir: str) -> list:
  """The events of the newest Perfetto trace under trace_dir."""
  paths = glob.glob(os.path.join(trace_dir, '**', '*perfetto_trace.json.gz'), recursive=True)
  if not paths:
    raise FileNotFoundError(f'no perfetto_trace.json.gz under {trace_dir}')
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    events = json.load(f)
  return events['traceEvents'] if isinstance(events, dict) else events


def op_times(events: list, key) -> dict:
  """key(event) -> [total microseconds, event count] over complete events where key is set."""
  totals = collections.defaultdict(lambda: [0.0, 0])
  for event in events:
    name = key(event) if event.get('ph') == 'X' else None
    if name:
      totals[name][0] += float(event.get('dur', 0))
      totals[name][1] += 1
  return dict(totals)


def step_line(wall_s: float, totals, steps: int) -> str:
  """The summary: wall step, device time of its kernels, their share of the wall, and
  their number.

  A share well below 100% means the device waits between kernels: the step is bound by
  launching them, not by their arithmetic, and the idle time per kernel is that cost.
  """
  busy_ms = sum(micros for micros, _ in totals) / 1e3 / steps
  kernels = sum(count for _, count in totals) / steps
  wall_ms = 1e3 * wall_s
  idle = (f'{1e3 * (wall_ms - busy_ms) / kernels:.1f} us idle per kernel' if wall_ms > busy_ms
          else 'no idle time (ops overlap, as on the CPU\'s threads)')
  return (f'step: {wall_ms:.3f} ms wall (timed without the profiler); device time of its '
          f'ops: {busy_ms:.3f} ms per step, {busy_ms / wall_ms:.0%} of the wall step; '
          f'{kernels:.0f} kernels per step, {idle}')


def dispatch_line(run: StepRunner, iters: int = 100) -> str:
  """Host time of a call that takes the step's arguments and computes almost nothing.

  This is what passing the state's leaves costs per step, before any kernel of the step
  is launched.
  """
  passthrough = jax.jit(lambda state, hr, vgg_params: state, donate_argnums=(0,))

  def call():
    run.state = passthrough(run.state, run.hr, run.vgg_params)
    return run.state

  seconds = common.time_calls(call, 3, iters)
  leaves = len(jax.tree.leaves((run.state, run.hr, run.vgg_params)))
  return (f'host: {1e3 * seconds:.3f} ms per call to pass the step\'s {leaves} argument '
          f'arrays (state {run.state_form}) through a jitted no-op')


def network_of(op_name: str) -> str:
  for network in NETWORKS:
    if network in op_name:
      return network
  return 'other'


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='srgan', help='srgan or srresnet')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--crop', type=int, default=96)
  parser.add_argument('--output_conv', default='subpixel4',
                      help='direct, subpixel2 or subpixel4 (the configs\' default)')
  parser.add_argument('--state_form', default='auto',
                      help='config.train.state_form: auto (as training on this backend), '
                           'packed or tree')
  parser.add_argument('--steps', type=int, default=5, help='profiled steps (after 2 warm-up)')
  parser.add_argument('--top', type=int, default=40, help='ops listed')
  parser.add_argument('--trace_dir', default='', help='keep the trace here (default: a temp dir)')
  args = common.parse_args(parser)

  config = step_config(args.model, args.batch, args.dtype, args.crop, args.output_conv,
                       args.state_form)
  run = StepRunner(config, args.model)
  ops = hlo_ops(run.compiled.as_text())
  wall = common.time_calls(run, 2, args.steps)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='srgan_jax_profile_')
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  for _ in range(args.steps):
    metrics = run()
  jax.block_until_ready(metrics)
  jax.profiler.stop_trace()

  events = trace_events(trace_dir)
  times = op_times(events, lambda e: (e.get('args') or {}).get('hlo_op'))
  ours = {op: t for op, t in times.items() if op in ops}
  if ours:
    totals = ours
    what = f'{len(ours)} distinct ops; {len(times) - len(ours)} other traced ops ignored'
  else:  # A profiler that does not tag ops: count what the device processes ran.
    # Kernels launched from a CUDA graph (XLA's command buffers) carry no op name.
    devices = {e['pid'] for e in events if e.get('ph') == 'M' and e.get('name') == 'process_name'
               and str(e['args'].get('name', '')).startswith('/device:')}
    totals = op_times(events, lambda e: e['name'] if e.get('pid') in devices else None)
    if not totals:  # E.g. jax 0.6's CPU profiler, which records no op at all.
      sys.exit(f'the profiler recorded no op of the step (jax {jax.__version__} on '
               f'{jax.default_backend()}); trace: {trace_dir}')
    what = 'device events: no traced event names an op of the step'
  print(f'{step_line(wall, totals.values(), args.steps)} ({what})')
  print(dispatch_line(run))
  print(f'trace: {trace_dir}')
  if not ours:
    for name, (micros, count) in sorted(totals.items(), key=lambda i: -i[1][0])[:args.top]:
      ms = micros / 1e3 / args.steps
      print(f'{ms:9.3f} ms/step {count // args.steps:5d} calls  {name[:150]}')
    return
  busy_ms = sum(t for t, _ in ours.values()) / 1e3 / args.steps
  print(f'{"ms/step":>9} {"share":>6} {"calls":>5}  {"op":<28} {"shape":<24} source')
  by_network = collections.Counter()
  ranked = sorted(ours.items(), key=lambda item: -item[1][0])
  for rank, (op, (micros, count)) in enumerate(ranked):
    ms = micros / 1e3 / args.steps
    shape, op_name = ops[op]
    by_network[network_of(op_name)] += ms
    if rank < args.top:
      print(f'{ms:9.3f} {ms / busy_ms:6.1%} {count // args.steps:5d}  {op:<28.28} '
            f'{shape:<24.24} {op_name[-110:]}')
  print('by network: ' + ', '.join(f'{name} {ms:.3f} ms ({ms / busy_ms:.1%})'
                                   for name, ms in by_network.most_common()))


if __name__ == '__main__':
  main()
