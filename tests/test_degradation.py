import glob
import os

import numpy as np

from srgan_jax import degradation, images
from tests.conftest import require_shared_data


def test_cubic_kernel_values():
  # Keys' kernel with a = -0.5: 1 at 0, 0 at integers, -0.0625 at 1.5, 0.5625 at 0.5.
  np.testing.assert_allclose(degradation.cubic(np.array([0, 0.5, 1, 1.5, 2, 2.5])),
                             [1, 0.5625, 0, -0.0625, 0, 0])


def test_weights_sum_to_one_and_indices_clamp():
  indices, weights = degradation.contributions(10, 3, 0.25)
  np.testing.assert_allclose(weights.sum(axis=1), 1.0)
  assert indices.min() == 0 and indices.max() == 9


def test_constant_image_stays_constant():
  image = np.full((40, 36, 3), 77, np.uint8)
  assert np.all(degradation.resize_numpy(image, 0.25) == 77)
  assert np.all(degradation.resize_numpy(image, 4) == 77)


def test_official_lr_files_are_reproduced():
  """Every Set5/Set14 LR_bicubic/X4 file, from its HR cropped to a multiple of 4."""
  root = require_shared_data('sr_benchmarks')
  within_one = total = 0
  worst = 0
  files = 0
  for hr_path in sorted(glob.glob(os.path.join(root, 'Set*', 'HR', '*.png'))):
    set_dir = os.path.dirname(os.path.dirname(hr_path))
    name = os.path.splitext(os.path.basename(hr_path))[0]
    hr = images.read_rgb(hr_path)
    hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
    official = images.read_rgb(os.path.join(set_dir, 'LR_bicubic', 'X4', f'{name}x4.png'))
    ours = degradation.resize_numpy(hr, 0.25)
    diff = np.abs(ours.astype(int) - official.astype(int))
    within_one += int((diff <= 1).sum())
    total += diff.size
    worst = max(worst, int(diff.max()))
    files += 1
  assert files == 19
  print(f'{files} files: {100 * within_one / total:.4f}% of values within +-1, max diff {worst}')
  assert within_one / total >= 0.999
  assert worst <= 1


def test_jnp_matches_numpy_before_quantisation():
  rng = np.random.default_rng(0)
  hr = rng.integers(0, 256, (2, 48, 40, 3)).astype(np.uint8)
  ours = np.asarray(degradation.downscale_uint8_batch(hr, 4, quantize=False)) * 255
  reference = np.stack([degradation.resize_numpy(x.astype(np.float64), 0.25) for x in hr])
  assert np.abs(ours - reference).max() < 1e-3


def test_jnp_quantised_equals_numpy_uint8():
  rng = np.random.default_rng(1)
  hr = rng.integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  ours = np.round(np.asarray(degradation.downscale_uint8_batch(hr, 4)) * 255).astype(np.uint8)
  reference = np.stack([degradation.resize_numpy(x, 0.25) for x in hr])
  np.testing.assert_array_equal(ours, reference)


def test_resize_in_row_bands_equals_resize_at_once():
  """resize_numpy computes its output a band of rows at a time (bounded temporaries);
  the band size must not change a value, for uint8, uint16 and float, up and down."""
  rng = np.random.default_rng(5)
  for image, scale in ((rng.integers(0, 256, (37, 29, 3)).astype(np.uint8), 4),
                       (rng.integers(0, 65536, (41, 23)).astype(np.uint16), 4),
                       (rng.random((101, 30, 3)), 0.25)):
    whole = degradation.resize_numpy(image, scale, rows=10**6)
    assert whole.dtype == image.dtype
    for rows in (1, 7, 64):
      np.testing.assert_array_equal(degradation.resize_numpy(image, scale, rows=rows), whole)
