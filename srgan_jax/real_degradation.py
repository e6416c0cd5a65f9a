"""Real-ESRGAN's second-order degradation (Wang et al. 2021, arXiv 2107.10833), in JAX.

A model trained on bicubic LR sharpens camera noise, blur and JPEG blocks instead of
removing them. Real-ESRGAN synthesises LR that carries them: HR (optionally USM-sharpened)
goes twice through blur -> random resize -> noise -> JPEG, then through the final resize
to the LR size, a sinc filter and JPEG, in either order. Every operation here computes what
BasicSR 1.4.2 computes (`basicsr/models/realesrgan_model.py::feed_data` and the functions
it calls), checked function by function in tests/test_real_degradation.py; where BasicSR
has a quirk (the gray Gaussian noise field shared by a batch, Poisson noise scaled by the
count of distinct levels, a DCT JPEG that is not libjpeg's), it is kept, so that models
and figures carry over.

The random decisions:
- the blur and sinc kernels, per sample, on the host in float64 (`blur_kernels`, as
  BasicSR's dataset draws them), from (seed, step, row);
- the rest, on the device from the step's key (`draw_choices`, a `Choices` pytree): per
  batch, as BasicSR, the resize scales and modes, the noise kind, the second blur and the
  final order; per sample the noise strengths, gray flags and JPEG qualities.
So a batch's LR is a function of (seed, step). `degrade(hr, kernels, choices, ...)`
applies them, deterministically.

Static shapes: the random resizes give hundreds of sizes. Each stage works on a canvas of
fixed size (the largest its ranges allow, rounded up to JPEG's 16-pixel blocks) holding
the image at its top-left with the true size as a traced integer; resizes are matrices
built from that size, filters read their reflected borders from the true edge, and the
canvas outside the image is zero before JPEG, as DiffJPEG's padding is. One compile serves
every scale.
"""

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from srgan_jax import blur_kernels

RESIZE_MODES = ('area', 'bilinear', 'bicubic')  # Drawn uniformly, as BasicSR does.
JPEG_BLOCK = 16  # DiffJPEG pads to 16 (8x8 DCT blocks of 4:2:0 chroma); canvases too.
HIGHEST = jax.lax.Precision.HIGHEST  # Exact float32 products: results are compared to 1e-5.

# The degradation's settings (`config.degradation`, with `kind`): BasicSR's names, the
# values of Real-ESRGAN's train_realesrnet_x4plus.yml. A '2' is the second order.
DEFAULTS = dict(
    # USM-sharpen HR first (51x51 Gaussian, weight 0.5, threshold 10): the degradation's
    # input and the training target, as Real-ESRNet's gt_usm.
    sharpen=True,
    # Blur kernel types iso, aniso, generalized_iso, generalized_aniso, plateau_iso,
    # plateau_aniso (sizes 7..21 odd, uniform; `blur_kernels`); a sinc instead with sinc_prob.
    kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
    blur_sigma=(0.2, 3.0),
    betag_range=(0.5, 4.0),  # Generalized Gaussian beta.
    betap_range=(1.0, 2.0),  # Plateau beta.
    sinc_prob=0.1,
    # Resize up / down / keep with these probabilities, up U(1, hi), down U(lo, 1) of the
    # range; mode area, bilinear or bicubic uniformly. Drawn per batch.
    resize_prob=(0.2, 0.7, 0.1),
    resize_range=(0.15, 1.5),
    gaussian_noise_prob=0.5,  # Else Poisson; per batch.
    noise_range=(1.0, 30.0),  # Gaussian sigma in 0..255 units, per sample.
    poisson_scale_range=(0.05, 3.0),
    gray_noise_prob=0.4,
    jpeg_range=(30.0, 95.0),  # DiffJPEG quality, continuous, per sample.
    second_blur_prob=0.8,
    kernel_prob2=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
    blur_sigma2=(0.2, 1.5),
    betag_range2=(0.5, 4.0),
    betap_range2=(1.0, 2.0),
    sinc_prob2=0.1,
    resize_prob2=(0.3, 0.4, 0.3),
    resize_range2=(0.3, 1.2),
    gaussian_noise_prob2=0.5,
    noise_range2=(1.0, 25.0),
    poisson_scale_range2=(0.05, 2.5),
    gray_noise_prob2=0.4,
    jpeg_range2=(30.0, 95.0),
    # The final sinc filter (else none) after the resize to the LR size; that resize and
    # the last JPEG come in either order with p 0.5.
    final_sinc_prob=0.8,
    # Real-ESRGAN's pool of past training pairs (it keeps 180 per GPU): each step trains on
    # B pairs drawn from it, so one batch mixes several batches' scales and modes. A
    # multiple of the global batch; 0: off. Part of the train state (checkpointed).
    pool_size=0,
    # The HR side degraded in training before the crop (config.data.hr_crop_size) is cut
    # from the pair at a random place, so that blur, resize and JPEG meet image borders as
    # rarely as on a photo (Real-ESRGAN degrades 400x400 for 256x256 crops). A multiple of
    # the scale, at least the crop; smaller images are mirrored out to it, as BasicSR pads
    # them. 0: the crop itself.
    crop_pad_size=0,
    # The probability that a training sample's LR is the paper's bicubic of its target
    # instead, so that the model also learns to keep clean detail (not in Real-ESRGAN: 0).
    clean_prob=0.0,
)


