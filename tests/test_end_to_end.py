"""main.py end to end on the test config, then evaluation and upscaling of its workdir."""

import json
import os
import re

import jax
import numpy as np
import pytest
from PIL import Image

from srgan_jax import run_folder, upscale
from tests.conftest import REPO, killed_training_run, png_header, run_python


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  result = run_python(['main.py', '--config=configs/test.py', f'--workdir={workdir}'])
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir, result


@pytest.mark.slow
def test_main_trains_checkpoints_and_logs(trained_run):
  workdir, result = trained_run
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']
  lines = [json.loads(l) for l in open(workdir / 'metrics.jsonl')]
  train_lines = [l for l in lines if 'g_loss' in l]
  assert [l['step'] for l in train_lines] == [2, 4, 6]
  assert {'d_loss', 'd_real', 'd_fake', 'adversarial_loss', 'steps_per_s', 'images_per_s',
          'learning_rate'} <= set(train_lines[-1])
  assert any('eval/skimage_astronaut/psnr_y' in l for l in lines)
  assert os.listdir(workdir / 'tensorboard')
  assert json.load(open(workdir / 'config.json'))['generator']['num_blocks'] == 2
  assert 'generator: 11,536 parameters' in result.stderr  # No biases before BatchNorm.
  assert 'ETA' in result.stderr
  assert json.load(open(workdir / 'best' / 'best.json'))['step'] == 6


@pytest.mark.slow
def test_main_continues_from_the_saved_step(trained_run, tmp_path):
  workdir, _ = trained_run
  import shutil
  copy = tmp_path / 'continued'
  shutil.copytree(workdir, copy)
  result = run_python(['main.py', '--config=configs/test.py', f'--workdir={copy}',
                       '--config.train.num_steps=8', '--config.eval.sets=()'])
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'at step 6' in result.stderr
  steps = [json.loads(l)['step'] for l in open(copy / 'metrics.jsonl') if 'g_loss' in l]
  assert steps == [2, 4, 6, 8]


def test_config_typo_fails_with_the_key_name(tmp_path):
  result = run_python(['main.py', '--config=configs/test.py', f'--workdir={tmp_path}',
                       '--config.train.batch_sise=4'])
  assert result.returncode != 0
  assert 'batch_sise' in result.stderr
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_srgan_without_vgg_weights_stops_before_compiling(tmp_path):
  result = run_python(['main.py', '--config=configs/srgan.py', f'--workdir={tmp_path}/run',
                       f'--config.vgg.cache_dir={tmp_path}/cache',
                       '--config.data.source=skimage:chelsea'])
  assert result.returncode != 0
  assert 'VGG19 ImageNet weights, Keras (Caffe-style BGR input) (vgg19_keras) not found' in result.stderr
  assert 'python -m srgan_jax.weights fetch vgg19_keras' in result.stderr
  assert 'generator:' not in result.stderr  # Logged only after the state is compiled.


@pytest.mark.slow
def test_srgan_with_converted_weights_trains_a_step(tmp_path):
  from srgan_jax import weights
  from srgan_jax.models import vgg
  params = vgg.random_params(0)
  weights.save(str(tmp_path / 'vgg.npz'), {f'{layer}/{leaf}': value for layer, p in params.items()
                                           for leaf, value in p.items()}, 'vgg19_keras')
  result = run_python([
      'main.py', '--config=configs/srgan.py', f'--workdir={tmp_path}/run',
      f'--config.vgg.params_path={tmp_path}/vgg.npz', '--config.data.source=skimage:chelsea',
      '--config.generator.num_blocks=1', '--config.generator.features=8',
      '--config.discriminator.features=(8,8)', '--config.discriminator.dense_features=8',
      '--config.data.hr_crop_size=32', '--config.train.batch_size=2',
      '--config.train.num_steps=1', '--config.train.log_every_steps=1'])
  assert result.returncode == 0, result.stderr[-4000:]
  line = json.loads(open(tmp_path / 'run' / 'metrics.jsonl').readline())
  assert line['step'] == 1 and np.isfinite(line['content_loss']) and 'adversarial_loss' in line


