"""SRResNet generator (Ledig et al. 2017, Fig. 4), NHWC.

LR in [0, 1] -> conv9x9 + PReLU -> B residual blocks -> conv3x3 + BN + long skip
-> log2(scale) x [conv3x3(4C), pixel shuffle x2, PReLU] -> conv9x9(3) -> tanh: SR in [-1, 1].
"""

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# PReLU slope at initialisation, as in He et al. 2015 (and PyTorch's default).
PRELU_INIT = 0.25
# Running-average momentum of BatchNorm (PyTorch's 0.1 update rate).
BN_MOMENTUM = 0.9


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


class TapSumConv(nn.Module):
  """A 'SAME' KxK convolution to few output channels, as one matmul and a sum of taps.

  Same parameters ('kernel' [K, K, Cin, Cout], 'bias' [Cout]) and result as `nn.Conv`.
  A direct convolution to 3 channels keeps the GPU's matrix units mostly idle (the
  paper's 9x9 64->3 output layer runs at a few percent of peak). Here every input pixel
  is first multiplied by all K*K*Cout kernel taps at once, a [pixels, Cin] x
  [Cin, K*K*Cout] matmul, and the output sums the K*K shifted tap planes:
    out[y, x] = sum_ij z[y + i - K//2, x + j - K//2, i, j].
  The intermediate has K*K*Cout channels, so this pays off only for small Cout.
  Measured on an H200 (benchmarks/RESULTS.md): 12% faster for bf16 inference of the
  paper's G on 512x512, but the SRGAN training step is 1.8x slower (the transposed tap
  sum in the backward pass), so training uses the plain convolution by default.
  """

  features: int
  kernel_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, cin = self.kernel_size, x.shape[-1]
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (k, k, cin, self.features))
    bias = self.param('bias', nn.initializers.zeros_init(), (self.features,))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    n, h, w, _ = x.shape
    taps = jnp.einsum('nhwc,ijco->nhwijo', x, kernel)  # [N, H, W, K, K, Cout]
    r = k // 2
    taps = jnp.pad(taps, ((0, 0), (r, r), (r, r), (0, 0), (0, 0), (0, 0)))
    out = sum(taps[:, i:i + h, j:j + w, i, j, :] for i in range(k) for j in range(k))
    return out + bias


class ResidualBlock(nn.Module):
  """conv3x3, BN, PReLU, conv3x3, BN, + skip."""

  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, dtype=self.dtype, name=name)
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype, name='conv1')(x)
    y = norm('bn1')(y)
    y = nn.PReLU(negative_slope_init=PRELU_INIT, name='prelu')(y)
    y = nn.Conv(self.features, (3, 3), dtype=self.dtype, name='conv2')(y)
    y = norm('bn2')(y)
    return x + y


class Generator(nn.Module):
  """SRResNet. Parameter count for 16 blocks, 64 channels, x4: 1,549,462.

  Attributes:
    num_blocks: residual blocks in the body.
    features: channels of the body.
    scale: 2, 4 or 8.
    dtype: compute dtype of convolutions (params stay float32).
  """

  num_blocks: int = 16
  features: int = 64
  scale: int = 4
  dtype: Any = jnp.float32
  # Output layer as `TapSumConv` (same params and result as nn.Conv); see its docstring.
  tap_sum_output: bool = False

  @nn.compact
  def __call__(self, lr, train: bool = False):
    """Maps LR [N, h, w, 3] in [0, 1] to SR [N, h*scale, w*scale, 3] in [-1, 1] (float32)."""
    num_upsamples = int(round(math.log2(self.scale)))
    if 2**num_upsamples != self.scale:
      raise ValueError(f'generator.scale must be 2, 4 or 8, got {self.scale}')
    x = lr.astype(self.dtype)
    x = nn.Conv(self.features, (9, 9), dtype=self.dtype, name='conv_in')(x)
    x = nn.PReLU(negative_slope_init=PRELU_INIT, name='prelu_in')(x)
    skip = x
    for i in range(self.num_blocks):
      x = ResidualBlock(self.features, dtype=self.dtype, name=f'block{i}')(x, train)
    x = nn.Conv(self.features, (3, 3), dtype=self.dtype, name='conv_body')(x)
    x = nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, dtype=self.dtype,
        name='bn_body')(x)
    x = x + skip
    for i in range(num_upsamples):
      x = nn.Conv(4 * self.features, (3, 3), dtype=self.dtype, name=f'conv_up{i}')(x)
      x = pixel_shuffle(x, 2)
      x = nn.PReLU(negative_slope_init=PRELU_INIT, name=f'prelu_up{i}')(x)
    if self.tap_sum_output:
      x = TapSumConv(3, 9, dtype=self.dtype, name='conv_out')(x)
    else:
      x = nn.Conv(3, (9, 9), dtype=self.dtype, name='conv_out')(x)
    return jnp.tanh(x.astype(jnp.float32))