def _uniform(key, low, high):
  return jax.random.uniform(key, (), jnp.float32, low, high)


# ----------------------------- filtering and resizing ----------------------------- #

def reflect_index(index, length):
  """PyTorch's 'reflect' padding index (the edge pixel not repeated), mirrored as often as
  needed; `length` may be traced. index: int array; returns it inside [0, length - 1]."""
  period = jnp.maximum(2 * (length - 1), 1)
  index = jnp.mod(index, period)
  return jnp.where(index < length, index, period - index) * (length > 1)


def filter2d(images, kernels, height, width):
  """BasicSR's `filter2D`: per-sample correlation with reflected borders.

  Computed by FFT: a different kernel per sample is a grouped convolution, which XLA's
  CPU backend runs an order of magnitude slower than the transforms (benchmarks/README.md);
  the FFT's float32 rounding stays far inside the 1e-5 the tests hold it to.

  Args:
    images: [B, Hc, Wc, C] float32 canvas; the image is its top-left height x width.
    kernels: [B, K, K] (K odd), one per sample, or [K, K] for all.
    height, width: the image's size (traced ints allowed).

  Returns:
    [B, Hc, Wc, C]; outside the image it holds values that callers ignore or mask.
  """
  _, canvas_h, canvas_w, _ = images.shape
  k = kernels.shape[-1]
  rows = reflect_index(jnp.arange(canvas_h + k - 1) - k // 2, height)
  cols = reflect_index(jnp.arange(canvas_w + k - 1) - k // 2, width)
  padded = jnp.moveaxis(images[:, rows][:, :, cols], 3, 1)  # [B, C, Hp, Wp]
  size = padded.shape[2:]
  # Circular correlation over (Hp, Wp) wraps only into outputs past the canvas.
  kernel_spectrum = jnp.conj(jnp.fft.rfft2(kernels, s=size))
  if kernels.ndim == 3:  # One kernel per sample: the same for its channels.
    kernel_spectrum = kernel_spectrum[:, None]
  out = jnp.fft.irfft2(jnp.fft.rfft2(padded) * kernel_spectrum, s=size)[:, :, :canvas_h, :canvas_w]
  return jnp.moveaxis(out, 1, 3)


def resize_matrix(in_length, out_length, canvas_in: int, canvas_out: int, mode,
                  source_scale):
  """[canvas_out, canvas_in] float32 matrix of one pass of PyTorch's `F.interpolate`.

  Rows past `out_length` and columns past `in_length` are zero, so a canvas resizes its
  image alone. PyTorch's rules (align_corners=False, no antialiasing):
  - area (0): adaptive average pooling, input [floor(o in/out), ceil((o+1) in/out));
  - bilinear (1): source max(s (o + 0.5) - 0.5, 0), the next pixel clamped;
  - bicubic (2): source s (o + 0.5) - 0.5, Keys' cubic with a = -0.75, taps clamped.
  `source_scale` s is input pixels per output pixel: 1 / scale_factor when the caller gives
  a factor, in / out when it gives a size (PyTorch uses the one it is given).
  """
  o = jnp.arange(canvas_out)
  j = jnp.arange(canvas_in)
  start = (o * in_length) // out_length
  end = ((o + 1) * in_length + out_length - 1) // out_length
  area = ((j >= start[:, None]) & (j < end[:, None])) / (end - start)[:, None]

  centre = source_scale * (o.astype(jnp.float32) + 0.5) - 0.5

  def taps_matrix(index, weights):  # index, weights: [canvas_out, taps]
    index = jnp.clip(index, 0, in_length - 1)
    return jnp.sum((index[:, :, None] == j) * weights[:, :, None], axis=1)

  src = jnp.maximum(centre, 0.0)
  left = jnp.minimum(jnp.floor(src).astype(jnp.int32), in_length - 1)
  frac = jnp.clip(src - left, 0.0, 1.0)
  linear = taps_matrix(jnp.stack([left, left + 1], 1), jnp.stack([1.0 - frac, frac], 1))

  left = jnp.minimum(jnp.floor(centre).astype(jnp.int32), in_length - 1)
  t = jnp.clip(centre - left, 0.0, 1.0)
  a = -0.75
  near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1
  far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  weights = jnp.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], 1)
  cubic = taps_matrix(left[:, None] + jnp.arange(-1, 3), weights)

  matrix = jnp.stack([area, linear, cubic])[mode]
  return jnp.where((o < out_length)[:, None], matrix, 0.0).astype(jnp.float32)


