import json

import numpy as np
import pytest

from srgan_jax import evaluate, quality
from tests.conftest import require_shared_data, run_python


def test_psnr_and_ssim_basics():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (40, 40)).astype(np.float64)
  assert quality.ssim(a, a) == pytest.approx(1.0)
  assert quality.psnr(a, a + 1.0) == pytest.approx(10 * np.log10(255 ** 2))
  assert quality.ssim(a, 255 - a) < 0


def test_ssim_is_wang_et_al_window_by_window():
  """Wang et al.'s ssim_index written out: every 11x11 window inside the image, Gaussian
  weights of sigma 1.5, weighted (population) moments, K1 = 0.01, K2 = 0.03, L = 255."""
  rng = np.random.default_rng(1)
  a = rng.integers(16, 236, (17, 20)).astype(np.float64)
  b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).round()
  g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  values = []
  for i in range(a.shape[0] - 10):
    for j in range(a.shape[1] - 10):
      x, y = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
      mx, my = (w * x).sum(), (w * y).sum()
      vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
      cov = (w * (x - mx) * (y - my)).sum()
      values.append((2 * mx * my + c1) * (2 * cov + c2)
                    / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
  assert quality.ssim(a, b) == pytest.approx(np.mean(values), abs=1e-12)


def test_y_channel_matches_matlab_for_primaries():
  # MATLAB rgb2ycbcr(uint8): black 16, white 235, pure red round(16 + 65.481) = 81.
  pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0]]], np.uint8)
  np.testing.assert_array_equal(quality.rgb_to_y(pixels), [[16, 235, 81]])


def test_bicubic_baseline_matches_published_protocol_figures():
  """Set5 28.42 dB / 0.8102 and Set14 26.09 dB / 0.7042 (../shared/DESIGN.md)."""
  root = require_shared_data('sr_benchmarks')
  result = run_python(['-m', 'srgan_jax.evaluate', '--method=bicubic',
                       f'--data={root}/Set5', f'--data={root}/Set14'])
  assert result.returncode == 0, result.stderr
  lines = [json.loads(l) for l in result.stdout.splitlines() if l.startswith('{')]
  by_name = {l['dataset']: l for l in lines}
  print(result.stdout)
  assert by_name['Set5']['n'] == 5 and by_name['Set14']['n'] == 14
  assert by_name['Set5']['psnr_y'] == pytest.approx(28.42, abs=0.01)
  assert by_name['Set5']['ssim_y'] == pytest.approx(0.8102, abs=0.001)
  assert by_name['Set14']['psnr_y'] == pytest.approx(26.09, abs=0.01)
  assert by_name['Set14']['ssim_y'] == pytest.approx(0.7042, abs=0.001)


def test_set_without_lr_files_uses_our_bicubic(tmp_path):
  """Without LR_bicubic/, LR is made from HR; Set5's numbers stay the same (files match)."""
  root = require_shared_data('sr_benchmarks', 'Set5')
  import shutil
  shutil.copytree(f'{root}/HR', tmp_path / 'Set5' / 'HR')
  images = evaluate.load_eval_set(str(tmp_path / 'Set5'), 4)
  means, _ = evaluate.evaluate_set(images, lambda lr: evaluate.bicubic_upscale(lr, 4),
                                        quality.Scorer(quality.DEFAULT, 4))
  assert means['psnr_y'] == pytest.approx(28.42, abs=0.01)


