"""Where one train step's device time goes, op by op, and where the device sits idle.

  python benchmarks/profile_step.py --model=srgan --batch=64 --dtype=bfloat16 \
      [--output_conv=direct] [--steps=5] [--top=40] [--graphs] [--trace_dir=DIR]
  python benchmarks/profile_step.py --from_trace=out/trace_srgan.json.gz \
      --hlo=out/trace_srgan.hlo.txt.gz   # a trace saved by gpu_check.sh, read anywhere

Runs the compiled step a few times under `jax.profiler` (the trace, for Perfetto or
TensorBoard, is kept in --trace_dir), then sums the device time of every op the step's
executable ran (on a GPU, every kernel and copy on its streams; on the CPU, the events
that carry one of the step's `hlo_op`s), and prints:
- the summary: the ops' device time against the wall step. A small share means the
  device idles between kernels, and a faster kernel would not make the step faster;
- the idle time under the profiler, as gaps between the kernels' intervals: their number,
  median and longest. Even gaps are a cost per kernel; a few long ones are a wait;
- the largest ops per step with their share, output shape and the source op they came
  from (the HLO's `op_name` metadata, which names the module path, e.g.
  `.../Generator/conv_out/...`), the totals by network (Generator, Discriminator,
  VGG19Features, other) and by kind (convolution, matmul, other fusions, other: `KINDS`);
- the longest gaps, each with the ops before and after it;
- the host's cost of passing the step's arguments (the state's leaves) to a compiled
  call, which is part of the idle time.
XLA is documented to turn its command buffers (CUDA graphs) off while a profiler runs;
--graphs profiles the step again, compiled with `xla_enable_command_buffers_during_
profiling`, to show the idle time as training has it. (With jax 0.11.2 on an H100 both
profiles ran kernels from command buffers: such a kernel carries the buffer's name as its
`hlo_op`, e.g. command_buffer_308, and is listed by its fusion's name, or as buffer/kernel
where it is a library kernel or a copy; benchmarks/RESULTS.md, sixth run.)

Each profile leaves the step's optimised HLO beside its trace (step.hlo.txt.gz), and
--from_trace reports on such a trace later, on any machine: `gpu_check.sh` brings both
back from a GPU session.
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


def trace_events(trace_path: str) -> list:
  """The events of a Perfetto trace (.json.gz), or of the newest one under a folder."""
  paths = ([trace_path] if os.path.isfile(trace_path) else
           glob.glob(os.path.join(trace_path, '**', '*perfetto_trace.json.gz'), recursive=True))
  if not paths:
    raise FileNotFoundError(f'no perfetto_trace.json.gz under {trace_path}')
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    events = json.load(f)
  return events['traceEvents'] if isinstance(events, dict) else events


def steps_in_trace(totals: dict) -> int:
  """How many steps a trace holds: the most common number of runs of an op (most ops of
  a step run once per step)."""
  return collections.Counter(count for _, count in totals.values()).most_common(1)[0][0]


def device_threads(events: list) -> set:
  """(pid, tid) of the GPU streams in a trace: the threads of `/device:` processes whose
  name starts with 'Stream' where any does, else all their threads. Empty on the CPU,
  whose ops run on host threads."""
  devices = {e['pid'] for e in events if e.get('ph') == 'M' and e.get('name') == 'process_name'
             and str(e['args'].get('name', '')).startswith('/device:')}
  threads = {(e['pid'], e.get('tid')): str(e['args'].get('name', '')) for e in events
             if e.get('ph') == 'M' and e.get('name') == 'thread_name' and e['pid'] in devices}
  streams = {key for key, name in threads.items() if name.startswith('Stream')}
  if streams:
    return streams
  return {(e['pid'], e.get('tid')) for e in events if e.get('pid') in devices}


def kernel_key(events: list, ops: dict):
  """key(event) -> the op or kernel an event ran, or None for any other event.

  Every event on a GPU stream is device time and counts, named by the first of these in
  the step's HLO text: its HLO instruction (`hlo_op`), or the event's own name (a kernel
  launched from one of XLA's command buffers, i.e. CUDA graphs, carries the buffer's name
  as `hlo_op` and its fusion's name, with `_` for `.`, as the event's); else by both,
  `hlo_op/name` (a library kernel or a copy inside a command buffer), or by the one it
  has. An earlier version dropped kernels whose `hlo_op` it could not find, and so hid
  every kernel in a command buffer (benchmarks/RESULTS.md, fifth and sixth runs). Off the
  GPU's streams (the CPU, whose ops run on host threads) only the step's own ops count.
  """
  streams = device_threads(events)
  kernel_names = {re.sub(r'[.\-]', '_', op): op for op in ops}

  def key(event):
    op, name = (event.get('args') or {}).get('hlo_op'), event.get('name')
    if (event.get('pid'), event.get('tid')) in streams:
      if op in ops:
        return op
      fused = kernel_names.get(re.sub(r'[.\-]', '_', name or ''))
      return fused or (f'{op}/{name}' if op and name else op or name)
    return op if op in ops else None
  return key


def op_times(events: list, key) -> dict:
  """key(event) -> [total microseconds, event count] over complete events where key is set."""
  totals = collections.defaultdict(lambda: [0.0, 0])
  for event in events:
    name = key(event) if event.get('ph') == 'X' else None
    if name:
      totals[name][0] += float(event.get('dur', 0))
      totals[name][1] += 1
  return dict(totals)


def idle_gaps(events: list, key) -> list:
  """[(microseconds, op before, op after)]: each stretch the device spent idle.

  The union of the kernels' intervals is the time the device was busy; the gaps between
  its pieces are idle time, each named by the kernels on either side. Many even gaps
  point at a fixed cost per kernel (launching it); a few long ones at something the
  device waits for (the host, a copy, a synchronisation).
  """
  spans = sorted((float(e['ts']), float(e['ts']) + float(e.get('dur', 0)), name)
                 for e in events if e.get('ph') == 'X' and (name := key(e)))
  gaps = []
  if not spans:
    return gaps
  _, busy_until, last = spans[0]
  for start, end, name in spans[1:]:
    if start > busy_until:
      gaps.append((start - busy_until, last, name))
    if end >= busy_until:
      busy_until, last = end, name
  return gaps


def step_line(wall_s: float, totals, steps: int,
              wall_from: str = 'timed without the profiler') -> str:
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
  return (f'step: {wall_ms:.3f} ms wall ({wall_from}); device time of its '
          f'ops: {busy_ms:.3f} ms per step, {busy_ms / wall_ms:.0%} of the wall step; '
          f'{kernels:.0f} kernels per step, {idle}')


def idle_line(gaps: list, steps: int) -> str:
  """How the idle time under the profiler is spread: its total per step, the number of
  gaps and their median, 90th percentile and longest."""
  if not gaps:
    return 'idle: none under the profiler (the ops\' intervals leave no gap)'
  micros = sorted(gap for gap, _, _ in gaps)
  quantile = lambda q: micros[min(len(micros) - 1, int(q * len(micros)))]
  return (f'idle: {sum(micros) / 1e3 / steps:.3f} ms per step under the profiler, in '
          f'{len(micros) / steps:.0f} gaps per step: median {quantile(0.5):.1f} us, 90th '
          f'percentile {quantile(0.9):.1f} us, longest {micros[-1]:.1f} us')


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


# What an op's or kernel's name says it computes, first match wins: cuDNN's convolutions
# (XLA's own on the CPU), matmuls (cuBLAS's, and XLA's GEMM fusions), then XLA's other
# fusions, which in these steps are the memory-bound work between them (BatchNorm
# statistics and normalisation, activations, their gradients, Adam). The rest are copies,
# memsets, and any library kernel whose name says neither.
KINDS = (('convolution', ('cudnn-conv', 'convolution', 'conv_general_dilated')),
         ('matmul', ('gemm', 'cublas', 'nvjet', 'cutlass', 'dot')),
         ('fusion', ('fusion',)))


def kind_of(op: str) -> str:
  return next((kind for kind, marks in KINDS if any(mark in op for mark in marks)), 'other')


def network_of(op_name: str) -> str:
  for network in NETWORKS:
    if network in op_name:
      return network
  return 'other'


def report(run: StepRunner, steps: int, top: int, trace_dir: str):
  """Times `run`, profiles `steps` more of its steps into trace_dir (with the step's
  optimised HLO beside the trace, as step.hlo.txt.gz, for `--from_trace`) and prints
  `summarize`'s report."""
  hlo_text = run.compiled.as_text()
  wall = common.time_calls(run, 2, steps)
  jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
  for _ in range(steps):
    metrics = run()
  jax.block_until_ready(metrics)
  jax.profiler.stop_trace()
  with gzip.open(os.path.join(trace_dir, 'step.hlo.txt.gz'), 'wt') as f:
    f.write(hlo_text)
  summarize(trace_events(trace_dir), hlo_ops(hlo_text), steps, wall, top, trace_dir)