@pytest.mark.slow
def test_evaluate_cli_on_a_run(trained_run, tmp_path):
  workdir, _ = trained_run
  (tmp_path / 'Mini' / 'HR').mkdir(parents=True)
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (40, 52, 3)).astype(np.uint8)).save(
      tmp_path / 'Mini' / 'HR' / 'a.png')
  result = run_python(['-m', 'srgan_jax.evaluate', f'--workdir={workdir}',
                       f'--data={tmp_path}/Mini'])
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads(result.stdout.strip().splitlines()[-1])
  assert summary['dataset'] == 'Mini' and summary['step'] == 6 and summary['n'] == 1
  per_image = json.load(open(workdir / 'eval' / 'Mini_6.json'))
  assert per_image['images'][0]['image'] == 'a'


@pytest.mark.parametrize('module', ['srgan_jax.upscale', 'srgan_jax.evaluate'])
def test_clis_name_a_folder_without_a_run_or_step(module, trained_run, tmp_path):
  workdir, _ = trained_run
  extra = ([str(tmp_path), f'--output={tmp_path}/out'] if module == 'srgan_jax.upscale'
           else [f'--data={tmp_path}'])
  result = run_python(['-m', module, f'--workdir={tmp_path}/nowhere'] + extra)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert f'no config.json in {tmp_path}/nowhere' in result.stderr
  result = run_python(['-m', module, f'--workdir={workdir}', '--step=5'] + extra)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'has no checkpoint for step 5; it has [3, 6]' in result.stderr


def test_upscale_api(trained_run, monkeypatch):
  workdir, _ = trained_run
  upscaler = upscale.load_upscaler(str(workdir))
  image = np.random.default_rng(0).integers(0, 256, (13, 17, 3)).astype(np.uint8)
  out = upscaler(image)
  assert out.shape == (52, 68, 3) and out.dtype == np.uint8
  # The same through a checkpoint folder of the run.
  again = upscale.load_upscaler(str(workdir / 'checkpoints' / '6'))
  np.testing.assert_array_equal(again(image), out)
  best = upscale.load_upscaler(str(workdir / 'best'))  # the best-by-PSNR checkpoint
  assert best.step == 6
  np.testing.assert_array_equal(best(image), out)
  # The other form of the output conv reads the same checkpoint and gives the same image
  # (up to a rounding flip where a value sits on a half level).
  subpixel = upscale.load_upscaler(str(workdir), output_conv='subpixel4')
  assert subpixel.generator.output_conv == 'subpixel4'
  assert np.abs(subpixel(image).astype(int) - out).max() <= 1
  # Unless told, the CPU keeps the run's form and a GPU takes the fastest measured there.
  assert upscaler.generator.output_conv == run_folder.load_config(str(workdir)).generator.output_conv
  assert upscale.inference_output_conv('direct', scale=4) == 'direct'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert upscale.load_upscaler(str(workdir)).generator.output_conv == 'subpixel4'
  assert upscale.inference_output_conv('direct', scale=4) == 'subpixel4'
  assert upscale.inference_output_conv('direct', scale=2) == 'subpixel2'
  monkeypatch.undo()
  with pytest.raises(ValueError, match="output_conv must be one of.*'subpix'"):
    upscale.load_upscaler(str(workdir), output_conv='subpix')
  with pytest.raises(ValueError, match="dtype must be one of.*'float16'"):
    upscale.load_upscaler(str(workdir), dtype='float16')


