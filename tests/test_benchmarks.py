"""The benchmark scripts run and report every figure they promise (tiny sizes, CPU).

GPU time is scarce: a script that breaks there wastes a session's measurements, so each
is run here first. The figures themselves are not checked (speed is not tested).
"""

import glob
import json
import os
import re
import shlex

import numpy as np
import pytest

from tests.conftest import REPO, run_python


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_train_step_benchmark_times_each_model_and_form(tmp_path):
  out = tmp_path / 'rows.jsonl'
  result = run_python(['benchmarks/train_step.py', '--models=srresnet,srgan', '--batch_sizes=2',
                       '--dtypes=float32', '--crop=32', '--output_convs=subpixel4',
                       '--state_forms=packed,auto', '--warmup=1', '--iters=1',
                       f'--json={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _rows(out)
  # Each row names the form it timed: 'auto' is what training runs here, on the CPU 'tree'.
  assert [(r['model'], r['output_conv'], r['state_form']) for r in rows] == [
      ('srresnet', 'subpixel4', 'packed'), ('srresnet', 'subpixel4', 'tree'),
      ('srgan', 'subpixel4', 'packed'), ('srgan', 'subpixel4', 'tree')]
  for row in rows:
    assert row['ms_per_step'] > 0
    assert abs(row['images_per_s'] * row['ms_per_step'] / 1e3 - 2) < 1e-6
  # The same seed, batch and number of steps: both state forms end at the same loss.
  for model in ('srresnet', 'srgan'):
    packed, tree = [r['g_loss_last_step'] for r in rows if r['model'] == model]
    assert np.isfinite(packed) and abs(packed - tree) <= 1e-4 * abs(packed), (model, packed, tree)
  assert 'model=srgan' in result.stdout and 'machine:' in result.stdout


def test_compiler_options_parse_into_one_set_per_variant():
  from benchmarks.train_step import options_label, parse_compiler_options
  sets = parse_compiler_options('-;xla_a=true xla_b=FUSION,CUBLAS xla_c=-2 ;xla_a=False')
  assert sets == [{}, {'xla_a': True, 'xla_b': 'FUSION,CUBLAS', 'xla_c': -2}, {'xla_a': False}]
  assert [options_label(s) for s in sets] == ['-', 'xla_a=true xla_b=FUSION,CUBLAS xla_c=-2',
                                              'xla_a=false']
  for bad in ('xla_a', 'a=1', '-;conv_fusion=true'):
    with pytest.raises(ValueError, match='expected xla_NAME=VALUE'):
      parse_compiler_options(bad)


def test_train_step_benchmark_compares_compiler_options_in_rounds(tmp_path):
  out = tmp_path / 'rows.jsonl'
  result = run_python(['benchmarks/train_step.py', '--models=srresnet', '--batch_sizes=2',
                       '--dtypes=float32', '--crop=32', '--warmup=1', '--iters=1', '--rounds=3',
                       '--compiler_options=-;xla_backend_optimization_level=1;'
                       'xla_no_such_option=1', f'--json={out}'])
  rows = _rows(out)
  # An option XLA does not know costs its variant, named with the reason, and the exit
  # status; the others are still timed.
  assert result.returncode == 1, result.stderr[-3000:]
  assert ("1 variant(s) not compiled: xla_no_such_option=1: INVALID_ARGUMENT: No such "
          "compile option: 'xla_no_such_option'") in result.stderr
  assert rows[0]['compiler_options'] == 'xla_no_such_option=1' and 'ms_per_step' not in rows[0]
  timed = rows[1:]
  assert [r['compiler_options'] for r in timed] == ['-', 'xla_backend_optimization_level=1']
  for row in timed:
    assert len(row['ms_per_round']) == 3
    assert row['ms_per_step'] == pytest.approx(np.median(row['ms_per_round']), rel=1e-3)
  assert timed[0]['speedup_over_first_options'] == 1.0
  assert timed[1]['speedup_over_first_options'] == pytest.approx(
      timed[0]['ms_per_step'] / timed[1]['ms_per_step'])


def test_train_step_benchmark_runs_several_steps_per_call(tmp_path):
  """K steps in one call (a scan) train as K calls of one step: with warm-up and timed
  steps multiples of K, both variants end at the same loss."""
  out = tmp_path / 'rows.jsonl'
  result = run_python(['benchmarks/train_step.py', '--models=srresnet', '--batch_sizes=2',
                       '--dtypes=float32', '--crop=32', '--warmup=2', '--iters=2',
                       '--steps_per_call=1,2', f'--json={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  one, two = _rows(out)
  assert (one['steps_per_call'], two['steps_per_call']) == (1, 2)
  assert one['g_loss_last_step'] == pytest.approx(two['g_loss_last_step'], rel=1e-5)
  assert two['speedup_over_one_step_per_call'] == pytest.approx(
      one['ms_per_step'] / two['ms_per_step'])
  assert 'speedup_over_one_step_per_call' not in one
  for bad, reason in (('0', 'must be at least 1'), ('1,four', 'a comma list of integers')):
    result = run_python(['benchmarks/train_step.py', f'--steps_per_call={bad}'])
    assert result.returncode == 2 and reason in result.stderr, result.stderr[-2000:]


def test_layers_benchmark_covers_every_layer_and_sums_them(tmp_path):
  from benchmarks import layers
  out = tmp_path / 'layers.jsonl'
  result = run_python(['benchmarks/layers.py', '--batch=1', '--crop=32', '--dtype=float32',
                       '--warmup=1', '--iters=1', f'--json={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _rows(out)
  assert [(r['network'], r['layer'], r['form']) for r in rows] == [
      (network, name, form) for network, name, *_, form in layers.layer_table(32)]
  assert {r['form'] for r in rows} == {'direct', 'subpixel2', 'subpixel4'}
  direct_sum = sum(r['step_ms'] for r in rows if r['form'] == 'direct')
  summary = [line for line in result.stdout.splitlines() if 'SRGAN step, direct:' in line]
  assert len(summary) == 1
  assert abs(float(summary[0].split(': ')[1].split(' ms')[0]) - direct_sum) < 1e-2


def test_upscale_benchmark_times_each_form():
  result = run_python(['benchmarks/upscale.py', '--size=16', '--dtypes=float32',
                       '--output_convs=direct,subpixel2,subpixel4', '--warmup=1', '--iters=1'])
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [line for line in result.stdout.splitlines() if line.startswith('jax ')]
  assert [line.split(':')[0] for line in lines] == ['jax float32 direct', 'jax float32 subpixel2',
                                                   'jax float32 subpixel4']
  assert all(' ms/image' in line for line in lines)


def test_input_pipeline_benchmark_reports_the_trainer_workers_and_device_parts():
  result = run_python(['benchmarks/input_pipeline.py', '--source=skimage:chelsea,coffee',
                       '--batch=4', '--crop=32', '--seconds=0.2', '--workers=1',
                       '--prefetch_batches=1,2', '--degradation'])
  assert result.returncode == 0, result.stderr[-3000:]
  rates = re.findall(r'^(trainer \(\d producer|workers=1) .*: ([\d,]+) crops/s', result.stdout,
                     re.M)
  assert [name for name, _ in rates] == ['trainer (1 producer', 'trainer (2 producer', 'workers=1']
  assert all(int(rate.replace(',', '')) > 0 for _, rate in rates)
  for part in ('rotations and flips', 'in-step bicubic x4 degradation'):
    assert re.search(rf'^{part}, batch 4: \d+\.\d+ ms on the device$', result.stdout, re.M)


def test_train_loop_benchmark_reports_each_window_the_step_and_the_evaluation(tmp_path):
  result = run_python(['benchmarks/train_loop.py', '--model=srresnet', '--batch=2', '--crop=32',
                       '--dtype=float32', '--steps=4', '--log_every=2',
                       '--source=skimage:chelsea,coffee', '--eval_set=skimage:astronaut',
                       f'--workdir={tmp_path}', '--step'])
  assert result.returncode == 0, result.stderr[-3000:]
  windows = re.findall(r'^srresnet float32 batch 2: steps (\d+) to (\d+): [\d,.]+ images/s',
                       result.stdout, re.M)
  assert windows == [('0', '2'), ('2', '4')]
  assert re.search(r'^loop rate \(last window\): [\d,.]+ images/s$', result.stdout, re.M)
  assert re.search(r'^eval/skimage_astronaut/psnr_y: \d+\.\d+$', result.stdout, re.M)
  assert re.search(r'^bare step: .* the loop runs at x\d+\.\d+ of it$', result.stdout, re.M)
  assert (tmp_path / 'checkpoints' / '4').is_dir()  # The run's one save, at its end.


def _section(lines, title_start):
  """The lines of one profile report, from its '== ' title to the next."""
  first = next(i for i, line in enumerate(lines) if line.startswith('== ' + title_start))
  rest = [i for i, line in enumerate(lines) if line.startswith('== ') and i > first]
  return lines[first + 1:rest[0] if rest else len(lines)]


def test_profile_names_the_layers_of_the_step_and_its_idle_gaps():
  import jax
  if jax.__version_info__ < (0, 7):  # Python 3.10's newest jax is 0.6.2.
    pytest.skip(f'jax {jax.__version__} records no per-op events on the CPU')
  result = run_python(['benchmarks/profile_step.py', '--model=srgan', '--batch=2', '--crop=32',
                       '--dtype=float32', '--steps=1', '--top=5', '--graphs'])
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  # Both profiles report in full; the CPU has no command buffers, so the second profile
  # (the step compiled with them kept on under the profiler) sees the same ops.
  for title in ('the step as compiled', 'command buffers kept on'):
    section = _section(lines, title)
    summary = section[0]
    assert summary.startswith('step: ')
    busy = float(summary.split('device time of its ops: ')[1].split(' ms')[0])
    wall = float(summary.split('step: ')[1].split(' ms')[0])
    share = float(summary.split(' ms per step, ')[1].split('%')[0])
    kernels = int(summary.split('of the wall step; ')[1].split(' kernels')[0])
    assert busy > 0 and wall > 0 and kernels > 100  # The SRGAN step has hundreds of ops.
    assert share == pytest.approx(100 * busy / wall, abs=0.6)  # Printed to whole percents.
    assert f'({kernels} distinct ops of the step, 0 kernels without an op name)' in summary
    idle = re.fullmatch(r'idle: ([\d.]+) ms per step under the profiler, in (\d+) gaps per '
                        r'step: median ([\d.]+) us, 90th percentile ([\d.]+) us, longest '
                        r'([\d.]+) us', section[1])
    assert idle, section[1]
    idle_ms, gaps, median, p90, longest = map(float, idle.groups())
    assert 0 < gaps < kernels and 0 < median <= p90 <= longest <= 1e3 * idle_ms
    assert section[2].startswith('trace: ')
    listed = section[4:9]
    assert len(listed) == 5 and all('%' in line for line in listed)
    by_network = section[9]
    shares = {part.split()[0]: float(part.split()[1])
              for part in by_network[len('by network: '):].split(', ')}
    assert {'Generator', 'Discriminator', 'VGG19Features'} <= set(shares)
    assert abs(sum(shares.values()) - busy) < 0.01 * busy
    by_kind = section[10]
    shares = {part.split()[0]: float(part.split()[1])
              for part in by_kind[len('by kind: '):].split(', ')}
    assert by_kind.startswith('by kind: ') and shares['convolution'] > 0
    assert set(shares) <= {'convolution', 'matmul', 'fusion', 'other'}
    assert abs(sum(shares.values()) - busy) < 0.01 * busy
    assert section[11].startswith('longest gaps (5 of ')
    gap_us = [float(line.split()[0]) for line in section[12:17]]
    assert gap_us[0] == pytest.approx(longest, abs=0.1) and gap_us == sorted(gap_us)[::-1]
    assert all(' after ' in line and ' before ' in line for line in section[12:17])
  host = _section(lines, 'the step as compiled')[17]
  assert host.startswith('host: ') and float(host.split()[1]) > 0


def test_profile_reads_a_saved_trace_as_it_read_it_live(tmp_path):
  """A trace kept with --trace_dir (as gpu_check.sh brings one back), read later with
  --from_trace and the HLO saved beside it, gives the live run's ops, device time,
  kernels and steps."""
  import jax
  if jax.__version_info__ < (0, 7):
    pytest.skip(f'jax {jax.__version__} records no per-op events on the CPU')
  live = run_python(['benchmarks/profile_step.py', '--model=srresnet', '--batch=2',
                     '--crop=32', '--dtype=float32', '--steps=3', '--top=3',
                     f'--trace_dir={tmp_path}'])
  assert live.returncode == 0, live.stderr[-3000:]
  trace = glob.glob(str(tmp_path / 'ops' / '**' / '*perfetto_trace.json.gz'), recursive=True)
  hlo = tmp_path / 'ops' / 'step.hlo.txt.gz'
  assert len(trace) == 1 and hlo.is_file()
  saved = run_python(['benchmarks/profile_step.py', f'--from_trace={trace[0]}', f'--hlo={hlo}',
                      '--top=3'])
  assert saved.returncode == 0, saved.stderr[-3000:]
  assert f'{trace[0]}: 3 steps' in saved.stdout
  summary = lambda out: next(line for line in out.splitlines() if line.startswith('step: '))
  device = lambda line: line.split('device time of its ops: ')[1].split(', ')[0]
  kernels = lambda line: line.split('of the wall step; ')[1].split(' kernels')[0]
  ops = lambda line: line.split('(')[-1]
  live_line, saved_line = summary(live.stdout), summary(saved.stdout)
  assert 'under the profiler, first kernel to last over 3 steps' in saved_line
  assert (device(saved_line), kernels(saved_line), ops(saved_line)) == (
      device(live_line), kernels(live_line), ops(live_line))
  for title in ('by network: ', 'by kind: '):
    totals = lambda out: next(l for l in out.splitlines() if l.startswith(title))
    assert totals(saved.stdout) == totals(live.stdout)
  # On the CPU, without the HLO text no event can be told from another executable's op.
  bare = run_python(['benchmarks/profile_step.py', f'--from_trace={trace[0]}'])
  assert bare.returncode == 1 and 'holds no kernel or op of a step' in bare.stderr
  missing = run_python(['benchmarks/profile_step.py', f'--from_trace={tmp_path}/nothing.gz'])
  assert missing.returncode == 1 and 'no such file' in missing.stderr


def _event(name, ts, dur, pid=1, tid=1, op=None):
  return {'ph': 'X', 'name': name, 'ts': ts, 'dur': dur, 'pid': pid, 'tid': tid,
          'args': {'hlo_op': op} if op else {}}


def test_idle_gaps_are_the_holes_in_the_union_of_the_kernels():
  from benchmarks import profile_step
  events = [_event('a', 0, 10), _event('b', 2, 3),  # b lies inside a: no gap after b.
            _event('c', 15, 5), _event('d', 18, 10),  # Overlapping: one busy stretch.
            _event('e', 40, 1), _event('skipped', 30, 5)]
  key = lambda event: event['name'] if event['name'] != 'skipped' else None
  assert profile_step.idle_gaps(events, key) == [(5.0, 'a', 'c'), (12.0, 'd', 'e')]
  assert profile_step.idle_gaps([], key) == []
  line = profile_step.idle_line([(5.0, 'a', 'c'), (12.0, 'd', 'e')], steps=1)
  assert line.startswith('idle: 0.017 ms per step under the profiler, in 2 gaps per step: ')
  assert line.endswith('longest 12.0 us')


def test_kernel_key_takes_the_steps_ops_and_every_kernel_on_the_gpu_streams():
  """On a GPU, every kernel on a stream counts: one launched from an XLA command buffer
  (its `hlo_op` the buffer's name) by its fusion's name (`_` for `.`) where the step's
  HLO has it, a library kernel there by the buffer's and its own name; so is one whose
  `hlo_op` the HLO lacks; one with no `hlo_op` by the event. Dropping the unknown ones
  once hid every kernel in a command buffer. Host events, another executable's ops on
  the host, and the device's derived lines do not count."""
  from benchmarks import profile_step
  meta = [{'ph': 'M', 'pid': 1, 'name': 'process_name', 'args': {'name': '/host:CPU'}},
          {'ph': 'M', 'pid': 2, 'name': 'process_name', 'args': {'name': '/device:GPU:0'}},
          {'ph': 'M', 'pid': 2, 'tid': 7, 'name': 'thread_name', 'args': {'name': 'Stream #7'}},
          {'ph': 'M', 'pid': 2, 'tid': 9, 'name': 'thread_name', 'args': {'name': 'XLA Modules'}}]
  ops = {'fusion.1': ('f32[2]', 'jit(step)/Generator/conv1'),
         'loop_slice_fusion': ('bf16[8]', 'jit(step)/Generator/conv_out/pad'),
         'input_reduce_fusion.208': ('f32[64]', 'jit(step)/Generator/bn/reduce_sum')}
  events = meta + [_event('host work', 0, 1, pid=1, tid=3),
                   _event('fusion.1', 0, 1, pid=1, tid=3, op='fusion.1'),  # CPU op.
                   _event('fusion.9', 0, 1, pid=1, tid=3, op='fusion.9'),  # Not the step's.
                   _event('gemm_fusion_dot.3', 1, 1, pid=2, tid=7, op='gemm.3'),  # Not in ops.
                   _event('sm90_xmma_conv', 2, 1, pid=2, tid=7),  # No hlo_op.
                   _event('loop_slice_fusion', 3, 1, pid=2, tid=7, op='command_buffer_3'),
                   _event('input_reduce_fusion_208', 4, 1, pid=2, tid=7,
                          op='command_buffer_3'),
                   _event('nvjet_sm90_tst', 5, 1, pid=2, tid=7, op='command_buffer_3'),
                   _event('jit_step', 0, 9, pid=2, tid=9)]
  key = profile_step.kernel_key(events, ops)
  assert [profile_step.kind_of(key(e) or '') for e in events[len(meta) + 3:-1]] == [
      'matmul', 'other', 'fusion', 'fusion', 'matmul']
  assert [key(e) for e in events[len(meta):]] == [
      None, 'fusion.1', None, 'gemm.3/gemm_fusion_dot.3', 'sm90_xmma_conv',
      'loop_slice_fusion', 'input_reduce_fusion.208', 'command_buffer_3/nvjet_sm90_tst', None]
  # Without thread names, every thread of a device process is a stream.
  key = profile_step.kernel_key(meta[:2] + events[len(meta):], ops)
  assert key(events[-1]) == 'jit_step'


def _gpu_check_script() -> str:
  """benchmarks/gpu_check.sh with continued lines joined."""
  with open(os.path.join(REPO, 'benchmarks', 'gpu_check.sh')) as f:
    return f.read().replace('\\\n', ' ')


def test_gpu_check_time_limits_fit_the_device_budget():
  """Every part's cap together, plus start-up, stays under the 8 minutes a session may use;
  so does each probe, which runs only when named."""
  script = _gpu_check_script()
  limits = [int(line.split()[2]) for line in script.splitlines() if line.startswith('run ')]
  assert len(limits) >= 6
  assert sum(limits) <= 460, sum(limits)
  assert f'{sum(limits)} s in all' in script  # The header states the same total.
  probes = [int(line.split()[2]) for line in script.splitlines() if line.startswith('probe ')]
  assert probes and max(probes) <= 460


def test_documented_compiler_options_are_known_to_xla():
  """Each option set that gpu_check.sh or the README's benchmark commands pass to
  --compiler_options compiles here: XLA on the CPU takes its GPU options too, so a
  misspelt name or value fails now, not on the device. (The device's newer jax may still
  rename one; that costs only its row.)"""
  import jax
  import jax.numpy as jnp
  from benchmarks.train_step import parse_compiler_options
  if jax.__version_info__ < (0, 10):
    pytest.skip(f'jax {jax.__version__} predates some of the options; the device runs 0.11')
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = [line for line in f if line.startswith('python benchmarks/')]
  lines = readme + [line for line in _gpu_check_script().splitlines()
                    if line.startswith(('run ', 'probe '))]
  option_sets = [options for line in lines for arg in shlex.split(line, comments=True)
                 if arg.startswith('--compiler_options=')
                 for options in parse_compiler_options(arg.split('=', 1)[1])]
  assert len(option_sets) >= 2 and any(option_sets)  # The defaults and at least one set.
  lowered = jax.jit(lambda x: 2 * x).lower(jnp.ones(3))
  for options in option_sets:
    lowered.compile(compiler_options=options or None)  # Raises on an unknown option or value.


def test_gpu_check_torch_settings_parse():
  pytest.importorskip('torch')
  from benchmarks.torch_reference import parse_settings
  texts = [arg.split('=', 1)[1] for line in _gpu_check_script().splitlines()
           if line.startswith('probe ') for arg in shlex.split(line)
           if arg.startswith('--settings=')]
  assert texts
  for text in texts:
    assert len(parse_settings(text)) >= 2  # Raises on a misspelt field or value.


def test_gpu_check_passes_only_flags_its_scripts_define():
  """A misspelt flag in gpu_check.sh would cost a whole device session; --help knows them."""
  script = _gpu_check_script()
  commands = [shlex.split(line)[3:] for line in script.splitlines()
              if line.startswith(('run ', 'probe '))]
  assert len(commands) >= 6
  helps = {}
  for command in commands:
    if command[0] == 'env':  # env NAME=VALUE ... python3 ...
      command = [arg for arg in command[1:] if not re.match(r'[A-Z_]+=', arg)]
    assert command[0] == 'python3', command
    target = command[1]
    if target not in helps:
      result = run_python([target, '--help'])  # absl's --help exits with status 1.
      assert result.returncode in (0, 1) and '--' in result.stdout, result.stderr[-2000:]
      helps[target] = result.stdout
    for flag in (arg.split('=')[0] for arg in command[2:] if arg.startswith('--')):
      assert re.search(rf'{flag}\b', helps[target]), f'{target} has no {flag}'


def test_torch_reference_is_the_same_network():
  """The PyTorch model timed beside ours has our layers: same parameter counts at the
  paper's sizes, and with our weights its generator computes our generator's output."""
  torch = pytest.importorskip('torch')
  import jax
  import jax.numpy as jnp
  from benchmarks import torch_reference
  from srgan_jax.models import Discriminator, Generator, VGG19Features

  def flax_count(module, shape):
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(shape))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))

  torch_count = lambda module: sum(p.numel() for p in module.parameters())
  assert torch_count(torch_reference.Generator()) == flax_count(Generator(), (1, 24, 24, 3))
  assert torch_count(torch_reference.Discriminator(96)) == flax_count(Discriminator(),
                                                                        (1, 96, 96, 3))
  assert torch_count(torch_reference.vgg19_to_conv5_4()) == flax_count(VGG19Features(),
                                                                         (1, 32, 32, 3))

  # A small generator with random weights and BN statistics, copied across.
  generator = Generator(num_blocks=2, features=8)
  lr = np.random.default_rng(0).random((2, 6, 5, 3), np.float32)
  variables = generator.init(jax.random.PRNGKey(1), lr)
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  variables = jax.tree.unflatten(tree, [
      jax.random.uniform(k, x.shape, minval=0.5, maxval=1.5) if x.ndim == 1 and x.shape[0] > 1
      else x + 0.02 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
  params, stats = variables['params'], variables['batch_stats']
  model = torch_reference.Generator(blocks=2, c=8).eval()
  tensor = lambda x: torch.from_numpy(np.array(x, np.float32))

  def conv(module, p, channel_order=None):
    kernel = np.asarray(p['kernel']).transpose(3, 2, 0, 1)  # HWIO -> OIHW
    bias = np.asarray(p['bias'])
    if channel_order is not None:
      kernel, bias = kernel[channel_order], bias[channel_order]
    module.weight.data, module.bias.data = tensor(kernel), tensor(bias)

  def norm(module, p, s):
    module.weight.data, module.bias.data = tensor(p['scale']), tensor(p['bias'])
    module.running_mean.data, module.running_var.data = tensor(s['mean']), tensor(s['var'])

  def prelu(module, p):
    module.weight.data = tensor(np.reshape(p['negative_slope'], (1,)))

  conv(model.head[0], params['conv_in'])
  prelu(model.head[1], params['prelu_in'])
  for i in range(2):
    body, p, s = model.body[i].body, params[f'block{i}'], stats[f'block{i}']
    conv(body[0], p['conv1'])
    norm(body[1], p['bn1'], s['bn1'])
    prelu(body[2], p['prelu'])
    conv(body[3], p['conv2'])
    norm(body[4], p['bn2'], s['bn2'])
  conv(model.body[2], params['conv_body'])
  norm(model.body[3], params['bn_body'], stats['bn_body'])
  # Our shuffle reads channels as (row offset, column offset, C), PyTorch's as (C, row, column).
  order = np.arange(32).reshape(2, 2, 8).transpose(2, 0, 1).reshape(-1)
  for i in range(2):
    conv(model.up[3 * i], params[f'conv_up{i}'], order)
    prelu(model.up[3 * i + 2], params[f'prelu_up{i}'])
  conv(model.tail, params['conv_out'])

  ours = np.asarray(generator.apply(variables, lr))
  with torch.no_grad():
    theirs = model(tensor(lr).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert ours.shape == theirs.shape == (2, 24, 20, 3)
  assert np.mean(np.abs(ours) < 0.9) > 0.25  # Enough outputs that tanh does not flatten.
  np.testing.assert_allclose(theirs, ours, atol=2e-5)


def test_torch_reference_step_updates_what_ours_updates():
  """The PyTorch SRGAN step runs (so a GPU session's `--torch` figures do not break), trains
  G and D, leaves VGG alone, and takes D's weight gradients once per step (D update only)."""
  torch = pytest.importorskip('torch')
  from benchmarks import torch_reference

  torch.manual_seed(0)
  step, modules = torch_reference.make_step('srgan', batch=2, dtype='float32', crop=32)
  before = {name: [p.detach().clone() for p in module.parameters()]
            for name, module in modules.items()}
  d_grad_passes = []
  first_d_weight = next(modules['d'].parameters())
  first_d_weight.register_hook(lambda grad: d_grad_passes.append(1))
  losses = [step().item() for _ in range(2)]
  assert all(np.isfinite(losses))
  assert len(d_grad_passes) == 2  # Once per step: G's loss does not ask for D's gradients.
  assert all(p.requires_grad for p in modules['d'].parameters())
  changed = {name: any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters()))
             for name, module in modules.items()}
  assert changed == {'g': True, 'd': True, 'vgg': False}
  assert torch_reference.time_step('srresnet', 2, 'bfloat16', 32, warmup=1, iters=1) > 0


def test_torch_reference_marks_each_step_for_cuda_graphs(monkeypatch):
  """Under reduce-overhead (CUDA graphs) each step starts with cudagraph_mark_step_begin,
  which a step needs so that a replay does not overwrite outputs still in use. Compiling
  is replaced by the eager forward here: the wiring is what is tested (graphs need a GPU)."""
  torch = pytest.importorskip('torch')
  from benchmarks import torch_reference
  marks = []
  monkeypatch.setattr(torch, 'compile', lambda forward, mode: forward)
  monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
  for mode, expected in (('reduce-overhead', 2), ('default', 0), ('', 0)):
    marks.clear()
    step, _ = torch_reference.make_step('srresnet', 2, 'float32', 32,
                                        torch_reference.Settings(compile_mode=mode))
    losses = [step().item() for _ in range(2)]
    assert np.all(np.isfinite(losses)) and len(marks) == expected, mode


def test_torch_settings_parse_into_one_variant_each():
  pytest.importorskip('torch')
  from benchmarks import torch_settings
  from benchmarks.torch_reference import COMPILE_MODES, Settings, parse_settings, settings_label
  assert torch_settings.COMPILE_MODES == ', '.join(COMPILE_MODES[1:])  # Its --help says them.
  variants = parse_settings('-;channels_last=False fused_adam=false ;compile_mode=reduce-overhead')
  assert variants == [Settings(), Settings(channels_last=False, fused_adam=False),
                      Settings(compile_mode='reduce-overhead')]
  assert [settings_label(v) for v in variants] == [
      '-', 'channels_last=false fused_adam=false', 'compile_mode=reduce-overhead']
  for bad, reason in (('channel_last=false', 'expected NAME=VALUE'),
                      ('freeze_d', 'expected NAME=VALUE'), ('freeze_d=0', 'true or false'),
                      ('compile_mode=fast', 'compile_mode is one of')):
    with pytest.raises(ValueError, match=reason):
      parse_settings(bad)


def test_torch_settings_times_each_variant_in_rounds_and_profiles_the_first(tmp_path):
  pytest.importorskip('torch')
  out = tmp_path / 'rows.jsonl'
  result = run_python(['benchmarks/torch_settings.py', '--model=srresnet', '--batch=2',
                       '--crop=32', '--warmup=1', '--iters=1', '--rounds=2', '--profile',
                       '--profile_steps=2', '--top=5', f'--json={out}',
                       '--settings=-;channels_last=false cudnn_benchmark=false;freeze_d=false'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _rows(out)
  assert [r['settings'] for r in rows] == ['-', 'channels_last=false cudnn_benchmark=false',
                                           'freeze_d=false']
  for row in rows:
    assert len(row['ms_per_round']) == 2 and row['ms_per_step'] > 0
  assert 'speedup_over_first' not in rows[0]
  for row in rows[1:]:
    assert row['speedup_over_first'] == pytest.approx(
        np.median(rows[0]['ms_per_round']) / np.median(row['ms_per_round']), rel=1e-3)
  assert result.stdout.count('round ') == 2
  # The CPU trace has no GPU kernels; the op table still comes.
  assert 'no GPU kernels in the trace (a CPU run)' in result.stdout
  assert 'convolution' in result.stdout and 'Self CPU' in result.stdout


def test_torch_settings_variant_that_fails_costs_only_its_row(monkeypatch, capsys):
  pytest.importorskip('torch')
  import sys
  from benchmarks import torch_reference, torch_settings
  make_step = torch_reference.make_step

  def failing_make_step(model, batch, dtype, crop, settings):
    if not settings.channels_last:
      raise RuntimeError('no kernel for this layout\nsecond line')
    return make_step(model, batch, dtype, crop, settings)

  monkeypatch.setattr(torch_reference, 'make_step', failing_make_step)
  monkeypatch.setattr(sys, 'argv', ['torch_settings.py', '--model=srresnet', '--batch=1',
                                    '--crop=16', '--warmup=1', '--iters=1', '--rounds=1',
                                    '--settings=-;channels_last=false;fused_adam=false'])
  with pytest.raises(SystemExit, match='1 variant.s. failed: channels_last=false: '
                                       'RuntimeError: no kernel for this layout$'):
    torch_settings.main()
  printed = capsys.readouterr().out
  assert 'settings=channels_last=false error=RuntimeError' in printed
  assert 'settings=fused_adam=false ms_per_step=' in printed
  assert 'speedup_over_first=' in printed


def test_torch_profile_summary_counts_kernels_and_idle_gaps():
  from benchmarks.torch_settings import kernel_lines
  kernel = lambda name, ts, dur: {'ph': 'X', 'cat': 'kernel', 'name': name, 'ts': ts, 'dur': dur}
  events = [kernel('conv', 0, 40), {'ph': 'X', 'cat': 'cpu_op', 'name': 'aten::conv2d', 'ts': 0,
                                    'dur': 500},
            kernel('bn', 50, 20), kernel('conv', 100, 40), kernel('bn', 150, 20)]
  summary, idle = kernel_lines(events, wall_s=200e-6, steps=2)
  # 120 us of kernels in 2 steps of 200 us: 60 us per step, 2 kernels per step.
  assert 'step: 0.200 ms wall (under the profiler)' in summary
  assert 'device time of its ops: 0.060 ms per step, 30% of the wall step' in summary
  assert '2 kernels per step, 70.0 us idle per kernel' in summary
  assert idle.startswith('idle: 0.025 ms per step under the profiler, in 2 gaps per step')
  assert 'longest 30.0 us' in idle
  assert kernel_lines(events[1:2], 1e-3, 1) == [
      'no GPU kernels in the trace (a CPU run): 1.000 ms per step under the profiler']


def test_torch_reference_without_autocast_trains_bf16_networks():
  torch = pytest.importorskip('torch')
  from benchmarks import torch_reference
  for autocast, weight_dtype in ((True, torch.float32), (False, torch.bfloat16)):
    settings = torch_reference.Settings(autocast=autocast)
    step, modules = torch_reference.make_step('srgan', 2, 'bfloat16', 32, settings)
    before = next(modules['g'].parameters()).detach().clone()
    assert np.isfinite(step().item())
    weight = next(modules['g'].parameters())
    assert weight.dtype == next(modules['d'].parameters()).dtype == weight_dtype
    assert not torch.equal(weight, before)
  # In float32 the setting changes nothing.
  step, modules = torch_reference.make_step('srresnet', 2, 'float32', 32,
                                            torch_reference.Settings(autocast=False))
  assert next(modules['g'].parameters()).dtype == torch.float32
