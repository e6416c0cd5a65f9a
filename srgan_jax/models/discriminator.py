"""SRGAN discriminator (Ledig et al. 2017, Fig. 4), NHWC.

8 conv3x3 layers (stride 2 on every second), LeakyReLU 0.2, BN on all but the first;
Dense(1024), LeakyReLU, Dense(1). Returns logits; the sigmoid lives in the losses,
where the log-sigmoid form is numerically stable.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
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
      # A conv that feeds a BatchNorm has no bias: BN's mean subtraction cancels it.
      x = nn.Conv(features, (3, 3), strides=2 if i % 2 else 1, use_bias=i == 0,
                  dtype=self.dtype, name=f'conv{i}')(x)
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


def apply_to_real_and_fake(discriminator: Discriminator, params, batch_stats, real, fake):
  """D in training mode on a real and a fake batch in one call, as if in two.

  Args:
    discriminator: the module.
    params, batch_stats: D's variables.
    real, fake: [N, H, W, 3] images in [-1, 1].

  Returns:
    (real_logits [N], fake_logits [N], batch_stats after both batches).

  The two batches are stacked and D is vmapped over them: each convolution runs once on
  2N images, fewer and larger kernels on an accelerator (benchmarks/README.md), and each
  batch keeps its own BatchNorm statistics. The running
  statistics come out as two calls in a row would leave them (real, then fake): each
  vmapped half returns m * old + (1 - m) * s for its batch statistic s, and
  m * (m * old + (1 - m) * s_real) + (1 - m) * s_fake = m * real_half + fake_half - m * old.
  """

  def apply_one(images):
    return discriminator.apply({'params': params, 'batch_stats': batch_stats}, images,
                               train=True, mutable=['batch_stats'])

  (real_logits, fake_logits), updates = jax.vmap(apply_one)(jnp.stack([real, fake]))
  m = BN_MOMENTUM
  new_stats = jax.tree.map(lambda old, both: m * both[0] + both[1] - m * old,
                           batch_stats, updates['batch_stats'])
  return real_logits, fake_logits, new_stats