def resize(images, in_size, out_size, canvas_out, mode, source_scale=None):
  """Resizes the top-left in_size image of a canvas to out_size on a canvas_out canvas.

  Args:
    images: [B, Hc, Wc, C].
    in_size, out_size: (height, width), traced ints allowed.
    canvas_out: (Hc', Wc') static.
    mode: index into RESIZE_MODES (traced allowed).
    source_scale: (rows, cols) input pixels per output pixel; default in / out.
  """
  if source_scale is None:
    source_scale = tuple(jnp.asarray(i, jnp.float32) / jnp.asarray(o, jnp.float32)
                         for i, o in zip(in_size, out_size))
  rows = resize_matrix(in_size[0], out_size[0], images.shape[1], canvas_out[0], mode,
                       source_scale[0])
  cols = resize_matrix(in_size[1], out_size[1], images.shape[2], canvas_out[1], mode,
                       source_scale[1])
  x = jnp.einsum('oh,bhwc->bowc', rows, images, precision=HIGHEST)
  return jnp.einsum('pw,bowc->bopc', cols, x, precision=HIGHEST)


def inside(shape, height, width):
  """[1, Hc, Wc, 1] bool: the canvas pixels inside the top-left height x width image."""
  rows = jnp.arange(shape[1])[:, None] < height
  cols = jnp.arange(shape[2])[None, :] < width
  return (rows & cols)[None, :, :, None]


# -------------------------------------- noise -------------------------------------- #

def _divide(x, divisor):
  """x / divisor with IEEE division, as PyTorch computes it.

  XLA rewrites division by a broadcast value into multiplication by its reciprocal, one
  ulp off in a third of the values; a full-size divisor behind an optimisation barrier
  keeps the division, so the noise equals BasicSR's bit for bit.
  """
  shape = jnp.broadcast_shapes(jnp.shape(x), jnp.shape(divisor))
  divisor = jax.lax.optimization_barrier(jnp.broadcast_to(jnp.asarray(divisor, x.dtype), shape))
  return x / divisor


