"""Pixel shuffles, and layers computed in another form with the same parameters and results.

On a GPU the narrowest convolution of SRGAN runs far below the device's rate
(`../shared/DESIGN.md`): G's 9x9 output conv, 64 -> 3 channels on the HR grid.
`PixelShuffleConv` computes exactly what the plain conv applied to `pixel_shuffle(x, 2)`
computes, from a kernel of the same name, shape and initialiser, regrouped so that the
convolution runs on x's own grid with 4 times the output channels (9x9, 64 -> 3 becomes
5x5, 256 -> 12), or on a grid twice coarser with 16 times (3x3, 1024 -> 48), then shuffled.

Since parameters are shared, a checkpoint trained with one form runs with any other;
which is faster is a property of the device, the compiler and the model's width
(`benchmarks/train_step.py --output_convs`, benchmarks/README.md).

`max_pool` is VGG's 2x2 pooling by reshape and max instead of `reduce_window`, whose
gradient XLA computes with select-and-scatter (on the CPU: index tensors and a scatter,
several times slower than this form). Values and gradients are bit-equal to
`nn.max_pool`'s.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

NHWC_HWIO = ('NHWC', 'HWIO', 'NHWC')


def pixel_shuffle(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Rearranges channels into space (depth to space).

  Args:
    x: [N, H, W, C * factor**2], channels ordered (row offset, column offset, C).
    factor: upscaling factor.

  Returns:
    [N, H * factor, W * factor, C].
  """
  n, h, w, c = x.shape
  c_out = c // (factor * factor)
  x = x.reshape(n, h, w, factor, factor, c_out)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(n, h * factor, w * factor, c_out)


