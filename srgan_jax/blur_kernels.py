"""Real-ESRGAN's random blur and sinc kernels, drawn on the host in float64 (no JAX).

BasicSR draws them in its dataset workers with numpy in float64 and hands them to the
degradation as float32; the kernels are drawn the same way here, in the data workers
(`data_sources.ProcessRows`), for the same reason: a float32 kernel computed on the device
differs from float64's by several ulps near 1 (a narrow Gaussian is almost a delta), while
float64 cast once to float32 is within half an ulp. Each row's kernels are a function of
(seed, step, global row) alone, so resumed runs and any process count see the same ones.

Shapes: every kernel is [21, 21] (smaller sizes zero padded, centred, as BasicSR pads).
"""

import math

import numpy as np
from scipy import special

GRID = 21
SIZES = tuple(range(7, 22, 2))  # BasicSR's kernel_range: odd sizes 7..21.
TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
         'plateau_aniso')
# Per row: the first order's blur, the second order's blur, the final sinc (or delta).
KERNELS_PER_ROW = 3


def _offsets(size: int):
  """[size, size] column (x) and row (y) offsets from the centre."""
  ax = np.arange(size, dtype=np.float64) - (size - 1) / 2
  return np.meshgrid(ax, ax)


def _quadratic_form(size, sigma_x, sigma_y, theta):
  """(x, y) Sigma^-1 (x, y)^T on the grid, Sigma = R(theta) diag(sx^2, sy^2) R(theta)^T."""
  c, s = math.cos(theta), math.sin(theta)
  rotation = np.array([[c, -s], [s, c]])
  inverse = np.linalg.inv(rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T)
  xx, yy = _offsets(size)
  return inverse[0, 0] * xx * xx + (inverse[0, 1] + inverse[1, 0]) * xx * yy + inverse[1, 1] * yy * yy


def _padded(kernel: np.ndarray) -> np.ndarray:
  kernel = kernel / np.sum(kernel)
  pad = (GRID - kernel.shape[0]) // 2
  return np.pad(kernel, pad)


def gaussian(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
  """BasicSR's `bivariate_Gaussian` (isotropic: sigma_y = sigma_x, theta = 0), [21, 21]."""
  return _padded(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian(size, sigma_x, sigma_y, theta, beta) -> np.ndarray:
  """BasicSR's `bivariate_generalized_Gaussian`: exp(-q^beta / 2), [21, 21]."""
  q = _quadratic_form(size, sigma_x, sigma_y, theta)
  return _padded(np.exp(-0.5 * np.power(q, beta)))


def plateau(size, sigma_x, sigma_y, theta, beta) -> np.ndarray:
  """BasicSR's `bivariate_plateau`: 1 / (1 + q^beta), [21, 21]."""
  q = _quadratic_form(size, sigma_x, sigma_y, theta)
  return _padded(1.0 / (np.power(q, beta) + 1.0))


def sinc(size: int, cutoff: float) -> np.ndarray:
  """BasicSR's `circular_lowpass_kernel`: the ideal circular low-pass, [21, 21]."""
  xx, yy = _offsets(size)
  radius = np.sqrt(xx * xx + yy * yy)
  safe = np.where(radius == 0, 1.0, radius)
  kernel = np.where(radius == 0, cutoff**2 / (4 * np.pi),
                    cutoff * special.j1(cutoff * safe) / (2 * np.pi * safe))
  return _padded(kernel)


def delta() -> np.ndarray:
  """[21, 21] with 1 at the centre: filtering with it changes nothing."""
  kernel = np.zeros((GRID, GRID))
  kernel[GRID // 2, GRID // 2] = 1.0
  return kernel


def random_blur(rng: np.random.Generator, type_probs, sigma_range, betag_range, betap_range,
                sinc_prob: float) -> np.ndarray:
  """One blur kernel as BasicSR's `RealESRGANDataset` draws `kernel1` / `kernel2`.

  Size uniform over 7..21 (odd); with `sinc_prob` a sinc of cutoff U(pi/3, pi) (U(pi/5, pi)
  from size 13); else a type by `type_probs` over TYPES, sigma_x (for the anisotropic ones
  also sigma_y and a rotation U(-pi, pi)) from `sigma_range`, and beta half U(low, 1), half
  U(1, high) of its range.
  """
  size = int(rng.choice(SIZES))
  if rng.uniform() < sinc_prob:
    low = np.pi / 3 if size < 13 else np.pi / 5
    return sinc(size, rng.uniform(low, np.pi))
  kind = TYPES[rng.choice(len(TYPES), p=np.asarray(type_probs) / np.sum(type_probs))]
  sigma_x = rng.uniform(*sigma_range)
  sigma_y, theta = sigma_x, 0.0
  if kind.endswith('aniso'):
    sigma_y, theta = rng.uniform(*sigma_range), rng.uniform(-np.pi, np.pi)
  if kind in ('iso', 'aniso'):
    return gaussian(size, sigma_x, sigma_y, theta)
  beta_range = betag_range if kind.startswith('generalized') else betap_range
  beta = rng.uniform(beta_range[0], 1) if rng.uniform() < 0.5 else rng.uniform(1, beta_range[1])
  family = generalized_gaussian if kind.startswith('generalized') else plateau
  return family(size, sigma_x, sigma_y, theta, beta)


def random_final_sinc(rng: np.random.Generator, final_sinc_prob: float) -> np.ndarray:
  """The final filter: with `final_sinc_prob` a sinc (size 7..21, cutoff U(pi/3, pi)),
  else the delta."""
  if rng.uniform() < final_sinc_prob:
    size = int(rng.choice(SIZES))
    return sinc(size, rng.uniform(np.pi / 3, np.pi))
  return delta()


def row_kernels(config, seed: int, step: int, row: int) -> np.ndarray:
  """[3, 21, 21] float32: (first blur, second blur, final sinc) of global row `row`.

  Args:
    config: `config.degradation` or a dict of its fields.
    seed, step, row: the run's seed, the step, the row of the global batch.
  """
  rng = np.random.default_rng([seed, step, row, 0x6b65726e])  # 'kern': its own stream.
  first = random_blur(rng, *(config[name] for name in (
      'kernel_prob', 'blur_sigma', 'betag_range', 'betap_range', 'sinc_prob')))
  second = random_blur(rng, *(config[name] for name in (
      'kernel_prob2', 'blur_sigma2', 'betag_range2', 'betap_range2', 'sinc_prob2')))
  final = random_final_sinc(rng, config['final_sinc_prob'])
  return np.stack([first, second, final]).astype(np.float32)


def batch_kernels(config, seed: int, step: int, rows) -> np.ndarray:
  """[len(rows), 3, 21, 21] float32 for the global rows `rows` of step `step`."""
  return np.stack([row_kernels(config, seed, step, row) for row in rows])
