"""The benchmark scripts run and report every figure they promise (tiny sizes, CPU).

GPU time is scarce: a script that breaks there wastes a session's measurements, so each
is run here first. The figures themselves are not checked (speed is not tested).
"""

import json
import os
import re
import shlex
import shutil

import numpy as np
import pytest

from tests.conftest import REPO, import_reference, require_shared_data, run_python


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow
def test_train_step_benchmark_times_each_model_and_form(tmp_path):
  out = tmp_path / 'rows.jsonl'
  result = run_python(['benchmarks/train_step.py', '--models=srresnet,srgan', '--batch_sizes=2',
                       '--dtypes=float32', '--crop=32', '--output_convs=subpixel4',
                       '--state_forms=packed,auto', '--warmup=1', '--iters=1',
                       f'--json={out}', f'--profile={tmp_path / "trace"}'])
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
  # A trace per variant, for XProf / TensorBoard.
  traces = [f for _, _, files in os.walk(tmp_path / 'trace') for f in files
            if f.endswith('.xplane.pb')]
  assert len(traces) == 4, traces
  result = run_python(['benchmarks/train_step.py', '--state_forms=flat'])
  assert result.returncode == 2 and 'flat' in result.stderr


@pytest.mark.slow
def test_train_step_benchmark_times_the_real_world_degradation_and_its_share(tmp_path):
  out = tmp_path / 'rows.jsonl'
  result = run_python(['benchmarks/train_step.py', '--models=srresnet,real_srgan',
                       '--batch_sizes=2', '--dtypes=float32', '--crop=32',
                       '--degradations=bicubic,realesrgan', '--crop_pad_size=48', '--warmup=1',
                       '--iters=2', f'--json={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = _rows(out)
  assert [(r['model'], r['degradation']) for r in rows] == [
      ('srresnet', 'bicubic'), ('srresnet', 'realesrgan'), ('real_srgan', 'bicubic'),
      ('real_srgan', 'realesrgan')]
  for bicubic, real in (rows[:2], rows[2:]):
    assert 'degradation_ms' not in bicubic
    assert real['degradation_ms'] > 0 and real['crop_pad_size'] == 48 and real['crop'] == 32
    assert real['degradation_share_of_step'] == pytest.approx(
        real['degradation_ms'] / real['ms_per_step'])
  # Stage 2's step carries its perceptual and adversarial terms: a larger step.
  assert rows[3]['ms_per_step'] > rows[1]['ms_per_step']


@pytest.mark.slow
def test_upscale_benchmark_times_each_form():
  result = run_python(['benchmarks/upscale.py', '--size=16', '--dtypes=float32',
                       '--output_convs=direct,subpixel2,subpixel4', '--warmup=1', '--iters=1'])
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [line for line in result.stdout.splitlines() if line.startswith('jax ')]
  assert [line.split(':')[0] for line in lines] == ['jax float32 direct', 'jax float32 subpixel2',
                                                   'jax float32 subpixel4']
  assert all(' ms/image' in line for line in lines)


@pytest.mark.slow
def test_upscale_photos_benchmark_compares_runtimes_on_the_same_windows():
  import importlib.util
  runtimes = ['jax'] + (['onnx'] if importlib.util.find_spec('jax2onnx') else []) + (
      ['torch'] if importlib.util.find_spec('torch') else [])
  result = run_python(['benchmarks/upscale_photos.py', '--sizes=40', '--tile=16',
                       '--tile_overlap=4', f'--runtimes={",".join(runtimes)}'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = re.findall(r'^runtime=(\w+) lr=40x40 start_mib=([\d.]+) peak_mib=([\d.]+) '
                    r'bytes_per_lr_px=([\d.]+) s_per_image=([\d.]+)(.*)$', result.stdout, re.M)
  assert [row[0] for row in rows] == runtimes
  for runtime, start, peak, _, seconds, rest in rows:
    assert float(peak) >= float(start) > 0 and float(seconds) > 0
    if runtime != 'jax':  # The same weights on each runtime: the same pixels, to rounding.
      levels = re.search(r'max difference from jax (\d+) levels', rest)
      assert levels and int(levels.group(1)) <= 1, rest


@pytest.mark.slow
def test_input_pipeline_benchmark_reports_each_source_and_the_device_parts(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (100, 120, 3)).astype(np.uint8)).save(tmp_path / f'{i}.png')
  result = run_python(['benchmarks/input_pipeline.py', f'--folder={tmp_path}',
                       '--sources=memory,records-raw', '--workers=1', '--batch=4', '--crop=32',
                       '--seconds=0.5', '--degradation'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = re.findall(r'^source=(\S+) workers=(\d) crops_per_s=(\S+) crops_per_s_per_core=(\S+) '
                    r'x_srgan_need=\S+ x_srresnet_need=\S+ peak_mib=(\S+)', result.stdout, re.M)
  assert [(r[0], r[1]) for r in rows] == [('memory', '0'), ('records-raw', '1')]
  for _, _, rate, per_core, peak in rows:
    assert float(rate) > 0 and float(per_core) > 0 and float(peak) > 50
  assert '| records-raw | 1 |' in result.stdout  # The table.
  for part in ('rotations and flips', 'in-step bicubic x4 degradation'):
    assert re.search(rf'^{part}, batch 4: \d+\.\d+ ms on the device$', result.stdout, re.M)


@pytest.mark.slow
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


def test_metrics_benchmark_times_lpips_and_niqe():
  result = run_python(['benchmarks/metrics.py', '--size=64', '--warmup=1', '--iters=1'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r'^lpips_alex 64x64, batch 1: [\d,.]+ image pairs/s', result.stdout, re.M)
  assert re.search(r'^lpips_vgg 64x64, batch 1: [\d,.]+ image pairs/s', result.stdout, re.M)
  assert re.search(r'^niqe \d+x\d+ \(.*\): \d+\.\d+ s per image$', result.stdout, re.M)


def test_poisson_sampler_benchmark_times_both_samplers():
  result = run_python(['benchmarks/poisson_sampler.py', '--batch=1', '--side=16', '--iters=1'])
  assert result.returncode == 0, result.stderr[-3000:]
  for shape in ('1x16x16x3', '1x16x16x1'):
    assert re.search(rf'^shape={shape} jax_random_poisson_ms=[\d.]+ cdf_table_ms=[\d.]+ '
                     r'speedup=[\d.]+$', result.stdout, re.M), result.stdout


@pytest.mark.slow
def test_real_world_benchmark_trains_both_and_prints_the_comparison(tmp_path):
  """Tiny models, two steps each, on a few of the shared images: the bicubic model in a
  process of its own (--kinds), then both, the finished one scored again."""
  set14, train = require_shared_data('sr_benchmarks', 'Set14'), require_shared_data('sr_train')
  data = tmp_path / 'data'
  for name in ('comic', 'face'):
    for sub, file in (('HR', f'{name}.png'), ('LR_bicubic/X4', f'{name}x4.png')):
      (data / 'sr_benchmarks' / 'Set14' / sub).mkdir(parents=True, exist_ok=True)
      shutil.copy(os.path.join(set14, sub, file), data / 'sr_benchmarks' / 'Set14' / sub / file)
  (data / 'sr_train' / 'T91').mkdir(parents=True)
  for file in sorted(os.listdir(os.path.join(train, 'T91')))[:8]:
    shutil.copy(os.path.join(train, 'T91', file), data / 'sr_train' / 'T91' / file)
  out = tmp_path / 'out'
  args = ['benchmarks/real_world.py', '--steps=2', '--blocks=1', '--features=8', '--batch=2',
          '--crop=32', '--pool_size=4', f'--out={out}']
  env = {'SRGAN_JAX_DATA': str(data)}
  first = run_python(args + ['--kinds=bicubic'], env_extra=env)
  assert first.returncode == 0, first.stderr[-3000:]
  assert re.search(r'^bicubic \{"steps": 2', first.stdout, re.M) and '| trained on' not in first.stdout
  assert (out / 'Set14_realesrgan_seed0' / 'degradation.json').is_file()
  both = run_python(args, env_extra=env)
  assert both.returncode == 0, both.stderr[-3000:]
  for kind in ('bicubic', 'realesrgan'):
    assert re.search(rf'^\| {kind} \| \d+\.\d\d / 0\.\d{{4}} \| \d+\.\d\d / 0\.\d{{4}} \|$',
                     both.stdout, re.M), both.stdout
  results = json.loads((out / 'results.json').read_text())
  scores = {k: v['scores'] for k, v in results['models'].items()}
  gain = (scores['realesrgan']['Set14 degraded (seed 0)']['psnr_y']
          - scores['bicubic']['Set14 degraded (seed 0)']['psnr_y'])
  assert results['degraded_gain_db'] == pytest.approx(gain)
  assert results['settings']['pool_size'] == 4


def _gpu_check_script():
  """benchmarks/gpu_check.sh with continued lines joined."""
  with open(os.path.join(REPO, 'benchmarks', 'gpu_check.sh')) as f:
    return f.read().replace('\\\n', ' ')


def test_gpu_check_time_limits_fit_the_device_budget():
  """Every part's cap together, plus start-up, stays under the 10 minutes one device call
  may take, so that whoever has a device spends it in one call."""
  script = _gpu_check_script()
  limits = [int(line.split()[2]) for line in script.splitlines() if line.startswith('run ')]
  assert len(limits) >= 5
  assert sum(limits) <= 570, sum(limits)
  assert f'{sum(limits)} s in all' in script  # The header states the same total.
  # A part run only when named (indented, inside its `if`) takes a call of its own.
  named_only = [int(line.split()[2]) for line in script.splitlines()
                if line.startswith('  run ')]
  assert named_only and max(named_only) <= 570, named_only


@pytest.mark.slow
def test_gpu_check_passes_only_flags_its_scripts_define():
  """A misspelt flag in gpu_check.sh would cost a whole device session; --help knows them."""
  script = _gpu_check_script()
  commands = [shlex.split(line)[3:] for line in script.splitlines()
              if line.strip().startswith('run ')]
  assert len(commands) >= 6
  helps = {}
  for command in commands:
    if command[0] == 'env':  # env NAME=VALUE ... python3 ...
      command = [arg for arg in command[1:] if not re.match(r'[A-Z_]+=', arg)]
    if command[0] == 'bash':  # A script of its own, run end to end in its own test.
      assert os.path.exists(os.path.join(REPO, command[1])), command
      continue
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
  torch = import_reference('torch')
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
  model = torch_reference.generator_from_flax(variables, blocks=2, c=8)
  tensor = lambda x: torch.from_numpy(np.array(x, np.float32))

  ours = np.asarray(generator.apply(variables, lr))
  with torch.no_grad():
    theirs = model(tensor(lr).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
  assert ours.shape == theirs.shape == (2, 24, 20, 3)
  assert np.mean(np.abs(ours) < 0.9) > 0.25  # Enough outputs that tanh does not flatten.
  np.testing.assert_allclose(theirs, ours, atol=2e-5)


def test_torch_reference_step_updates_what_ours_updates():
  """The PyTorch SRGAN step runs (so a GPU session's `--torch` figures do not break), trains
  G and D, leaves VGG alone, and takes D's weight gradients once per step (D update only)."""
  torch = import_reference('torch')
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
  torch = import_reference('torch')
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


def test_torch_reference_without_autocast_trains_bf16_networks():
  torch = import_reference('torch')
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


@pytest.mark.slow
def test_perceptual_scale_benchmark_prints_both_networks_per_layer():
  from tests.conftest import fetched_weights
  cache = fetched_weights('vgg19_keras', 'vgg16_torchvision')
  data = os.path.join(require_shared_data('sr_benchmarks'), 'Set14')
  result = run_python(['benchmarks/perceptual_scale.py', '--images=comic', '--crop=64',
                       f'--data={data}', f'--cache_dir={cache}'])
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [dict(field.split('=') for field in line.split())
          for line in result.stdout.splitlines() if line.startswith('layer=')]
  assert [r['layer'] for r in rows] == ['conv1_2', 'conv2_2', 'conv3_4', 'conv4_4', 'conv5_4',
                                        'weighted_sum']
  for row in rows:
    assert float(row['keras_vgg19_scaled']) > 0 and float(row['torchvision_vgg16']) > 0
  total = rows[-1]
  assert float(total['ratio']) == pytest.approx(
      float(total['keras_vgg19_scaled']) / float(total['torchvision_vgg16']), rel=1e-3)
