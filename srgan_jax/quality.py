"""Image-quality metrics of an SR image against its HR image, each knowing its direction.

| name | what | better |
|---|---|---|
| psnr_y, ssim_y | PSNR and SSIM on Y (MATLAB's `rgb2ycbcr`, rounded), `scale` pixels shaved | higher |
| psnr_rgb | PSNR on RGB, shaved alike | higher |
| lpips_alex, lpips_vgg | LPIPS v0.1 on RGB (`models.lpips`), shaved alike | lower |
| niqe | NIQE of SR alone, on Y, `scale` pixels shaved (`niqe`) | lower |
| grid | a pixel shuffle's grid in SR alone, in luma levels (`pixel_grid`), whole image | lower |

A `Scorer` loads what its metrics need (public weights through `srgan_jax.weights`) when
it is made, so a missing file stops an evaluation before any image is computed.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from skimage.metrics import structural_similarity

from srgan_jax import losses, niqe as niqe_lib, weights
from srgan_jax.models import lpips


@dataclasses.dataclass(frozen=True)
class Metric:
  name: str
  higher_is_better: bool
  weights: tuple[str, ...] = ()  # Public weights it needs (`srgan_jax.weights` names).


METRICS = {m.name: m for m in (
    Metric('psnr_y', True), Metric('ssim_y', True), Metric('psnr_rgb', True),
    Metric('lpips_alex', False, ('alexnet_torchvision', 'lpips_alex')),
    Metric('lpips_vgg', False, ('vgg16_torchvision', 'lpips_vgg')),
    Metric('niqe', False, ('niqe_pristine',)),
    Metric('grid', False),
)}
DEFAULT = ('psnr_y', 'ssim_y')


def rgb_to_y(image: np.ndarray) -> np.ndarray:
  """[H, W, 3] uint8 -> [H, W] float64 Y in 16..235, rounded to integers like MATLAB."""
  x = image.astype(np.float64)
  y = 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
  return np.floor(y + 0.5)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return float('inf') if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


SSIM_WINDOW = 11  # Side of the Gaussian window; images must be at least this after shaving.


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
  """Mean SSIM of two [H, W] images (Wang et al. 2004, their reference settings).

  scikit-image with these arguments is Wang et al.'s `ssim_index`: an 11x11 Gaussian
  window of sigma 1.5 (its default truncation at 3.5 sigma), population covariances,
  K1 = 0.01, K2 = 0.03, and the mean over the window positions inside the image.
  """
  return float(structural_similarity(
      a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False, data_range=peak))


def pixel_grid(image: np.ndarray, period: int = 4) -> float:
  """How strongly [H, W, 3] uint8 shows a grid of `period` pixels, in 0..255 luma levels.

  A x4 pixel shuffle that has not learnt to hide its phases leaves each of the 16 (row
  mod 4, column mod 4) output positions a little brighter or darker than its neighbours:
  a fine checkerboard or stripes. The measure: the standard deviation of the period^2
  `losses.phase_means` (the mean of luma minus its 5x5 box blur at each position). Natural
  images score near 0.25 (Set14's HR) and real texture averages out; a visible grid
  scores above 1. The whole image is scored (shaving changes which border pixels count,
  not the phases).
  """
  return float(np.std(np.asarray(losses.phase_means(jnp.asarray(image)[None], period))))


def check_names(names) -> tuple[str, ...]:
  names = tuple(names)
  unknown = [n for n in names if n not in METRICS]
  if unknown or not names:
    raise ValueError(f'unknown metrics {unknown}; choose from {tuple(METRICS)}')
  return names


class LpipsDistance:
  """LPIPS v0.1 of two uint8 [H, W, 3] images, jitted (one compile per image shape)."""

  def __init__(self, backbone: str, cache_dir: str = ''):
    net = 'alexnet_torchvision' if backbone == 'alex' else 'vgg16_torchvision'
    self.variables = jax.device_put(lpips.variables(
        weights.load(net, cache_dir), weights.load(f'lpips_{backbone}', cache_dir)))
    module = lpips.LPIPS(backbone)
    self._apply = jax.jit(lambda v, a, b: module.apply(v, a, b))

  def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
    to_unit = lambda x: jnp.asarray(x[None], jnp.float32) / 127.5 - 1.0
    return float(self._apply(self.variables, to_unit(sr), to_unit(hr))[0])


# Metrics that score SR alone (a set with LR and no HR gets only these).
NO_REFERENCE = frozenset({'niqe', 'grid'})


class Scorer:
  """Scores uint8 [H, W, 3] SR against HR with the named metrics, under the protocol.

  Args:
    names: metric names (keys of METRICS).
    scale: the SR factor: `scale` pixels are shaved at every border before scoring.
    cache_dir: where converted public weights are (default: `weights.cache_dir()`).

  Raises `weights.MissingWeightsError` at once, naming the file and the fetch command,
  when a metric's weights are not there.
  """

  def __init__(self, names, scale: int, cache_dir: str = ''):
    self.names, self.scale = check_names(names), scale
    self._lpips = {n: LpipsDistance(n.split('_')[1], cache_dir)
                   for n in self.names if n.startswith('lpips_')}
    self._niqe = None
    if 'niqe' in self.names:
      pristine = weights.load('niqe_pristine', cache_dir)
      self._niqe = lambda y: niqe_lib.niqe(y, pristine['mu'], pristine['cov'])

  def without_reference(self, sr: np.ndarray) -> dict:
    """The no-reference metrics among `names` of uint8 [H, W, 3] SR alone (shaved alike)."""
    s = self.scale
    scorers = {'niqe': lambda: self._niqe(rgb_to_y(sr[s:-s, s:-s])),
               'grid': lambda: pixel_grid(sr, s)}
    return {name: scorers[name]() for name in self.names if name in NO_REFERENCE}

  def __call__(self, sr: np.ndarray, hr: np.ndarray) -> dict:
    if sr.shape != hr.shape:
      raise ValueError(f'SR {sr.shape} and HR {hr.shape} differ in shape')
    s = self.scale
    whole_sr = sr
    sr, hr = sr[s:-s, s:-s], hr[s:-s, s:-s]
    sr_y, hr_y = rgb_to_y(sr), rgb_to_y(hr)
    scorers: dict[str, Callable[[], float]] = {
        'psnr_rgb': lambda: psnr(sr, hr),
        'psnr_y': lambda: psnr(sr_y, hr_y),
        'ssim_y': lambda: ssim(sr_y, hr_y),
        'niqe': lambda: self._niqe(sr_y),
        'grid': lambda: pixel_grid(whole_sr, s),
    }
    return {name: self._lpips[name](sr, hr) if name in self._lpips else scorers[name]()
            for name in self.names}
