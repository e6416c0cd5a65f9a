"""SRGAN discriminator (Ledig et al. 2017, Fig. 4), NHWC.

8 conv3x3 layers (stride 2 on every second), LeakyReLU 0.2, BN on all but the first;
Dense(1024), LeakyReLU, Dense(1). Returns logits; the sigmoid lives in the losses,
where the log-sigmoid form is numerically stable.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

LEAKY_SLOPE = 0.2
BN_MOMENTUM = 0.9


class Discriminator(nn.Module):
  """Attributes:
    features: channels of the 8 conv layers.
    dense_features: width of the hidden dense layer.
    dtype: compute dtype (params stay float32).
  """

  features: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512)
  dense_features: int = 1024
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hr, train: bool = False):
    """Maps images [N, H, W, 3] in [-1, 1] to logits [N] (float32).

    The dense layer's size follows H and W (96x96 crops by default).
    """
    x = hr.astype(self.dtype)
    for i, features in enumerate(self.features):
      x = nn.Conv(features, (3, 3), strides=2 if i % 2 else 1, dtype=self.dtype,
                  name=f'conv{i}')(x)
      if i > 0:
        x = nn.BatchNorm(
            use_running_average=not train, momentum=BN_MOMENTUM, dtype=self.dtype,
            name=f'bn{i}')(x)
      x = nn.leaky_relu(x, LEAKY_SLOPE)
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(self.dense_features, dtype=self.dtype, name='dense0')(x)
    x = nn.leaky_relu(x, LEAKY_SLOPE)
    x = nn.Dense(1, dtype=self.dtype, name='dense1')(x)
    return x[:, 0].astype(jnp.float32)
