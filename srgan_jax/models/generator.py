"""SRResNet generator (Ledig et al. 2017, Fig. 4), NHWC.

LR in [0, 1] -> conv9x9 + PReLU -> B residual blocks -> conv3x3 + BN + long skip
-> log2(scale) x [conv3x3(4C), pixel shuffle x2, PReLU] -> conv9x9(3) -> tanh: SR in [-1, 1].
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from srgan_jax.models.layers import PixelShuffleConv, pixel_shuffle

# PReLU slope at initialisation, as in He et al. 2015 (and PyTorch's default).
PRELU_INIT = 0.25
# Running-average momentum of BatchNorm (PyTorch's 0.1 update rate).
BN_MOMENTUM = 0.9
# Forms of the output conv -> how much coarser than HR it runs (`layers.PixelShuffleConv`).
# Which is fastest depends on the device and the model's size (benchmarks/README.md).
OUTPUT_CONVS = {'direct': 1, 'subpixel2': 2, 'subpixel4': 4}


class ResidualBlock(nn.Module):
  """conv3x3, BN, PReLU, conv3x3, BN, + skip.

  A convolution that feeds a BatchNorm has no bias: BN subtracts the mean, which would
  cancel it (its gradient is zero up to rounding, and Adam turns that rounding into
  steps of the learning rate's size).
  """

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, dtype=self.dtype, name=name)
    y = nn.Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype, name='conv1')(x)
    y = norm('bn1')(y)
    y = nn.PReLU(negative_slope_init=PRELU_INIT, name='prelu')(y)
    y = nn.Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype, name='conv2')(y)
    y = norm('bn2')(y)
    return x + y


class Generator(nn.Module):
  """SRResNet. Parameter count for 16 blocks, 64 channels, x4: 1,547,350.

  Attributes:
    num_blocks: residual blocks in the body.
    features: channels of the body.
    scale: 2, 4 or 8.
    output_conv: how conv_out is computed, with the same params and results: 'direct'
      (on the HR grid), 'subpixel2' (on the grid before the last pixel shuffle) or
      'subpixel4' (twice coarser still; scale 4 or 8). See `layers.PixelShuffleConv`.
    dtype: compute dtype of convolutions (params stay float32).
  """

  num_blocks: int = 16
  features: int = 64
  scale: int = 4
  output_conv: str = 'direct'
  dtype: Any = jnp.float32

  def __post_init__(self):
    # Checked when the module is built, so that configs and run folders fail at load time.
    if self.scale not in (2, 4, 8):
      raise ValueError(f'generator.scale must be 2, 4 or 8, got {self.scale}')
    if self.output_conv not in OUTPUT_CONVS:
      raise ValueError(f'generator.output_conv must be one of {tuple(OUTPUT_CONVS)}, '
                       f'got {self.output_conv!r}')
    grid = OUTPUT_CONVS[self.output_conv]
    if grid > self.scale:
      fits = [name for name, g in OUTPUT_CONVS.items() if g <= self.scale]
      raise ValueError(f'generator.output_conv={self.output_conv!r} needs scale >= '
                       f'{grid}, got {self.scale}; at this scale use one of {fits}')
    super().__post_init__()

  @nn.compact
  def __call__(self, lr, train: bool = False):
    """Maps LR [N, h, w, 3] in [0, 1] to SR [N, h*scale, w*scale, 3] in [-1, 1] (float32)."""
    num_upsamples = int(round(math.log2(self.scale)))
    x = lr.astype(self.dtype)
    x = nn.Conv(self.features, (9, 9), dtype=self.dtype, name='conv_in')(x)
    x = nn.PReLU(negative_slope_init=PRELU_INIT, name='prelu_in')(x)
    skip = x
    for i in range(self.num_blocks):
      x = ResidualBlock(self.features, dtype=self.dtype, name=f'block{i}')(x, train)
    x = nn.Conv(self.features, (3, 3), use_bias=False, dtype=self.dtype, name='conv_body')(x)
    x = nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, dtype=self.dtype,
        name='bn_body')(x)
    x = x + skip
    for i in range(num_upsamples):
      x = nn.Conv(4 * self.features, (3, 3), dtype=self.dtype, name=f'conv_up{i}')(x)
      # PReLU has one slope, so it gives the same before the shuffle as after it.
      x = nn.PReLU(negative_slope_init=PRELU_INIT, name=f'prelu_up{i}')(x)
      if i < num_upsamples - 1:
        x = pixel_shuffle(x, 2)
    # The last shuffle belongs to the output conv, which may run on a coarser grid.
    x = PixelShuffleConv(3, 9, grid=OUTPUT_CONVS[self.output_conv], dtype=self.dtype,
                         name='conv_out')(x)
    return jnp.tanh(x.astype(jnp.float32))