def summarize(events: list, ops: dict, steps: int, wall: float, top: int, trace_dir: str,
              wall_from: str = 'timed without the profiler'):
  """Prints the summary, the idle time, the `top` ops or kernels by device time, the time
  by network and the `top` longest gaps of a trace of `steps` steps, whose HLO
  instructions `ops` names (`hlo_ops`; without them, kernels go by their `hlo_op`)."""
  key = kernel_key(events, ops)
  totals = op_times(events, key)
  if not totals:  # E.g. jax 0.6's CPU profiler, which records no op at all.
    sys.exit(f'the profiler recorded no op of the step (jax {jax.__version__} on '
             f'{jax.default_backend()}); trace: {trace_dir}')
  named = sum(op in ops for op in totals)
  unnamed_ms = sum(micros for op, (micros, _) in totals.items() if op not in ops) / 1e3 / steps
  print(f'{step_line(wall, totals.values(), steps, wall_from)} ({named} distinct ops of the '
        f'step, {len(totals) - named} kernels without an op name'
        + (f': {unnamed_ms:.3f} ms per step)' if unnamed_ms else ')'))
  gaps = idle_gaps(events, key)
  print(idle_line(gaps, steps))
  print(f'trace: {trace_dir}')
  # An op without metadata is named by its instruction; a kernel without an op of the
  # step's HLO ran in a CUDA graph, is a copy, or names an instruction that the HLO text
  # does not hold, and its own name is all there is.
  source = lambda op: (ops[op][1] or op) if op in ops else f'kernel {op}'
  busy_ms = sum(t for t, _ in totals.values()) / 1e3 / steps
  print(f'{"ms/step":>9} {"share":>6} {"calls":>5}  {"op":<28} {"shape":<24} source')
  by_network, by_kind = collections.Counter(), collections.Counter()
  ranked = sorted(totals.items(), key=lambda item: -item[1][0])
  for rank, (op, (micros, count)) in enumerate(ranked):
    ms = micros / 1e3 / steps
    by_network[network_of(source(op))] += ms
    by_kind[kind_of(op)] += ms
    if rank < top:
      shape = ops[op][0] if op in ops else ''
      print(f'{ms:9.3f} {ms / busy_ms:6.1%} {count // steps:5d}  {op:<28.28} '
            f'{shape:<24.24} {source(op)[-110:]}')
  for title, counter in (('by network', by_network), ('by kind', by_kind)):
    print(f'{title}: ' + ', '.join(f'{name} {ms:.3f} ms ({ms / busy_ms:.1%})'
                                   for name, ms in counter.most_common()))
  print(f'longest gaps ({min(top, len(gaps))} of {len(gaps)} in {steps} steps), with the ops '
        f'before and after:')
  for micros, before, after in sorted(gaps, key=lambda gap: -gap[0])[:top]:
    print(f'{micros:9.1f} us  after {source(before)[-70:]}  before {source(after)[-70:]}')