def test_upscale_cli_modes_bad_files_and_overwrite(trained_run, tmp_path):
  workdir, _ = trained_run
  inputs = tmp_path / 'in'
  inputs.mkdir()
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(inputs / 'rgb.png')
  Image.fromarray(rgb[..., 0]).save(inputs / 'gray.png')
  Image.fromarray(np.dstack([rgb, np.full((20, 24), 200, np.uint8)])).save(inputs / 'alpha.png')
  Image.fromarray(np.dstack([rgb[..., 1], np.full((20, 24), 90, np.uint8)])).save(inputs / 'la.png')
  Image.fromarray(rng.integers(0, 65536, (20, 24)).astype(np.uint16)).save(inputs / 'deep.png')
  (inputs / 'broken.png').write_bytes(b'\x89PNG garbage')
  (inputs / 'sub').mkdir()
  Image.fromarray(rgb[:8, :8]).save(inputs / 'sub' / 'rgb.png')  # Same name, other folder.
  out = tmp_path / 'out'
  args = ['-m', 'srgan_jax.upscale', f'--workdir={workdir}', str(inputs), f'--output={out}',
          '--tile=8', '--tile_overlap=12']
  result = run_python(args)
  assert result.returncode == 1  # broken.png failed; the others are written.
  assert 'broken.png' in result.stderr
  assert sorted(os.listdir(out)) == ['alpha_x4.png', 'deep_x4.png', 'gray_x4.png', 'la_x4.png',
                                     'rgb_x4.png', 'sub']
  la = Image.open(out / 'la_x4.png')  # Gray + alpha stays gray + alpha.
  assert la.mode == 'LA' and la.size == (96, 80) and np.all(np.asarray(la)[..., 1] == 90)
  assert Image.open(out / 'sub' / 'rgb_x4.png').size == (32, 32)
  assert Image.open(out / 'gray_x4.png').mode == 'L'
  assert png_header(out / 'deep_x4.png') == (16, 0)  # 16-bit gray stays 16-bit gray.
  alpha = Image.open(out / 'alpha_x4.png')
  assert alpha.mode == 'RGBA' and alpha.size == (96, 80)
  assert np.all(np.asarray(alpha)[..., 3] == 200)
  before = (out / 'rgb_x4.png').stat().st_mtime_ns
  result = run_python(args[:3] + [str(inputs / 'rgb.png'), f'--output={out}'])
  assert result.returncode == 0 and 'not overwritten' in result.stderr
  assert (out / 'rgb_x4.png').stat().st_mtime_ns == before
  # rgb.png and rgb.jpg would both write rgb_x4.png: refused before anything is written.
  Image.fromarray(rgb).save(tmp_path / 'rgb.jpg')
  result = run_python(args[:3] + [str(inputs / 'rgb.png'), str(tmp_path / 'rgb.jpg'),
                                  f'--output={tmp_path / "out2"}'])
  assert result.returncode == 2 and 'would write the same output file' in result.stderr
  assert not (tmp_path / 'out2').exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path):
  import signal
  import subprocess
  import sys
  import time
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  args = [sys.executable, 'main.py', '--config=configs/test.py', f'--workdir={tmp_path}',
          '--config.eval.sets=()', '--config.train.log_every_steps=1',
          '--config.train.checkpoint_every_steps=100000', '--config.train.image_every_steps=0']
  proc = subprocess.Popen(args + ['--config.train.num_steps=100000'], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 240
    metrics = tmp_path / 'metrics.jsonl'
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
      assert proc.poll() is None, proc.communicate()[1][-3000:]
      assert time.monotonic() < deadline, 'training did not start'
      time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    proc.kill()
  assert proc.returncode == 0, stderr[-3000:]
  assert 'stopped at step' in stderr
  saved = [int(s) for s in os.listdir(tmp_path / 'checkpoints')]
  assert len(saved) == 1 and 3 <= saved[0] < 100000
  resumed = run_python([*args[1:], f'--config.train.num_steps={saved[0] + 2}'])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'at step {saved[0]}' in resumed.stderr


def test_resuming_with_another_model_shape_is_refused(trained_run, tmp_path):
  workdir, _ = trained_run
  import shutil
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy)
  before = sorted(os.listdir(copy / 'checkpoints'))
  result = run_python(['main.py', '--config=configs/test.py', f'--workdir={copy}',
                       '--config.generator.num_blocks=3'])
  assert result.returncode != 0
  assert 'generator.num_blocks=2' in result.stderr and 'use another --workdir' in result.stderr
  assert sorted(os.listdir(copy / 'checkpoints')) == before
  assert json.load(open(copy / 'config.json'))['generator']['num_blocks'] == 2


