"""NIQE (Mittal et al. 2013), a no-reference quality score, computed as MATLAB's release does.

Lower is better. The steps of the MATLAB code (`computequality.m`, `computefeature.m`,
`estimateaggdparam.m`), each kept exactly:

1. The image is a 2-D array of 0..255 values (Y of YCbCr as MATLAB's `rgb2ycbcr` rounds
   it, `images.rgb_to_y`), cut to whole 96x96 blocks from the top-left.
2. At each of two scales: local mean and deviation under a 7x7 Gaussian window of sigma
   7/6 (`fspecial('gaussian', 7, 7/6)`, edges replicated, as `imfilter(..., 'replicate')`),
   the MSCN coefficients (x - mu) / (sigma + 1), and per block 18 features: an
   asymmetric generalised Gaussian fit (AGGD) of the coefficients (shape, mean of the
   two scales), then one of the products with each of four neighbours (circularly
   shifted within the block by (0, 1), (1, 0), (1, 1), (1, -1): shape, mean, left and
   right scales). The fit picks the shape on MATLAB's grid 0.2:0.001:10.
3. The second scale is the image halved by MATLAB's bicubic (`imresize(im, 0.5)`, with
   its antialiasing and, as current MATLAB releases do, mirrored edges: the project's
   `degradation.resize_numpy(..., edges='symmetric')`), blocks of 48x48. Up to the
   features in single precision: so the reference figure (MATLAB R2021a's 5.72957 on
   BasicSR's `baboon.png`, tests/test_niqe.py) is met to 3e-6; in double precision it
   is 4e-4 away.
4. A multivariate Gaussian of the blocks' 36 features (mean ignoring NaN; covariance
   over the blocks without NaN, as `nancov`), and its distance to the pristine model:
   sqrt((mu_p - mu)^T pinv((cov_p + cov) / 2) (mu_p - mu)).

The pristine model (`mu_prisparam`, `cov_prisparam` of the release's
`modelparameters.mat`) comes through `srgan_jax.weights` ('niqe_pristine').
"""

import math

import numpy as np
from scipy import ndimage, special

from srgan_jax import degradation

BLOCK = 96
_SHAPES = np.arange(0.2, 10.0 + 5e-4, 0.001)  # MATLAB's 0.2:0.001:10 (9,801 values).
# rho(shape) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), the AGGD fit's lookup table.
_RHO = special.gamma(2 / _SHAPES) ** 2 / (special.gamma(1 / _SHAPES) * special.gamma(3 / _SHAPES))
_NEIGHBOURS = ((0, 1), (1, 0), (1, 1), (1, -1))


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
  """MATLAB's `fspecial('gaussian', size, sigma)`: [size, size], summing to 1."""
  x = np.arange(size) - (size - 1) / 2
  g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma * sigma))
  g[g < np.finfo(np.float64).eps * g.max()] = 0
  return g / g.sum()


def _aggd(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """AGGD fit of each row of `values` [n, m]: (shape, left scale, right scale), each [n]."""
  negative, positive = values < 0, values > 0
  left = np.sqrt(np.sum(np.where(negative, values * values, 0), 1) / negative.sum(1))
  right = np.sqrt(np.sum(np.where(positive, values * values, 0), 1) / positive.sum(1))
  ratio = left / right
  r_hat = np.mean(np.abs(values), 1) ** 2 / np.mean(values * values, 1)
  r_norm = r_hat * (ratio ** 3 + 1) * (ratio + 1) / (ratio ** 2 + 1) ** 2
  shape = _SHAPES[np.argmin((_RHO[None, :] - r_norm[:, None]) ** 2, axis=1)]
  scale = np.sqrt(special.gamma(1 / shape) / special.gamma(3 / shape))
  return shape, left * scale, right * scale


def block_features(blocks: np.ndarray) -> np.ndarray:
  """The 18 NIQE features of each MSCN block: [n, b, b] -> [n, 18]."""
  n = blocks.shape[0]
  shape, left, right = _aggd(blocks.reshape(n, -1))
  features = [shape, (left + right) / 2]
  for shift in _NEIGHBOURS:
    products = blocks * np.roll(blocks, shift, axis=(1, 2))
    shape, left, right = _aggd(products.reshape(n, -1))
    mean = (right - left) * special.gamma(2 / shape) / special.gamma(1 / shape)
    features += [shape, mean, left, right]
  return np.stack(features, axis=1)


def _mscn(image: np.ndarray, window: np.ndarray) -> np.ndarray:
  mu = ndimage.correlate(image, window, mode='nearest')
  sigma = np.sqrt(np.abs(ndimage.correlate(image * image, window, mode='nearest') - mu * mu))
  return (image - mu) / (sigma + 1)


def _blocks(image: np.ndarray, side: int) -> np.ndarray:
  rows, cols = image.shape[0] // side, image.shape[1] // side
  cut = image[:rows * side, :cols * side]
  return cut.reshape(rows, side, cols, side).transpose(0, 2, 1, 3).reshape(-1, side, side)


def niqe(image: np.ndarray, mu_pristine: np.ndarray, cov_pristine: np.ndarray) -> float:
  """NIQE of a 2-D image of 0..255 values (Y, rounded; see the module docstring).

  Args:
    image: [H, W], float or integer, at least two whole 96x96 blocks.
    mu_pristine: [36] (or [1, 36]), the pristine model's mean.
    cov_pristine: [36, 36], its covariance.

  Raises ValueError for an image with fewer than two whole blocks: the covariance of
  one block's features is undefined (NaN).
  """
  image = np.asarray(image, np.float32)
  if image.ndim != 2:
    raise ValueError(f'NIQE takes a 2-D (Y) image, got shape {image.shape}')
  rows, cols = image.shape[0] // BLOCK, image.shape[1] // BLOCK
  if rows * cols < 2:
    raise ValueError(f'NIQE needs at least two whole {BLOCK}x{BLOCK} blocks; a '
                     f'{image.shape[1]}x{image.shape[0]} image has {rows * cols}')
  image = image[:rows * BLOCK, :cols * BLOCK]
  window = gaussian_window()
  features = []
  for scale in (1, 2):
    features.append(block_features(_blocks(_mscn(image, window), BLOCK // scale)))
    if scale == 1:
      image = degradation.resize_numpy(image, 0.5, edges='symmetric').astype(np.float32)
  features = np.concatenate(features, axis=1).astype(np.float64)  # [blocks, 36]
  mu = np.nanmean(features, axis=0)
  complete = features[~np.isnan(features).any(axis=1)]
  cov = np.cov(complete, rowvar=False)
  difference = np.ravel(mu_pristine) - mu
  inverse = np.linalg.pinv((np.asarray(cov_pristine) + cov) / 2)
  return float(math.sqrt(difference @ inverse @ difference))