def gaussian_noise(images, sigma, gray, color_field, gray_field):
  """BasicSR's `add_gaussian_noise_pt` (clip, no rounding) with its draws given.

  Args:
    images: [B, H, W, C] in [0, 1].
    sigma: [B] in 0..255 units; gray: [B] float, 1 for gray noise.
    color_field: [B, H, W, C] standard normal; gray_field: [H, W] standard normal, one
      field for the whole batch (BasicSR's quirk), scaled by each sample's sigma.
  """
  sigma = sigma[:, None, None, None]
  gray = gray[:, None, None, None]
  noise = _divide(color_field * sigma, 255.0)
  noise_gray = _divide(gray_field[None, :, :, None] * sigma, 255.0)
  noise = noise * (1 - gray) + noise_gray * gray
  return jnp.clip(images + noise, 0.0, 1.0)


def _distinct_levels(levels, valid):
  """[B] number of distinct uint8 levels each sample has inside `valid`."""
  def one(sample_levels, sample_valid):
    seen = jnp.zeros(256, jnp.int32).at[sample_levels.ravel()].add(
        sample_valid.ravel().astype(jnp.int32))
    return jnp.sum(seen > 0)
  valid = jnp.broadcast_to(valid, levels.shape)
  return jax.vmap(one)(levels, valid)


def _power_of_two_exponent(count):
  """ceil(log2(count)) for count >= 1, exactly (BasicSR takes 2^ that in float64)."""
  count = jnp.maximum(count, 1).astype(jnp.uint32)
  return (32 - jax.lax.clz(count - 1)).astype(jnp.int32)


# BasicSR's Poisson rates are level / 255 * 2^e: 256 uint8 levels, e in 0..8 (2^e covers
# the distinct level count). 2,304 rates in all, so their CDFs are a table and a count is
# a binary search of one uniform draw in its rate's row: nine gathers per value, where
# `jax.random.poisson` loops over the whole array until its slowest value is accepted.
_POISSON_EXPONENTS = 9
_POISSON_COUNTS = 512  # P(count >= 512) at the largest rate (256) is below 1e-20.


@functools.cache
def poisson_cdf_table():
  """[9 * 256, 512] float32: row e * 256 + level holds P(count <= n), n = 0..511, for the
  rate float32(level / 255) * 2^e (the rate `_shot_noise` computes), from float64."""
  levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
  rates = levels[None, :] * (2.0 ** np.arange(_POISSON_EXPONENTS, dtype=np.float32))[:, None]
  counts = np.arange(_POISSON_COUNTS, dtype=np.float64)
  cdf = special.pdtr(counts[None, :], rates.reshape(-1, 1).astype(np.float64))
  return cdf.astype(np.float32)


def poisson_counts(uniform, levels, exponent):
  """Poisson counts at the rates level / 255 * 2^exponent by inverse CDF.

  Args:
    uniform: [B, H, W, C] float32 in [0, 1); the count is min{n: u < P(count <= n)}.
    levels: [B, H, W, C] int32 in 0..255; exponent: [B] int32 in 0..8.
  Returns:
    [B, H, W, C] float32 counts.
  """
  table = jnp.asarray(poisson_cdf_table()).reshape(-1)
  row_start = (exponent[:, None, None, None] * 256 + levels) * _POISSON_COUNTS
  count = jnp.zeros(levels.shape, jnp.int32)
  step = _POISSON_COUNTS // 2
  while step:  # Invariant: count = #{n < count: cdf[n] <= u}, the answer's lower bound.
    probe = count + step
    count = jnp.where(table[row_start + probe - 1] <= uniform, probe, count)
    step //= 2
  return count.astype(jnp.float32)


def _shot_noise(images, valid, draw):
  """Poisson noise of one image kind (colour [B,H,W,3] or gray [B,H,W,1]); images are
  rounded to uint8 levels first and scaled by the next power of two of their distinct
  level count, as BasicSR does. `draw(levels, exponent)` gives the counts."""
  levels = jnp.clip(jnp.round(images * 255.0), 0, 255).astype(jnp.int32)
  exponent = _power_of_two_exponent(_distinct_levels(levels, valid))
  vals = jnp.left_shift(1, exponent).astype(jnp.float32)[:, None, None, None]
  rounded = _divide(levels.astype(jnp.float32), 255.0)
  return _divide(draw(levels, exponent), vals) - rounded


