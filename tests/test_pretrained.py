"""The committed pretrained models: each is the file its row in pretrained/README.md
describes (sha256), and scores there what the row says, through `evaluate --model`."""

import hashlib
import json
import os
import re
import shutil

import pytest

from srgan_jax import evaluate, model_file, weights
from tests.conftest import REPO, fetched_weights, fetched_weights_if_any, require_shared_data

README = os.path.join(REPO, 'pretrained', 'README.md')


def published_rows() -> dict:
  """{name: {'file', 'sha256', 'Set5': (psnr, ssim, niqe, lpips_alex), 'Set14': (...)}}."""
  rows = {}
  pattern = re.compile(r'^\| `(\w+)` \| `([\w.]+)` \| [^|]+ \| ([^|]+) \| ([^|]+) \| ([0-9a-f]{64}) \|$')
  for line in open(README):
    match = pattern.match(line.strip())
    if match:
      name, file, set5, set14, sha = match.groups()
      figures = lambda cell: tuple(float(v) for v in cell.replace('*', '').split('/'))
      rows[name] = {'file': file, 'sha256': sha, 'Set5': figures(set5), 'Set14': figures(set14)}
  return rows


def test_every_committed_model_has_its_row_and_every_row_its_file():
  rows = published_rows()
  committed = sorted(f for f in os.listdir(model_file.PRETRAINED_DIR) if f.endswith('.npz'))
  assert sorted(r['file'] for r in rows.values()) == committed
  assert 'srresnet' in rows  # The default of upscale and the demo.
  for name, row in rows.items():
    assert model_file.PRETRAINED[name] == row['file']
    with open(os.path.join(model_file.PRETRAINED_DIR, row['file']), 'rb') as f:
      assert hashlib.sha256(f.read()).hexdigest() == row['sha256'], name


@pytest.mark.slow
def test_pretrained_models_score_what_their_rows_say(tmp_path, capsys):
  """evaluate --model=NAME on Set5 and Set14 prints the row's figures (to the digits the
  row shows); SRResNet reaches 30.3 dB / 0.855 on Set5 and 27.3 dB on Set14; on Set14 the
  two SRGANs have a lower (better) NIQE and LPIPS-alex than the SRResNet they start from
  and no pixel-shuffle grid (`grid` at most 0.5; HR 0.25); SRGAN-VGG54's LPIPS-alex is at
  most 0.23, below SRGAN-MSE's, at no less than 24.5 dB PSNR-Y (the paper's: 26.02)."""
  data = require_shared_data('sr_benchmarks')
  niqe = require_shared_data('metrics', 'niqe', 'niqe_pris_params.npz')
  weights.convert(niqe, cache=str(tmp_path / 'cache'))
  # LPIPS where the real AlexNet is fetched (always in CI).
  fetched = fetched_weights_if_any('alexnet_torchvision', 'lpips_alex')
  for name in ('alexnet_torchvision', 'lpips_alex') if fetched else ():
    shutil.copy(os.path.join(fetched, f'{name}.npz'), tmp_path / 'cache')
  rows = published_rows()
  args = [f'--data={data}/Set5', f'--data={data}/Set14', '--method=bicubic',
          '--metrics=psnr_y,ssim_y,niqe,grid' + (',lpips_alex' if fetched else ''),
          f'--cache_dir={tmp_path / "cache"}']
  assert evaluate.main(args + [f'--model={name}' for name in rows]) == 0
  measured = {}
  for line in capsys.readouterr().out.splitlines():
    if line.startswith('{'):
      s = json.loads(line)
      measured[s['method'].split(' ')[0], s['dataset']] = s
  print(json.dumps({f'{m}/{d}': v for (m, d), v in measured.items()}, indent=1))
  for name, row in rows.items():
    label = row['file']
    for dataset in ('Set5', 'Set14'):
      got = measured[label, dataset]
      psnr, ssim, niqe_score, lpips_alex = row[dataset]
      # Half a unit of the row's last digit, and a little for another CPU's float rounding.
      assert got['psnr_y'] == pytest.approx(psnr, abs=0.005 + 1e-4), (name, dataset, got)
      assert got['ssim_y'] == pytest.approx(ssim, abs=0.00005 + 1e-6), (name, dataset, got)
      assert got['niqe'] == pytest.approx(niqe_score, abs=0.0005 + 1e-5), (name, dataset, got)
      if fetched:
        assert got['lpips_alex'] == pytest.approx(lpips_alex, abs=0.00005 + 1e-6), (name, dataset, got)
  # The bar the default model is held to: past bicubic (28.42 / 0.8101, 26.09) by about
  # 1.9 and 1.2 dB; VDSR, trained on these 291 images, reports 31.35 dB on Set5.
  srresnet = {d: measured['srresnet_x4.npz', d] for d in ('Set5', 'Set14')}
  assert srresnet['Set5']['psnr_y'] >= 30.3 and srresnet['Set5']['ssim_y'] >= 0.855
  assert srresnet['Set14']['psnr_y'] >= 27.3
  # The adversarial term trades PSNR for natural-looking texture, with no grid.
  gans = {name: measured[rows[name]['file'], 'Set14'] for name in ('srgan_mse', 'srgan')
          if name in rows}
  for name, gan in gans.items():
    assert gan['niqe'] < srresnet['Set14']['niqe'], name
    assert gan['grid'] <= 0.5, name
    if fetched:
      assert gan['lpips_alex'] < srresnet['Set14']['lpips_alex'], name
  if 'srgan' in gans:
    assert gans['srgan']['psnr_y'] >= 24.5
    if fetched:
      assert gans['srgan']['lpips_alex'] <= 0.23
      if 'srgan_mse' in gans:
        # VGG54 content draws texture closer to HR's than pixel MSE does (SRGAN-MSE: 0.2609).
        assert gans['srgan']['lpips_alex'] < gans['srgan_mse']['lpips_alex']