def test_gray_hr_is_scored(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  gray = rng.integers(0, 256, (64, 48)).astype(np.uint8)
  (tmp_path / 'HR').mkdir()
  Image.fromarray(gray).save(tmp_path / 'HR' / 'g.png')
  images = evaluate.load_eval_set(str(tmp_path), 4)
  means, rows = evaluate.evaluate_set(images, lambda lr: evaluate.bicubic_upscale(lr, 4),
                                        quality.Scorer(quality.DEFAULT, 4))
  assert rows[0]['image'] == 'g' and np.isfinite(means['psnr_y'])


def test_image_too_small_to_score_is_named(tmp_path):
  from PIL import Image
  (tmp_path / 'HR').mkdir()
  # 22 px crops to 20 at x4, and 20 - 2 * 4 = 12 >= 11: scored. 21 crops to 20 too.
  Image.fromarray(np.zeros((22, 21, 3), np.uint8)).save(tmp_path / 'HR' / 'fits.png')
  fits = evaluate.load_eval_set(str(tmp_path), 4)
  means, _ = evaluate.evaluate_set(fits, lambda lr: evaluate.bicubic_upscale(lr, 4),
                                     quality.Scorer(quality.DEFAULT, 4))
  assert means['psnr_y'] == float('inf') and means['ssim_y'] == pytest.approx(1.0)
  # 19 px crops to 16, and 16 - 8 = 8 < 11: refused with the file's name and size.
  Image.fromarray(np.zeros((19, 40, 3), np.uint8)).save(tmp_path / 'HR' / 'small.png')
  with pytest.raises(ValueError, match=r'small\.png: 40x19 is too small to score at x4'):
    evaluate.load_eval_set(str(tmp_path), 4)


def test_compare_writes_each_method_then_hr(tmp_path, capsys):
  """--compare: <set>_<image>.png is bicubic's SR, then HR, cropped as asked; a crop
  outside an image or an unknown name stops before any method runs, naming it."""
  from PIL import Image
  from skimage import data
  (tmp_path / 'Mini' / 'HR').mkdir(parents=True)
  hr = data.astronaut()[:96, :128]
  Image.fromarray(hr).save(tmp_path / 'Mini' / 'HR' / 'a.png')
  Image.fromarray(hr[:64, :64]).save(tmp_path / 'Mini' / 'HR' / 'b.png')
  common = [f'--data={tmp_path}/Mini', '--method=bicubic', '--metrics=psnr_y',
            f'--compare={tmp_path}/out']
  assert evaluate.main(common + ['--compare_crop=8,16,40', '--compare_images=a']) == 0
  written = np.asarray(Image.open(tmp_path / 'out' / 'Mini_a.png'))
  lr = evaluate.load_eval_set(str(tmp_path / 'Mini'), 4)[0].lr
  bicubic = evaluate.bicubic_upscale(lr, 4)[8:48, 16:56]
  np.testing.assert_array_equal(written, np.concatenate([bicubic, hr[8:48, 16:56]], axis=1))
  assert not (tmp_path / 'out' / 'Mini_b.png').exists()  # Not asked for.
  capsys.readouterr()
  assert evaluate.main(common + ['--compare_crop=8,16,60']) == 1  # b is 64x64.
  assert 'b: the crop 60x60 at (8, 16) does not fit in its 64x64 HR' in capsys.readouterr().err
  assert evaluate.main(common + ['--compare_images=a,zebra']) == 1
  assert 'has no zebra' in capsys.readouterr().err
  with pytest.raises(SystemExit):
    evaluate.main(common + ['--compare_crop=8,16'])
  assert 'expected TOP,LEFT,SIZE' in capsys.readouterr().err


def test_the_paper_rows_come_only_with_a_set_the_paper_scored():
  summaries = [{'method': 'bicubic', 'dataset': name, 'psnr_y': 21.88, 'ssim_y': 0.5079}
               for name in ('Set14_realesrgan_seed0', 'Set5')]
  degraded = evaluate.markdown_table(summaries[:1], ['Set14_realesrgan_seed0'], ('psnr_y', 'ssim_y'))
  assert degraded.splitlines()[2:] == ['| bicubic | 21.88 / 0.5079 |']
  both = evaluate.markdown_table(summaries, ['Set14_realesrgan_seed0', 'Set5'], ('psnr_y', 'ssim_y'))
  assert both.splitlines()[-1] == '| SRGAN-VGG54 (paper) | - / - | 29.40 / 0.8472 |'


def test_grid_finds_a_pixel_shuffle_phase_pattern_and_ignores_smooth_texture():
  """`grid`: a 4x4-periodic offset (what an untrained pixel shuffle leaves) scores its
  size in luma levels; a smooth image, random texture and an offset of another period
  score near 0; SR alone is scored, whole, as `evaluate --metrics=grid` does."""
  rng = np.random.default_rng(0)
  rows, cols = np.mgrid[0:96, 0:128]
  smooth = 100 + 50 * np.sin(rows / 9.0) * np.cos(cols / 13.0)
  pattern = rng.normal(0, 2.0, (4, 4))
  pattern -= pattern.mean()
  rgb = lambda luma: np.repeat(np.clip(np.round(luma), 0, 255)[..., None], 3, -1).astype(np.uint8)
  clean = quality.pixel_grid(rgb(smooth))
  gridded = quality.pixel_grid(rgb(smooth + np.tile(pattern, (24, 32))))
  texture = quality.pixel_grid(rgb(smooth + rng.normal(0, 8, smooth.shape)))
  other_period = quality.pixel_grid(rgb(smooth + np.tile(pattern[:3, :3] - pattern[:3, :3].mean(),
                                                          (32, 43))[:, :128]))
  print(f'grid: smooth {clean:.3f}, 4x4 offsets {gridded:.3f}, texture {texture:.3f}, '
        f'3x3 offsets {other_period:.3f}')
  assert clean < 0.1 and texture < 0.3 and other_period < 0.3
  assert gridded > 5 * max(clean, texture, other_period) and gridded > 1.0
  scorer = quality.Scorer(['psnr_y', 'grid'], 4)
  image = rgb(smooth + np.tile(pattern, (24, 32)))
  assert scorer(image, image)['grid'] == pytest.approx(gridded)
  assert scorer.without_reference(image) == {'grid': pytest.approx(gridded)}
  assert quality.METRICS['grid'].higher_is_better is False