def coarsen_phases(x: jnp.ndarray, factor: int, phases: int) -> jnp.ndarray:
  """Regroups a phase grid onto a grid `factor` times coarser, in one transpose.

  Equals space-to-depth by `factor * phases` of `pixel_shuffle(x, phases)`, without the
  fine grid in between.

  Args:
    x: [N, H, W, phases*phases*C], channels in `pixel_shuffle` order.
    factor: how much coarser the output grid is (H and W multiples of it).
    phases: the phases per side that x holds.

  Returns:
    [N, H/factor, W/factor, (factor*phases)**2 * C], channels in `pixel_shuffle` order.
  """
  n, h, w, c = x.shape
  c //= phases * phases
  x = x.reshape(n, h // factor, factor, w // factor, factor, phases, phases, c)
  # (row block, column block, row phase, column phase) -> (row block, row phase, ...).
  x = x.transpose(0, 1, 3, 2, 5, 4, 6, 7)
  return x.reshape(n, h // factor, w // factor, (factor * phases)**2 * c)


def _regroup(kernel: jnp.ndarray, index: np.ndarray) -> jnp.ndarray:
  """Gathers kernel taps by a per-dimension index table; out-of-range taps become 0.

  Args:
    kernel: [k, k, C, O].
    index: [m, r_in, r_out] ints: index[p, a_in, a_out] is the original tap (along one
      spatial dimension) that regrouped tap p reads for input phase a_in and output
      phase a_out; outside [0, k) means none.

  Returns:
    [m, m, r_in*r_in*C, r_out*r_out*O], input channels ordered (row phase, column
    phase, C) and output channels (row phase, column phase, O), as `pixel_shuffle` orders them.
  """
  k, _, c, o = kernel.shape
  m, r_in, r_out = index.shape
  valid = (index >= 0) & (index < k)
  safe = np.clip(index, 0, k - 1)
  # Axes of the gather: (p, a_in, a_out, q, b_in, b_out, C, O).
  taps = kernel[safe[:, :, :, None, None, None], safe[None, None, None, :, :, :]]
  mask = valid[:, :, :, None, None, None] & valid[None, None, None, :, :, :]
  taps = jnp.where(mask[..., None, None], taps, jnp.zeros((), kernel.dtype))
  taps = taps.transpose(0, 3, 1, 4, 6, 2, 5, 7)  # (p, q, a_in, b_in, C, a_out, b_out, O)
  return taps.reshape(m, m, r_in * r_in * c, r_out * r_out * o)


def subpixel_kernel(kernel: jnp.ndarray, factor: int) -> tuple[jnp.ndarray, int, int]:
  """Regroups a stride-1 'SAME' kernel to run on a grid `factor` times coarser.

  Fine row factor*i + a (output phase a) reads fine rows factor*i + a + u - before
  (u < k), which is coarse row i + p at input phase a_in, where
  factor*p + a_in = a + u - before.

  Returns:
    (kernel [m, m, f*f*C, f*f*O], coarse padding before, coarse padding after).
  """
  k = kernel.shape[0]
  before = (k - 1) // 2  # 'SAME' for an odd kernel.
  low = (-before) // factor
  high = (factor - 1 + k - 1 - before) // factor
  p = np.arange(low, high + 1)[:, None, None]
  a_in = np.arange(factor)[None, :, None]
  a_out = np.arange(factor)[None, None, :]
  return _regroup(kernel, factor * p + a_in - a_out + before), -low, high


class PixelShuffleConv(nn.Module):
  """`nn.Conv(features, (k, k))` applied to `pixel_shuffle(x, phases)`, on one of several grids.

  grid = 1: on the fine grid, as written: the shuffle, then the conv.
  grid = phases: on x's own grid, with the kernel regrouped into phases**2 times the
    output channels (9x9, 64 -> 3 becomes 5x5, 256 -> 12 for 2 phases), then the shuffle.
  grid = f * phases: on a grid f times coarser than x (one transpose regroups x there),
    grid**2 times the output channels (3x3, 1024 -> 48 for grid 4), then a x`grid` shuffle.
  All compute the same function. Params ('kernel' [k, k, C, features], 'bias' [features])
  are those of the nn.Conv: same names, shapes and initialisers, so checkpoints are shared.

  Attributes:
    features: output channels (3 for SRGAN's output layer).
    kernel_size: odd side of the square kernel, applied with 'SAME' zero padding.
    grid: how much coarser than the output the conv runs: 1, `phases` or a multiple of it.
    phases: the pixel shuffle factor that x holds.
    dtype: compute dtype (params stay float32).
  """

  features: int
  kernel_size: int
  grid: int = 1
  phases: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    """Maps [N, h, w, p*p*C] (channels in pixel_shuffle order) to [N, p*h, p*w, features]."""
    k, grid, phases = self.kernel_size, self.grid, self.phases
    if k % 2 != 1:
      raise ValueError(f'PixelShuffleConv needs an odd kernel_size, got {k}')
    if grid != 1 and grid % phases:
      raise ValueError(f'grid must be 1 or a multiple of phases ({phases}), got {grid}')
    channels = x.shape[-1] // phases**2
    kernel = self.param('kernel', nn.linear.default_kernel_init,
                        (k, k, channels, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,), jnp.float32)
    x = x.astype(self.dtype)
    if grid == 1:
      x, padding = pixel_shuffle(x, phases), 'SAME'
    else:
      if grid > phases:
        x = coarsen_phases(x, grid // phases, phases)
      kernel, before, after = subpixel_kernel(kernel, grid)
      padding = ((before, after), (before, after))
    kernel = kernel.astype(self.dtype)
    y = lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=NHWC_HWIO)
    y = y + jnp.tile(bias, grid**2).astype(self.dtype)
    return y if grid == 1 else pixel_shuffle(y, grid)


def max_pool(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Max over non-overlapping factor x factor windows, as `nn.max_pool(x, (f, f), (f, f))`.

  Rows and columns past the last whole window are dropped ('VALID'). The gradient goes
  to the first maximum of each window in row-major order, as select-and-scatter sends
  it, so ties (common in bf16) are broken the same way. The gradient is a custom VJP:
  reverse mode only (`jax.jvp` through it raises, where `nn.max_pool` would not).

  Args:
    x: [N, H, W, C].
    factor: window side and stride.

  Returns:
    [N, H // factor, W // factor, C].
  """
  n, h, w, c = x.shape
  return _max_pool_whole(x[:, :h - h % factor, :w - w % factor], factor)


def _windows(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """[N, H, W, C] -> [N, H/f, f, W/f, f, C] (a reshape: no data moves)."""
  n, h, w, c = x.shape
  return x.reshape(n, h // factor, factor, w // factor, factor, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_whole(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  return _windows(x, factor).max(axis=(2, 4))


def _max_pool_forward(x, factor):
  y = _max_pool_whole(x, factor)
  return y, (x, y)


def _max_pool_backward(factor, residuals, grad):
  x, y = residuals
  windows = _windows(x, factor)
  # Each window position's row-major rank; the lowest rank holding the max takes the grad.
  rank = np.arange(factor * factor).reshape(1, 1, factor, 1, factor, 1)
  ranked = jnp.where(windows == y[:, :, None, :, None, :], rank, factor * factor)
  first = ranked == ranked.min(axis=(2, 4), keepdims=True)
  grad_x = jnp.where(first, grad[:, :, None, :, None, :], jnp.zeros((), grad.dtype))
  return (grad_x.reshape(x.shape),)


_max_pool_whole.defvjp(_max_pool_forward, _max_pool_backward)