def test_upscale_with_no_model_is_the_committed_srresnet(tmp_path, monkeypatch):
  """`python -m srgan_jax.upscale photo.png` (no --model) writes the pixels of
  `--model=pretrained/srresnet_x4.npz`."""
  import numpy as np
  from PIL import Image
  from srgan_jax import images, upscale
  photo = tmp_path / 'photo.png'
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3)).astype(np.uint8)).save(photo)
  monkeypatch.chdir(tmp_path)
  assert upscale.main([str(photo)]) == 0  # Into ./upscaled/.
  named = os.path.join(model_file.PRETRAINED_DIR, 'srresnet_x4.npz')
  assert upscale.main([f'--model={named}', str(photo), '--output=named']) == 0
  default = images.read_rgb(str(tmp_path / 'upscaled' / 'photo_x4.png'))
  assert default.shape == (80, 112, 3)
  np.testing.assert_array_equal(default, images.read_rgb(str(tmp_path / 'named' / 'photo_x4.png')))


@pytest.mark.slow
def test_models_for_photos_hold_their_conditions_on_degraded_set14(tmp_path, capsys):
  """The two models for real photos against the shipped SRResNet on Set14's official LR
  saved at JPEG quality 50, with Gaussian noise of sigma 10 and through Real-ESRGAN's
  degradation (seed 0), each written by `python -m srgan_jax.degrade`:
  - real_srresnet (stage 1, fidelity): at least 0.3 dB PSNR-Y past SRResNet at JPEG 50,
    within 1.5 dB of it on clean LR;
  - real (stage 2, perceptual): LPIPS-alex at least 0.08 below SRResNet's at JPEG 50 with
    PSNR-Y at most 0.5 dB below; lower LPIPS-alex than SRResNet's after Real-ESRGAN's
    degradation; no pixel-shuffle grid on clean Set14 (`grid` at most 0.5; HR 0.25)."""
  from srgan_jax import degrade
  rows = published_rows()
  photo_models = [name for name in ('real_srresnet', 'real') if name in rows]
  if not photo_models:
    pytest.skip('neither real_srresnet nor real is shipped yet (pretrained/README.md)')
  set14 = os.path.join(require_shared_data('sr_benchmarks'), 'Set14')
  cache = fetched_weights('alexnet_torchvision', 'lpips_alex')
  sets = {'Set14': set14}
  for name, kind in (('Set14_jpeg50', ['--kind=jpeg', '--quality=50']),
                     ('Set14_noise10', ['--kind=noise', '--sigma=10']),
                     ('Set14_realesrgan', ['--seed=0'])):
    sets[name] = str(tmp_path / name)
    assert degrade.main([f'--data={set14}', f'--output={sets[name]}', *kind]) == 0
  args = [f'--data={path}' for path in sets.values()] + [
      '--metrics=psnr_y,lpips_alex,grid', f'--cache_dir={cache}', '--model=srresnet']
  capsys.readouterr()
  assert evaluate.main(args + [f'--model={name}' for name in photo_models]) == 0
  scores = {}
  for line in capsys.readouterr().out.splitlines():
    if line.startswith('{'):
      s = json.loads(line)
      scores[s['method'].split(' ')[0].replace('_x4.npz', ''), s['dataset']] = s
  print(json.dumps({f'{m}/{d}': v for (m, d), v in scores.items()}, indent=1))
  base = lambda dataset: scores['srresnet', dataset]
  if 'real_srresnet' in rows:
    stage1 = lambda dataset: scores['real_srresnet', dataset]
    assert stage1('Set14_jpeg50')['psnr_y'] >= base('Set14_jpeg50')['psnr_y'] + 0.3
    assert stage1('Set14')['psnr_y'] >= base('Set14')['psnr_y'] - 1.5
  if 'real' in rows:
    stage2 = lambda dataset: scores['real', dataset]
    assert stage2('Set14_jpeg50')['lpips_alex'] <= base('Set14_jpeg50')['lpips_alex'] - 0.08
    assert stage2('Set14_jpeg50')['psnr_y'] >= base('Set14_jpeg50')['psnr_y'] - 0.5
    assert stage2('Set14_realesrgan')['lpips_alex'] < base('Set14_realesrgan')['lpips_alex']
    assert stage2('Set14')['grid'] <= 0.5