def test_example_script_upscales_a_file(trained_run, tmp_path):
  workdir, _ = trained_run
  Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / 'in.png')
  result = run_python(['examples/upscale_in_jax.py', f'--workdir={workdir}',
                       f'--input={tmp_path}/in.png', f'--output={tmp_path}/out.png'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert Image.open(tmp_path / 'out.png').size == (48, 40)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
  """SIGKILL (no chance to clean up) while checkpoints are being written every step."""
  args = killed_training_run(tmp_path, log_lines=6)
  complete = [int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()]
  assert complete, 'no checkpoint survived'
  latest = max(complete)
  resumed = run_python([*args, f'--config.train.num_steps={latest + 2}'])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [l['step'] for l in lines][-2:] == [latest + 1, latest + 2]


def test_a_run_folder_with_biases_before_batch_norm_loads_for_inference(trained_run, tmp_path):
  """Run folders written before those biases were dropped: inference folds each bias into
  its BN's running mean (exact, tests/test_models.py), resuming says why it cannot."""
  import shutil
  import orbax.checkpoint as ocp
  from srgan_jax.models import build
  workdir, _ = trained_run
  old = tmp_path / 'old'
  shutil.copytree(workdir, old)
  shutil.rmtree(old / 'best')
  tree, _ = run_folder.restore_raw(str(old))
  rng = np.random.default_rng(0)
  biases = {}  # path of each conv that feeds a BN -> the bias the old layout had there

  def add_biases(params, stats, path=()):
    for name, value in params.items():
      if name.startswith('conv') and 'bn' + name[4:] in stats:
        biases[path + (name,)] = rng.normal(0, 0.3, value['kernel'].shape[-1]).astype(np.float32)
        value['bias'] = biases[path + (name,)]
      elif isinstance(value, dict) and name in stats:
        add_biases(value, stats[name], path + (name,))

  add_biases(tree['g_ema_params'], tree['g_batch_stats'])
  assert len(biases) == 5  # 2 blocks x 2 convs, and conv_body.
  for path, bias in biases.items():  # The old params held them too (not used at inference).
    node = tree['g_params']
    for name in path:
      node = node[name]
    node['bias'] = bias + 1.0
  with run_folder.checkpoint_manager(str(old / 'checkpoints'), 5) as manager:
    manager.save(7, args=ocp.args.StandardSave(tree))
    manager.wait_until_finished()
  # What the old network computed: each BN saw conv(x) + b, i.e. the bias-free conv
  # against a running mean lowered by b.
  expected_stats = jax.tree.map(np.copy, tree['g_batch_stats'])
  for path, bias in biases.items():
    node = expected_stats
    for name in path[:-1]:
      node = node[name]
    node['bn' + path[-1][4:]]['mean'] = node['bn' + path[-1][4:]]['mean'] - bias
  params = jax.tree.map(np.copy, tree['g_ema_params'])
  for path in biases:
    node = params
    for name in path:
      node = node[name]
    del node['bias']
  generator = build.generator_from_config(run_folder.load_config(str(old)).generator)
  image = np.random.default_rng(1).integers(0, 256, (13, 17, 3)).astype(np.uint8)
  want = generator.apply({'params': params, 'batch_stats': expected_stats},
                         image[None].astype(np.float32) / 255)[0]
  got = upscale.load_upscaler(str(old))(image)
  assert upscale.load_upscaler(str(old)).step == 7
  want = np.clip(np.round((np.asarray(want) + 1) * 127.5), 0, 255)
  assert np.abs(got.astype(int) - want).max() <= 1  # A rounding flip at most (jit or not).
  # Ignoring the biases would give another image: the check can fail.
  plain = generator.apply({'params': params, 'batch_stats': tree['g_batch_stats']},
                          image[None].astype(np.float32) / 255)[0]
  assert np.abs(np.asarray(plain) - np.asarray(want)).max() > 0.01
  # Resuming it is refused with the reason and what still works; nothing is changed.
  result = run_python(['main.py', '--config=configs/test.py', f'--workdir={old}',
                       '--config.train.num_steps=9', '--config.eval.sets=()'])
  assert result.returncode != 0
  assert 'written by an earlier srgan_jax, whose convolutions before BatchNorm had biases' in result.stderr
  assert f'--config.init_from={old}' in result.stderr
  assert sorted(os.listdir(old / 'checkpoints')) == ['3', '6', '7']


@pytest.mark.slow
def test_model_file_round_trip_and_refusals(trained_run, tmp_path):
  """export then upscale --model gives upscale --workdir's pixels; damaged and foreign
  files are refused, saying what they are."""
  workdir, _ = trained_run
  model = tmp_path / 'tiny.npz'
  result = run_python(['-m', 'srgan_jax.export', f'--workdir={workdir}', f'--output={model}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'generator at step 6, trained on skimage:chelsea,coffee,rocket' in result.stdout
  (tmp_path / 'in').mkdir()
  image = np.random.default_rng(0).integers(0, 256, (15, 11, 3)).astype(np.uint8)
  Image.fromarray(image).save(tmp_path / 'in' / 'a.png')
  for flag, folder in ((f'--model={model}', 'by_model'), (f'--workdir={workdir}', 'by_run')):
    result = run_python(['-m', 'srgan_jax.upscale', flag, str(tmp_path / 'in'),
                         f'--output={tmp_path / folder}'])
    assert result.returncode == 0, result.stderr[-3000:]
  by_model = np.asarray(Image.open(tmp_path / 'by_model' / 'a_x4.png'))
  np.testing.assert_array_equal(by_model, np.asarray(Image.open(tmp_path / 'by_run' / 'a_x4.png')))
  assert upscale.load_upscaler(str(model)).step == 6
  # evaluate --model reads it as it reads the run folder.
  (tmp_path / 'Mini' / 'HR').mkdir(parents=True)
  Image.fromarray(np.tile(image, (3, 4, 1))).save(tmp_path / 'Mini' / 'HR' / 'b.png')
  scores = []
  for flag in (f'--model={model}', f'--workdir={workdir}'):
    result = run_python(['-m', 'srgan_jax.evaluate', flag, f'--data={tmp_path}/Mini'])
    assert result.returncode == 0, result.stderr[-3000:]
    scores.append(json.loads(result.stdout.strip().splitlines()[-1])['psnr_y'])
  assert scores[0] == scores[1]
  # A truncated file, a file of another kind, a numpy archive that is not a model.
  data = model.read_bytes()
  (tmp_path / 'cut.npz').write_bytes(data[:len(data) // 2])
  (tmp_path / 'photo.npz').write_bytes((tmp_path / 'in' / 'a.png').read_bytes())
  np.savez(tmp_path / 'other.npz', x=np.zeros(3))
  flipped = bytearray(data)
  flipped[len(data) // 2] ^= 1  # One bit inside the params.
  (tmp_path / 'flipped.npz').write_bytes(bytes(flipped))
  for name, message in (('cut.npz', 'is damaged: a zip archive that cannot be read'),
                        ('photo.npz', 'is not a srgan_jax model file: it is a PNG image'),
                        ('other.npz', 'is not a srgan_jax model file: a numpy archive of 1 arrays'),
                        ('flipped.npz', r'is damaged: (its arrays do not match the checksum|a zip)'),
                        ('missing.npz', 'no such file')):
    result = run_python(['-m', 'srgan_jax.upscale', f'--model={tmp_path / name}',
                         str(tmp_path / 'in'), f'--output={tmp_path / "refused"}'])
    assert result.returncode == 2 and 'Traceback' not in result.stderr, (name, result.stderr)
    assert re.search(message, result.stderr), (name, result.stderr[-2000:])
  assert not (tmp_path / 'refused').exists()


def test_evaluate_table_puts_bicubic_runs_and_the_paper_in_one_table(trained_run, tmp_path):
  """--table=markdown on two runs and bicubic: one paper-style table."""
  from tests.conftest import require_shared_data
  workdir, _ = trained_run
  data = require_shared_data('sr_benchmarks')
  result = run_python(['-m', 'srgan_jax.evaluate', f'--workdir={workdir}',
                       f'--workdir={workdir}/best', f'--data={data}/Set5', '--table=markdown'])
  assert result.returncode == 0, result.stderr[-3000:]
  table = [line for line in result.stdout.splitlines() if line.startswith('|')]
  assert table[0] == '| method | Set5 PSNR / SSIM |'
  rows = {line.split(' | ')[0][2:]: line.split(' | ')[1].rstrip(' |') for line in table[2:]}
  run = os.path.basename(workdir)
  assert list(rows) == ['bicubic', f'{run} (step 6)', f'{run}/best (step 6)',
                        'SRResNet-MSE (paper)', 'SRGAN-VGG54 (paper)']
  assert rows['bicubic'] == '28.42 / 0.8101'
  assert rows['SRResNet-MSE (paper)'] == '32.05 / 0.9019'
  psnr, ssim = (float(x) for x in rows[f'{run}/best (step 6)'].split(' / '))
  assert 0 < psnr < 40 and 0 < ssim < 1


@pytest.mark.parametrize('fmt', ['stablehlo', 'savedmodel', 'onnx'])
@pytest.mark.slow
def test_each_export_format_runs_in_its_own_runtime_like_the_jax_generator(trained_run, tmp_path,
                                                                           fmt):
  """Exported from the trained run with symbolic sizes, run on a size not used at export,
  equal to the JAX generator within 1e-4 (float32)."""
  from srgan_jax import export
  from srgan_jax.models import build
  workdir, _ = trained_run
  if fmt == 'onnx':
    pytest.importorskip('jax2onnx', reason='the ONNX exporter installs on Python 3.11 and later')
    runtime = pytest.importorskip('onnxruntime')
  output = tmp_path / {'stablehlo': 'g.stablehlo', 'savedmodel': 'g_savedmodel', 'onnx': 'g.onnx'}[fmt]
  model = tmp_path / 'g.npz'
  assert run_python(['-m', 'srgan_jax.export', f'--workdir={workdir}', f'--output={model}']).returncode == 0
  result = run_python(['-m', 'srgan_jax.export', f'--model={model}', f'--output={output}',
                       f'--format={fmt}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'{fmt} program of the generator at step 6' in result.stdout
  lr = np.random.default_rng(0).random((2, 11, 7, 3), np.float32)  # Not a size seen before.
  g_config, variables, _ = export.load_generator(str(model))
  want = (np.asarray(build.generator_from_config(g_config).apply(variables, lr)) + 1) / 2
  if fmt == 'stablehlo':
    from jax import export as jax_export
    got = jax_export.deserialize(output.read_bytes()).call(lr)
  elif fmt == 'savedmodel':
    tf = pytest.importorskip('tensorflow')
    got = tf.saved_model.load(str(output)).upscale(lr).numpy()
  else:
    session = runtime.InferenceSession(str(output))
    got = session.run(None, {'lr': lr})[0]
  assert np.asarray(got).shape == (2, 44, 28, 3)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_an_op_onnx_cannot_express_is_named(trained_run, tmp_path, monkeypatch, capsys):
  jax2onnx = pytest.importorskip('jax2onnx', reason='the ONNX exporter installs on Python 3.11+')
  from srgan_jax import export
  workdir, _ = trained_run

  def no_rule(*args, **kwargs):
    raise NotImplementedError("No ONNX handler registered for JAX primitive 'reduce_precision'")

  monkeypatch.setattr(jax2onnx, 'to_onnx', no_rule)
  status = export.main([f'--workdir={workdir}', f'--output={tmp_path / "g.onnx"}', '--format=onnx'])
  assert status == 1
  assert ("ONNX export cannot express an operation of the generator: No ONNX handler registered "
          "for JAX primitive 'reduce_precision'") in capsys.readouterr().err
  assert not (tmp_path / 'g.onnx').exists()
