"""Bicubic resizing with MATLAB `imresize` semantics, in numpy and in jnp.

MATLAB's `imresize(x, s, 'bicubic')`, which made the official benchmark LR files:
- cubic kernel with a = -0.5; when shrinking (s < 1) it is widened by 1/s (antialiasing);
- output pixel x (1-based) samples input position u = x / s + 0.5 * (1 - 1/s);
- separable: rows (H) first, then columns (W); a uint8 image is rounded to uint8
  after each pass;
- edges replicate (indices clamp), as in the MATLAB release that made the files: with
  clamping, our numpy version reproduces every Set5/Set14 `LR_bicubic/X4` file
  (tests/test_degradation.py). Later MATLAB releases mirror the edges instead
  (`edges='symmetric'`), which NIQE's reference figures were computed with.

`resize_numpy` is the reference (gather and weighted sum). `downscale_uint8_batch` is the
jnp version used inside the jitted step: each pass is a small dense matrix product,
which XLA runs as a matmul on the accelerator.
"""

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

CUBIC_A = -0.5


def cubic(x: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
  ax = np.abs(x)
  ax2, ax3 = ax * ax, ax * ax * ax
  near = (CUBIC_A + 2) * ax3 - (CUBIC_A + 3) * ax2 + 1
  far = CUBIC_A * ax3 - 5 * CUBIC_A * ax2 + 8 * CUBIC_A * ax - 4 * CUBIC_A
  return np.where(ax <= 1, near, np.where(ax <= 2, far, 0.0))


def output_length(in_length: int, scale: float) -> int:
  return int(math.ceil(in_length * scale - 1e-9))


EDGES = ('replicate', 'symmetric')


@lru_cache(maxsize=64)
def contributions(in_length: int, out_length: int, scale: float, edges: str = 'replicate'):
  """Which input pixels feed each output pixel, and with what weights.

  Returns:
    indices: [out_length, taps] int, 0-based, inside [0, in_length - 1]: clamped
      ('replicate') or mirrored about the edge pixels' outer sides ('symmetric':
      -1 -> 0, -2 -> 1, in_length -> in_length - 1).
    weights: [out_length, taps] float64, each row summing to 1.
  """
  if edges not in EDGES:
    raise ValueError(f'edges must be one of {EDGES}, got {edges!r}')
  kernel_width = 4.0 / scale if scale < 1 else 4.0
  x = np.arange(1, out_length + 1, dtype=np.float64)
  u = x / scale + 0.5 * (1 - 1 / scale)
  left = np.floor(u - kernel_width / 2)
  taps = int(math.ceil(kernel_width)) + 2
  indices = left[:, None] + np.arange(taps)[None, :]
  distance = u[:, None] - indices
  weights = scale * cubic(scale * distance) if scale < 1 else cubic(distance)
  weights = weights / weights.sum(axis=1, keepdims=True)
  keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero tap columns.
  indices, weights = indices[:, keep], weights[:, keep]
  indices = indices - 1
  if edges == 'symmetric':
    period = np.mod(indices, 2 * in_length)
    indices = np.where(period < in_length, period, 2 * in_length - 1 - period)
  return np.clip(indices, 0, in_length - 1).astype(np.int64), weights


def _round_to(x: np.ndarray, dtype) -> np.ndarray:
  """MATLAB's conversion to an unsigned integer type: round half away from zero, saturate."""
  return np.clip(np.floor(x + 0.5), 0, np.iinfo(dtype).max).astype(dtype)


def resize_numpy(image: np.ndarray, scale: float, out_shape=None,
                 edges: str = 'replicate', rows: int = 256) -> np.ndarray:
  """MATLAB `imresize(image, scale, 'bicubic')`: the numpy reference.

  Args:
    image: [H, W] or [H, W, C], uint8 or uint16 (rounded to its type after each pass,
      like MATLAB) or float (no rounding).
    scale: resize factor (0.25 shrinks by 4, 4 enlarges by 4).
    out_shape: optional (H', W'); default ceil(H * scale), ceil(W * scale).
    edges: 'replicate' (the release that made the benchmark LR files) or 'symmetric'.
    rows: output rows computed at a time. Each band needs only its own input rows, so
      the float64 temporaries stay a band's size, not the image's (an upscaled photo's
      alpha channel would otherwise take gigabytes); the result does not depend on it.

  Returns:
    The resized image with image's dtype.
  """
  integer = np.issubdtype(image.dtype, np.unsignedinteger)
  h, w = image.shape[:2]
  out_h, out_w = out_shape or (output_length(h, scale), output_length(w, scale))
  row_indices, row_weights = contributions(h, out_h, float(scale), edges)
  col_indices, col_weights = contributions(w, out_w, float(scale), edges)

  def one_pass(x, axis, indices, weights):
    gathered = np.take(x, indices, axis=axis)  # [..., n_out, taps, ...] along `axis`
    shape = [1] * gathered.ndim
    shape[axis], shape[axis + 1] = weights.shape
    x = np.sum(gathered * weights.reshape(shape), axis=axis + 1)
    return _round_to(x, image.dtype) if integer else x

  out = np.empty((out_h, out_w) + image.shape[2:], image.dtype)
  for r0 in range(0, out_h, rows):
    band = one_pass(image, 0, row_indices[r0:r0 + rows], row_weights[r0:r0 + rows])
    out[r0:r0 + rows] = one_pass(band, 1, col_indices, col_weights)
  return out


@lru_cache(maxsize=64)
def resize_matrix(in_length: int, factor: int) -> np.ndarray:
  """Dense [in_length // factor, in_length] float32 matrix of one shrinking pass."""
  out_length = in_length // factor
  indices, weights = contributions(in_length, out_length, 1.0 / factor)
  matrix = np.zeros((out_length, in_length), np.float64)
  np.add.at(matrix, (np.arange(out_length)[:, None], indices), weights)
  return matrix.astype(np.float32)


def downscale_uint8_batch(hr: jnp.ndarray, factor: int, quantize: bool = True) -> jnp.ndarray:
  """MATLAB bicubic downscaling of a batch, inside jit.

  Args:
    hr: [N, H, W, C] uint8 (or float in [0, 255]); H and W multiples of `factor`.
    factor: integer shrink factor.
    quantize: round to uint8 levels after each pass, as MATLAB does for uint8 images.

  Returns:
    [N, H / factor, W / factor, C] float32 in [0, 1].
  """
  _, h, w, _ = hr.shape
  rows = jnp.asarray(resize_matrix(h, factor))
  cols = jnp.asarray(resize_matrix(w, factor))
  x = hr.astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST  # Exact float32 sums: the result is rounded to levels.
  x = jnp.einsum('oh,nhwc->nowc', rows, x, precision=hi)
  if quantize:
    x = jnp.clip(jnp.floor(x + 0.5), 0, 255)
  x = jnp.einsum('pw,nowc->nopc', cols, x, precision=hi)
  if quantize:
    x = jnp.clip(jnp.floor(x + 0.5), 0, 255)
  return x / 255.0