def grayscale(images):
  """torchvision's `rgb_to_grayscale` (ITU-R 601-2 luma), [B, H, W, 1]."""
  r, g, b = images[..., 0:1], images[..., 1:2], images[..., 2:3]
  return 0.2989 * r + 0.587 * g + 0.114 * b


def poisson_noise(images, scale, gray, valid, draw: Callable):
  """BasicSR's `add_poisson_noise_pt` (clip, no rounding) with its draws given.

  Args:
    images: [B, H, W, 3] in [0, 1]; valid: bool broadcastable to it (distinct levels are
      counted there only).
    scale: [B] noise scale; gray: [B] float, 1 for gray noise.
    draw: (levels, exponent) -> Poisson counts (float) at the rates level / 255 * 2^exponent
      (levels [B, H, W, C] int32, exponent [B] int32), called for the gray then the colour
      levels; `poisson_counts` with a uniform draw in training.
  """
  noise_gray = _shot_noise(grayscale(images), valid[..., :1], draw)
  noise = _shot_noise(images, valid, draw)
  gray = gray[:, None, None, None]
  noise = noise * (1 - gray) + noise_gray * gray
  return jnp.clip(images + noise * scale[:, None, None, None], 0.0, 1.0)


# -------------------------------------- JPEG -------------------------------------- #

_Y_TABLE = np.array(
    [[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
     [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
     [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
     [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]],
    np.float32).T  # JPEG Annex K's luminance table, transposed as DiffJPEG holds it.
_C_TABLE = np.full((8, 8), 99, np.float32)
_C_TABLE[:4, :4] = np.array([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99],
                             [47, 66, 99, 99]], np.float32).T
_TO_YCBCR = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5],
                      [0.5, -0.418688, -0.081312]], np.float32).T
_FROM_YCBCR = np.array([[1.0, 0.0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]],
                       np.float32).T


def _dct_tensors():
  """DiffJPEG's float DCT: forward [x, y, u, v] and its scale, inverse [u, v, x, y]."""
  i = np.arange(8)
  basis = np.cos((2 * i[:, None] + 1) * i[None, :] * np.pi / 16)  # [pixel, frequency]
  forward = np.einsum('xu,yv->xyuv', basis, basis).astype(np.float32)
  alpha = np.array([1 / np.sqrt(2)] + [1] * 7)
  scale = (np.outer(alpha, alpha) * 0.25).astype(np.float32)
  inverse = np.einsum('ux,vy->xyuv', basis, basis).astype(np.float32)  # [freq x,y; pixel u,v]
  return forward, scale, np.outer(alpha, alpha).astype(np.float32), inverse


_DCT, _DCT_SCALE, _IDCT_ALPHA, _IDCT = _dct_tensors()


def quality_factor(quality):
  """DiffJPEG's continuous quality -> table multiplier (no rounding or clipping)."""
  return jnp.where(quality < 50, 5000.0 / quality, 200.0 - quality * 2) / 100.0