def report_saved_trace(trace_path: str, hlo_path: str, top: int):
  """`summarize` for a trace profiled earlier, maybe on another machine. The steps it
  holds are counted from its ops, and the wall step is the span from its first kernel
  to its last, divided by them: a step under the profiler, slower than without."""
  for path in filter(None, (trace_path, hlo_path)):
    if not os.path.isfile(path):
      sys.exit(f'no such file: {path}')
  ops = {}
  if hlo_path:
    with (gzip.open if hlo_path.endswith('.gz') else open)(hlo_path, 'rt') as f:
      ops = hlo_ops(f.read())
  events = trace_events(trace_path)
  key = kernel_key(events, ops)
  totals = op_times(events, key)
  if not totals:
    sys.exit(f'{trace_path} holds no kernel or op of a step')
  steps = steps_in_trace(totals)
  spans = [(float(e['ts']), float(e['ts']) + float(e.get('dur', 0)))
           for e in events if e.get('ph') == 'X' and key(e)]
  wall = (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e6 / steps
  print(f'{trace_path}: {steps} steps')
  summarize(events, ops, steps, wall, top, trace_path,
            wall_from=f'under the profiler, first kernel to last over {steps} steps')


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
  parser.add_argument('--top', type=int, default=40, help='ops and gaps listed')
  parser.add_argument('--graphs', action='store_true',
                      help='then profile the step again, compiled to keep XLA\'s command '
                           'buffers (CUDA graphs) on under the profiler, as they run '
                           'without it (on jax 0.11.2 the first profile ran them too)')
  parser.add_argument('--trace_dir', default='', help='keep the traces here (default: a temp dir)')
  parser.add_argument('--from_trace', default='',
                      help='report on a saved Perfetto trace (.json.gz, e.g. gpu_check.sh\'s '
                           '$OUT/trace_srresnet.json.gz) instead of running a step; wall time '
                           'is then the trace\'s, under the profiler')
  parser.add_argument('--hlo', default='',
                      help='with --from_trace: the step\'s HLO text (.txt or .txt.gz, saved '
                           'beside each trace as step.hlo.txt.gz), for op names and networks')
  args = common.parse_args(parser)
  if args.from_trace:
    report_saved_trace(args.from_trace, args.hlo, args.top)
    return

  config = step_config(args.model, args.batch, args.dtype, args.crop, args.output_conv,
                       args.state_form)
  run = StepRunner(config, args.model)
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='srgan_jax_profile_')
  print('== the step as compiled (XLA documents its command buffers as off under a profiler)')
  report(run, args.steps, args.top, os.path.join(trace_dir, 'ops'))
  print(dispatch_line(run))
  if args.graphs:
    print('== command buffers kept on under the profiler '
          '(--xla_enable_command_buffers_during_profiling)')
    run.compiled = run.lowered.compile(
        compiler_options={'xla_enable_command_buffers_during_profiling': True})
    report(run, args.steps, args.top, os.path.join(trace_dir, 'graphs'))


if __name__ == '__main__':
  main()
