"""The README: its first screen, and every command it shows, run.

Training commands run with tiny overrides appended (a full run would take days), on
scikit-image's photos where the README's source is DIV2K; the rest run as written, with
the README's folders (runs/, photos/, upscaled/) under a temporary folder.
"""

import os
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, require_shared_data, run_python

TINY = ['--config.generator.num_blocks=1', '--config.generator.features=8',
        '--config.discriminator.features=(8,8)', '--config.discriminator.dense_features=8',
        '--config.data.source=skimage:chelsea,coffee', '--config.data.hr_crop_size=32',
        '--config.train.batch_size=2', '--config.train.num_steps=2',
        '--config.train.log_every_steps=1', '--config.train.checkpoint_every_steps=2',
        '--config.train.image_every_steps=0', '--config.eval.every_steps=0',
        '--config.eval.max_images=1']


def _readme() -> str:
  with open(os.path.join(REPO, 'README.md')) as f:
    return f.read()


def _blocks(text: str, language: str) -> list[str]:
  return re.findall(rf'^```{language}\n(.*?)^```', text, re.M | re.S)


def _commands(text: str) -> list[str]:
  return [line for block in _blocks(text, 'bash') for line in block.splitlines()
          if line.strip() and not line.startswith('#')]


def test_the_first_screen_holds_the_two_commands_and_the_results_table():
  first_screen = '\n'.join(_readme().splitlines()[:60])
  commands = _commands(first_screen)
  assert commands[0].endswith('pip install -e . && python main.py '
                              '--config=configs/quickstart.py --workdir=runs/quickstart')
  assert commands[1].endswith('pip install -e ".[test]" && python -m pytest -q -n 2')
  assert ('| bicubic | - | 28.42 / 0.8101 / 8.462 / 0.3435 | 26.09 / 0.7041 / 7.613 / 0.4395 |'
          in first_screen)
  assert 'configs/srresnet_291.py' in first_screen  # The trained paper-size row.
  assert 'SRResNet-MSE (paper)' in first_screen and 'Not run yet' in first_screen
  assert 'QS_' not in first_screen  # Every cell is a measured figure.


@pytest.mark.slow
def test_every_command_the_readme_shows_runs(tmp_path):
  data = os.path.dirname(require_shared_data('sr_benchmarks'))
  (tmp_path / 'photos').mkdir()
  photo = np.random.default_rng(0).integers(0, 256, (20, 24, 3)).astype(np.uint8)
  Image.fromarray(photo).save(tmp_path / 'photos' / 'a.png')
  # One photo large enough to be prepared as records (the smaller one is skipped).
  Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 120, 3)).astype(np.uint8)).save(
      tmp_path / 'photos' / 'b.png')
  # No index either: `weights fetch` would download from the package index (tests never do).
  env = {'SRGAN_JAX_CACHE': str(tmp_path / 'cache'), 'PIP_NO_INDEX': '1'}
  text = _readme()
  commands = _commands(text)
  assert len(commands) >= 8
  ran = []
  for line in commands:
    for command in line.split('&&'):
      args = shlex.split(command)
      if args[0] in ('python3', '.', 'pip') and 'main.py' not in args:
        if args[:2] == ['python3', '-m'] and args[2] == 'venv' or args[0] in ('.', 'pip'):
          continue  # Making and filling the environment this suite runs in.
      if args[:3] == ['python', '-m', 'pytest']:
        continue  # This suite itself.
      assert args[0] == 'python', command
      args = [a.replace('runs/', f'{tmp_path}/runs/').replace('photos/', f'{tmp_path}/photos/')
              .replace('upscaled/', f'{tmp_path}/upscaled/')
              .replace('../shared/data', data) for a in args[1:]]
      if args[0] == 'main.py':
        args += TINY + (['--config.vgg.allow_random_weights=True']
                        if 'configs/srgan.py' in command else [])
        if 'configs/real_' in command:  # From a pretrained G of the paper's size, scored by
          # LPIPS: at the tiny size from scratch, by PSNR, on random VGG weights.
          args += ['--config.init_from=', "--config.eval.metrics=('psnr_y',)",
                   '--config.eval.best_metric=psnr_y', '--config.vgg.allow_random_weights=True']
      result = run_python(args, env)
      ran.append(' '.join(args[:3]))
      if args[:3] == ['-m', 'srgan_jax.weights', 'fetch']:
        # Offline (CI) it fails at once, saying where to put the file.
        assert result.returncode == 0 or 'Download it by hand' in result.stderr, result.stderr
        continue
      assert result.returncode == 0, f'{command}\n{result.stderr[-3000:]}'
  assert any(r.startswith('main.py --config=configs/srgan.py') for r in ran)
  assert any(r.startswith('-m srgan_jax.upscale') for r in ran)
  assert os.listdir(tmp_path / 'upscaled')
  # The Python example, on the quickstart run the first command made.
  example = _blocks(text, 'python')[0].replace("'runs/", f"'{tmp_path}/runs/")
  scope = {'image': photo}
  exec(example, scope)
  assert scope['sr'].shape == (80, 96, 3)
  assert (tmp_path / 'runs' / 'records' / 'manifest.json').exists()