def _blocks_round_trip(channel, table):
  """Forward DCT, quantise with rounding, dequantise, inverse DCT on [B, H, W] (H, W
  multiples of 8); table: [B, 8, 8]."""
  batch, height, width = channel.shape
  blocks = channel.reshape(batch, height // 8, 8, width // 8, 8)
  coefficients = _DCT_SCALE * jnp.einsum('bixjy,xyuv->bijuv', blocks - 128.0, _DCT,
                                         precision=HIGHEST)
  table = table[:, None, None]
  quantized = jnp.round(coefficients / table) * table
  pixels = 0.25 * jnp.einsum('bijxy,xyuv->bijuv', quantized * _IDCT_ALPHA, _IDCT,
                             precision=HIGHEST) + 128.0
  return jnp.transpose(pixels, (0, 1, 3, 2, 4)).reshape(batch, height, width)


def jpeg(images, quality):
  """BasicSR's `DiffJPEG(differentiable=False)` round trip.

  Args:
    images: [B, H, W, 3] in [0, 1].
    quality: [B] float in (0, 100], continuous.

  Returns:
    [B, H, W, 3] in [0, 1]: zero padding to multiples of 16, YCbCr, 4:2:0 by 2x2
    averages, float DCT, Annex-K tables times `quality_factor`, rounding, and back with
    nearest chroma upsampling.
  """
  batch, height, width, _ = images.shape
  pad_h, pad_w = _round_up(height, JPEG_BLOCK) - height, _round_up(width, JPEG_BLOCK) - width
  x = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
  full_h, full_w = height + pad_h, width + pad_w
  ycbcr = jnp.einsum('bhwc,cd->bhwd', x * 255.0, _TO_YCBCR, precision=HIGHEST)
  ycbcr = ycbcr + jnp.asarray([0.0, 128.0, 128.0])
  chroma = ycbcr[..., 1:].reshape(batch, full_h // 2, 2, full_w // 2, 2, 2).mean(axis=(2, 4))
  factor = quality_factor(quality.astype(jnp.float32))[:, None, None]
  y = _blocks_round_trip(ycbcr[..., 0], _Y_TABLE * factor)
  cb = _blocks_round_trip(chroma[..., 0], _C_TABLE * factor)
  cr = _blocks_round_trip(chroma[..., 1], _C_TABLE * factor)
  upsample = lambda c: jnp.repeat(jnp.repeat(c, 2, axis=1), 2, axis=2)
  ycbcr = jnp.stack([y, upsample(cb), upsample(cr)], axis=-1)
  rgb = jnp.einsum('bhwc,cd->bhwd', ycbcr + jnp.asarray([0.0, -128.0, -128.0]), _FROM_YCBCR,
                   precision=HIGHEST)
  return (jnp.clip(rgb, 0.0, 255.0) / 255.0)[:, :height, :width]


# -------------------------------------- USM -------------------------------------- #

def usm_kernel(radius: int = 51):
  """[radius, radius] Gaussian of OpenCV's `getGaussianKernel(radius, 0)` (sigma =
  0.3 ((radius - 1) / 2 - 1) + 0.8), as BasicSR's USMSharp builds it."""
  sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8
  x = np.arange(radius) - (radius - 1) / 2
  g = np.exp(-x * x / (2 * sigma * sigma))
  g = g / g.sum()
  return np.outer(g, g).astype(np.float32)


def usm_sharpen(images, height=None, width=None, weight: float = 0.5, threshold: float = 10,
                radius: int = 51):
  """BasicSR's `USMSharp`: sharpen where the detail exceeds `threshold` levels.

  images: [B, H, W, C] in [0, 1], or a canvas holding height x width at its top-left
  (traced allowed); returns the same shape.
  """
  kernel = jnp.asarray(usm_kernel(radius))
  height = images.shape[1] if height is None else height
  width = images.shape[2] if width is None else width
  residual = images - filter2d(images, kernel, height, width)
  mask = (jnp.abs(residual) * 255 > threshold).astype(jnp.float32)
  soft_mask = filter2d(mask, kernel, height, width)
  sharp = jnp.clip(images + weight * residual, 0.0, 1.0)
  return soft_mask * sharp + (1 - soft_mask) * images


# ------------------------------------ the pipeline ------------------------------------ #

class Stage(NamedTuple):
  """One degradation order's draws. Scalars are per batch, [B] arrays per sample."""
  blur: Any  # bool: filter with the order's kernel (the first order always does)
  resize_scale: Any  # float32
  resize_mode: Any  # int32 index into RESIZE_MODES
  gaussian: Any  # bool: Gaussian noise, else Poisson
  noise_sigma: Any  # [B] Gaussian sigma in 0..255 units
  poisson_scale: Any  # [B]
  gray_noise: Any  # [B] float 0/1
  noise_key: Any  # PRNG key of the noise fields and Poisson draws
  jpeg_quality: Any  # [B]


class Choices(NamedTuple):
  """Every random decision of one batch's degradation but its kernels (`draw_choices`)."""
  first: Stage
  second: Stage
  final_resize_first: Any  # bool: resize + sinc, then JPEG; else JPEG, then resize + sinc
  final_mode: Any  # int32
  final_jpeg_quality: Any  # [B]


def _draw_stage(key, c, batch: int, second: bool) -> Stage:
  suffix = '2' if second else ''
  get = lambda name: c[name + suffix]
  keys = jax.random.split(key, 11)
  updown = jax.random.choice(keys[0], 3, p=jnp.asarray(get('resize_prob'), jnp.float32))
  low, high = get('resize_range')
  scale = jnp.stack([_uniform(keys[1], 1.0, high), _uniform(keys[2], low, 1.0),
                     jnp.float32(1.0)])[updown]
  per_sample = lambda k, lo, hi: jax.random.uniform(k, (batch,), jnp.float32, lo, hi)
  return Stage(
      blur=(jax.random.uniform(keys[3]) < c['second_blur_prob']) if second else jnp.bool_(True),
      resize_scale=scale,
      resize_mode=jax.random.randint(keys[4], (), 0, len(RESIZE_MODES)),
      gaussian=jax.random.uniform(keys[5]) < get('gaussian_noise_prob'),
      noise_sigma=per_sample(keys[6], *get('noise_range')),
      poisson_scale=per_sample(keys[7], *get('poisson_scale_range')),
      gray_noise=(jax.random.uniform(keys[8], (batch,)) < get('gray_noise_prob')).astype(
          jnp.float32),
      noise_key=keys[9],
      jpeg_quality=per_sample(keys[10], *get('jpeg_range')))


def draw_choices(key, config, batch: int) -> Choices:
  """Every random decision of a batch of `batch` samples but the kernels, from `key`.

  Args:
    key: PRNG key.
    config: `config.degradation` or a dict of its fields (DEFAULTS).
    batch: samples in the batch (the global batch: the draws do not depend on sharding).
  """
  first_key, second_key, order_key, mode_key, jpeg_key = jax.random.split(key, 5)
  return Choices(
      first=_draw_stage(first_key, config, batch, second=False),
      second=_draw_stage(second_key, config, batch, second=True),
      final_resize_first=jax.random.uniform(order_key) < 0.5,
      final_mode=jax.random.randint(mode_key, (), 0, len(RESIZE_MODES)),
      final_jpeg_quality=jax.random.uniform(jpeg_key, (batch,), jnp.float32,
                                            *config['jpeg_range2']))


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _noise(images, stage: Stage, height, width):
  """Gaussian or Poisson noise on a canvas, as the stage drew it; zero outside."""
  valid = inside(images.shape, height, width)
  color_key, gray_key, poisson_key = jax.random.split(stage.noise_key, 3)
  batch, canvas_h, canvas_w, _ = images.shape

  def gaussian(x):
    return gaussian_noise(x, stage.noise_sigma, stage.gray_noise,
                          jax.random.normal(color_key, x.shape),
                          jax.random.normal(gray_key, (canvas_h, canvas_w)))

  def poisson(x):
    # The gray rates have one channel, the colour rates three: each gets its own key.
    def draw(levels, exponent):
      key = jax.random.fold_in(poisson_key, levels.shape[-1])
      return poisson_counts(jax.random.uniform(key, levels.shape), levels, exponent)
    return poisson_noise(x, stage.poisson_scale, stage.gray_noise, valid, draw)

  out = jax.lax.cond(stage.gaussian, gaussian, poisson, images)
  return jnp.where(valid, out, 0.0)


def _jpeg_canvas(images, quality, height, width):
  """Clamp and JPEG the top-left image of a canvas, zeroed outside as DiffJPEG pads."""
  valid = inside(images.shape, height, width)
  return jpeg(jnp.where(valid, jnp.clip(images, 0.0, 1.0), 0.0), quality)


def _resized_length(length, scale, canvas: int, high: float):
  """floor(length * scale) (at least 1), traced, and the static canvas that holds it for
  any scale up to `high` (rounded up to JPEG blocks)."""
  out = jnp.maximum(jnp.floor(length * scale).astype(jnp.int32), 1)
  return out, _round_up(max(canvas, int(math.floor(canvas * high)) + 1), JPEG_BLOCK)


def degrade(hr, kernels, choices: Choices, config, scale: int, size=None):
  """Real-ESRGAN's degradation of a batch, as BasicSR's `feed_data` computes it.

  Args:
    hr: [B, H, W, 3] float32 in [0, 1]: the HR images, or a canvas holding them at its
      top-left (see `size`); H and W multiples of `scale`.
    kernels: [B, 3, 21, 21] float32: each sample's first blur, second blur and final
      sinc (`blur_kernels.batch_kernels`).
    choices: `draw_choices(key, config, B)` (or chosen by a test).
    config: `config.degradation` or a dict of its fields (DEFAULTS).
    scale: the SR factor.
    size: (height, width) of the images inside the canvas, multiples of `scale`, traced
      allowed (one compile serves a set of photos of many sizes); default (H, W).

  Returns:
    (lr, target): lr [B, H/scale, W/scale, 3] float32 on uint8 levels (k / 255), the LR of
    the top-left size / scale; target [B, H, W, 3], the HR the model should produce
    (USM-sharpened when config.sharpen).
  """
  _, canvas_h, canvas_w, _ = hr.shape
  height, width = size if size is not None else (canvas_h, canvas_w)
  out_h, out_w = height // scale, width // scale
  target = usm_sharpen(hr, height, width) if config['sharpen'] else hr

  # The first order, on the HR grid.
  first = choices.first
  x = filter2d(target, kernels[:, 0], height, width)
  h1, canvas_h1 = _resized_length(height, first.resize_scale, canvas_h, config['resize_range'][1])
  w1, canvas_w1 = _resized_length(width, first.resize_scale, canvas_w, config['resize_range'][1])
  inverse = 1.0 / first.resize_scale  # PyTorch maps coordinates by the factor it is given.
  x = resize(x, (height, width), (h1, w1), (canvas_h1, canvas_w1), first.resize_mode,
             (inverse, inverse))
  x = _noise(x, first, h1, w1)
  x = _jpeg_canvas(x, first.jpeg_quality, h1, w1)

  # The second order, towards the LR grid.
  second = choices.second
  kernel = jnp.where(second.blur, kernels[:, 1], blur_kernels.delta().astype(np.float32))
  x = filter2d(x, kernel, h1, w1)
  lr_canvas = (canvas_h // scale, canvas_w // scale)
  h2, canvas_h2 = _resized_length(out_h, second.resize_scale, lr_canvas[0],
                                  config['resize_range2'][1])
  w2, canvas_w2 = _resized_length(out_w, second.resize_scale, lr_canvas[1],
                                  config['resize_range2'][1])
  x = resize(x, (h1, w1), (h2, w2), (canvas_h2, canvas_w2), second.resize_mode)
  x = _noise(x, second, h2, w2)

  def resize_and_sinc(x):
    x = resize(x, (h2, w2), (out_h, out_w), lr_canvas, choices.final_mode)
    return filter2d(x, kernels[:, 2], out_h, out_w)

  def resize_sinc_jpeg(x):
    return _jpeg_canvas(resize_and_sinc(x), choices.final_jpeg_quality, out_h, out_w)

  def jpeg_resize_sinc(x):
    return resize_and_sinc(_jpeg_canvas(x, choices.final_jpeg_quality, h2, w2))

  x = jax.lax.cond(choices.final_resize_first, resize_sinc_jpeg, jpeg_resize_sinc, x)
  return jnp.clip(jnp.round(x * 255.0), 0, 255) / 255.0, target


def degrade_uint8_batch(key, hr_uint8, kernels, config, scale: int):
  """Draws the choices and applies the degradation, inside the step.

  Args:
    key: the step's PRNG key.
    hr_uint8: [B, H, W, 3] uint8 HR crops.
    kernels: [B, 3, 21, 21] float32 (`blur_kernels.batch_kernels`).

  Returns:
    (lr [B, H/s, W/s, 3] float32 in [0, 1], target [B, H, W, 3] float32 in [0, 1]).
  """
  choices = draw_choices(key, config, hr_uint8.shape[0])
  return degrade(hr_uint8.astype(jnp.float32) / 255.0, kernels, choices, config, scale)
