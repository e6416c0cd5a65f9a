"""The 291-image recipes and the one-call reproduction (benchmarks/reproduce.sh) run here."""

import json
import os
import subprocess

import pytest

from srgan_jax import model_file
from tests.conftest import REPO, require_shared_data, run_python

TINY = ['--config.generator.num_blocks=1', '--config.generator.features=8',
        '--config.discriminator.features=(8,8)', '--config.discriminator.dense_features=8',
        '--config.data.hr_crop_size=32', '--config.train.batch_size=2',
        '--config.train.num_steps=3', '--config.train.log_every_steps=1',
        '--config.eval.max_images=1', '--config.eval.every_steps=0']


def test_srgan_mse_291_is_the_papers_variant_from_the_shipped_srresnet():
  from configs import srgan_mse_291
  from srgan_jax import train
  config = srgan_mse_291.get_config()
  train.validate_config(config)
  assert os.path.isfile(model_file.resolve(config.init_from))  # G from the shipped SRResNet.
  assert (config.loss.content, config.loss.adversarial_weight,
          config.optimizer.learning_rate) == ('pixel', 1e-3, 1e-4)
  assert config.eval.best_metric == 'lpips_alex' and 'grid' in config.eval.metrics
  assert config.loss.phase_weight > 0  # Beside the paper's loss: no pixel-shuffle grid.
  assert 0 < config.train.ema_decay < 1
  assert os.path.basename(config.eval.sets[0]) == 'Set14'  # best/ follows the first set.


@pytest.mark.slow
def test_the_291_recipes_train_a_few_steps_on_the_shared_images(tmp_path):
  require_shared_data('sr_train')
  require_shared_data('sr_benchmarks')
  srresnet = run_python(['main.py', '--config=configs/srresnet_291.py',
                         f'--workdir={tmp_path}/srresnet', *TINY])
  assert srresnet.returncode == 0, srresnet.stderr[-3000:]
  assert '291 images in memory' in srresnet.stderr  # BSDS200 + T91, every one usable.
  # LPIPS, which picks best/ at full size, needs fetched weights: PSNR picks it here.
  gan = run_python(['main.py', '--config=configs/srgan_mse_291.py',
                    f'--workdir={tmp_path}/gan', f'--config.init_from={tmp_path}/srresnet',
                    "--config.eval.metrics=('psnr_y', 'grid')", '--config.eval.best_metric=psnr_y',
                    *TINY])
  assert gan.returncode == 0, gan.stderr[-3000:]
  assert f'initialised G from {tmp_path}/srresnet (step 3)' in gan.stderr
  lines = [json.loads(l) for l in open(tmp_path / 'gan' / 'metrics.jsonl')]
  assert 'adversarial_loss' in lines[0] and 'd_loss' in lines[0]
  evaluated = {k for line in lines for k in line if k.startswith('eval/')}
  assert {'eval/Set5/psnr_y', 'eval/Set14/psnr_y', 'eval/Set14/grid'} <= evaluated
  assert json.load(open(tmp_path / 'gan' / 'best' / 'best.json'))['dataset'] == 'Set14'


@pytest.mark.slow
def test_the_reproduction_runs_end_to_end_on_the_cpu_in_a_20_second_budget(tmp_path):
  """Both phases at the paper's model size for 20 s each (smaller batches), the table and
  both model files: what a GPU session runs for minutes (gpu_check.sh)."""
  require_shared_data('sr_train')
  data = require_shared_data('sr_benchmarks')
  env = dict(os.environ, OUT=str(tmp_path / 'out'), BUDGET_S='20', GAN_BUDGET_S='20',
             DTYPE='float32', EXTRA_EVAL_SETS=f'{data}/Set5',
             EXTRA_ARGS='--config.train.batch_size=2 --config.data.hr_crop_size=48 '
                        '--config.train.log_every_steps=1')
  env.pop('XLA_FLAGS', None)
  result = subprocess.run(['bash', 'benchmarks/reproduce.sh'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
  assert result.returncode == 0, result.stderr[-4000:]
  out = tmp_path / 'out'
  table = (out / 'results.md').read_text()
  print(table)
  rows = [line for line in table.splitlines() if line.startswith('|')]
  assert rows[0] == '| method | Set5 PSNR / SSIM | Set14 PSNR / SSIM | Set5 PSNR / SSIM |'
  assert rows[2].startswith('| bicubic | 28.42 / 0.8101 | 26.09 / 0.7041 |')
  assert rows[3].startswith('| srresnet_291.npz (step ') and rows[4].startswith('| srgan_mse_291.npz')
  assert 'SRResNet-MSE (paper)' in rows[5]
  times = (out / 'reproduce_times.txt').read_text().splitlines()
  assert [t.split(':')[0] for t in times] == ['srresnet_291', 'srgan_mse_291']
  for name in ('srresnet_291', 'srgan_mse_291'):
    g_config, variables, info = model_file.read(str(out / f'{name}.npz'))
    assert g_config.num_blocks == 16 and g_config.features == 64  # The paper's G.
    assert info['step'] >= 1 and info['data'].endswith('sr_train')
    assert os.path.getsize(out / f'{name}.npz') < 7 * 2**20
    steps = [json.loads(l)['step'] for l in open(out / f'{name}.metrics.jsonl')]
    assert steps[-1] == info['step']
