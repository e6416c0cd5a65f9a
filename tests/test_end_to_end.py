"""main.py end to end on the test config, then evaluation and upscaling of its workdir."""

import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from srgan_jax import run_folder, upscale
from tests.conftest import REPO, run_python


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('run')
  result = run_python(['main.py', '--config=configs/test.py', f'--workdir={workdir}'])
  assert result.returncode == 0, result.stderr[-4000:]
  return workdir, result


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
  assert sorted(os.listdir(out)) == ['alpha_x4.png', 'deep_x4.png', 'gray_x4.png', 'rgb_x4.png',
                                     'sub']
  assert Image.open(out / 'sub' / 'rgb_x4.png').size == (32, 32)
  assert Image.open(out / 'gray_x4.png').mode == 'L'
  assert Image.open(out / 'deep_x4.png').mode == 'L'
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


def test_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):
  """SIGKILL (no chance to clean up) while checkpoints are being written every step."""
  import signal
  import subprocess
  import sys
  import time
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  args = ['main.py', '--config=configs/test.py', f'--workdir={tmp_path}', '--config.eval.sets=()',
          '--config.train.log_every_steps=1', '--config.train.checkpoint_every_steps=1',
          '--config.train.image_every_steps=0', '--config.train.keep_checkpoints=2']
  proc = subprocess.Popen([sys.executable, *args, '--config.train.num_steps=100000'], cwd=REPO,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + 240
    metrics = tmp_path / 'metrics.jsonl'
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 6):
      assert proc.poll() is None and time.monotonic() < deadline
      time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    proc.kill()
  complete = [int(s) for s in os.listdir(tmp_path / 'checkpoints') if s.isdigit()]
  assert complete, 'no checkpoint survived'
  latest = max(complete)
  resumed = run_python([*args, f'--config.train.num_steps={latest + 2}'])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert [l['step'] for l in lines][-2:] == [latest + 1, latest + 2]
