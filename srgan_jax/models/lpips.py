"""LPIPS v0.1 (Zhang et al. 2018): a learned perceptual distance between two images.

As the `lpips` package computes it: images RGB in [-1, 1]; a fixed scaling layer;
backbone features at five layers (AlexNet: the ReLUs after conv1 to conv5; VGG16:
relu1_2, relu2_2, relu3_3, relu4_3, relu5_3); each feature map divided by its norm over
channels (+1e-10); the squared difference; a 1x1 convolution without bias per layer (the
v0.1 calibration weights); the spatial mean; the sum over layers. Lower is better.

The backbones are torchvision's ImageNet AlexNet and VGG16 (their `features`), with
torchvision's padding and pooling; their weights and the calibration layers come
through `srgan_jax.weights` ('alexnet_torchvision', 'vgg16_torchvision', 'lpips_alex',
'lpips_vgg').
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# The lpips package's ScalingLayer: (x - shift) / scale, per RGB channel.
SHIFT = jnp.array([-0.030, -0.088, -0.188], jnp.float32)
SCALE = jnp.array([0.458, 0.448, 0.450], jnp.float32)
EPS = 1e-10  # Added to the channel norm.

# (name, output channels, kernel, stride, padding, max-pool before it) of AlexNet's convs.
ALEXNET_CONVS = (('conv1', 64, 11, 4, 2, False), ('conv2', 192, 5, 1, 2, True),
                 ('conv3', 384, 3, 1, 1, True), ('conv4', 256, 3, 1, 1, False),
                 ('conv5', 256, 3, 1, 1, False))
VGG16_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
CHANNELS = {'alex': (64, 192, 384, 256, 256), 'vgg': (64, 128, 256, 512, 512)}


class AlexNetFeatures(nn.Module):
  """torchvision's `alexnet().features` up to relu5; returns the 5 ReLU outputs."""

  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x) -> list:
    taps = []
    for name, features, kernel, stride, pad, pool_before in ALEXNET_CONVS:
      if pool_before:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
      x = nn.Conv(features, (kernel, kernel), strides=stride, padding=((pad, pad), (pad, pad)),
                  dtype=self.dtype, name=name)(x)
      x = nn.relu(x)
      taps.append(x)
    return taps


class VGG16Features(nn.Module):
  """torchvision's `vgg16().features` up to relu5_3; returns relu1_2 ... relu5_3, or with
  `before_relu` conv1_2 ... conv5_3 before their ReLU (the form a perceptual loss such as
  Real-ESRGAN's takes)."""

  dtype: Any = jnp.float32
  before_relu: bool = False

  @nn.compact
  def __call__(self, x) -> list:
    taps = []
    for block, count, features in VGG16_BLOCKS:
      if block > 1:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
      for j in range(1, count + 1):
        x = nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                    name=f'conv{block}_{j}')(x)
        if j == count and self.before_relu:
          taps.append(x)
        x = nn.relu(x)
      if not self.before_relu:
        taps.append(x)
    return taps


class LPIPS(nn.Module):
  """LPIPS v0.1 between two batches of images.

  Attributes:
    backbone: 'alex' or 'vgg'.
    dtype: compute dtype of the backbone.

  Params: {'backbone': AlexNet or VGG16 features, 'lin0' ... 'lin4': {'weight': [C]}}.
  """

  backbone: str = 'alex'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x0, x1):
    """Maps two [N, H, W, 3] batches in [-1, 1] to their distances [N] (float32)."""
    if self.backbone not in CHANNELS:
      raise ValueError(f'LPIPS backbone must be one of {tuple(CHANNELS)}, got {self.backbone!r}')
    net = (AlexNetFeatures if self.backbone == 'alex' else VGG16Features)(
        dtype=self.dtype, name='backbone')
    n = x0.shape[0]
    both = (jnp.concatenate([x0, x1]).astype(jnp.float32) - SHIFT) / SCALE
    total = jnp.zeros((n,), jnp.float32)
    for k, (features, channels) in enumerate(zip(net(both.astype(self.dtype)),
                                                 CHANNELS[self.backbone])):
      features = features.astype(jnp.float32)
      features = features / (jnp.sqrt(jnp.sum(features * features, -1, keepdims=True)) + EPS)
      squared = (features[:n] - features[n:]) ** 2
      weight = self.param(f'lin{k}', nn.initializers.ones, (channels,), jnp.float32)
      total = total + jnp.mean(squared @ weight, axis=(1, 2))
    return total


def variables(backbone_arrays: dict, lin_arrays: dict) -> dict:
  """Flax variables of `LPIPS` from the converted arrays of `srgan_jax.weights`.

  Args:
    backbone_arrays: {'conv1/kernel', 'conv1/bias', ...} of 'alexnet_torchvision' or
      'vgg16_torchvision' (HWIO kernels).
    lin_arrays: {'lin0/weight', ...} of 'lpips_alex' or 'lpips_vgg' ([C] each).
  """
  backbone: dict = {}
  for key, value in backbone_arrays.items():
    layer, leaf = key.split('/')
    backbone.setdefault(layer, {})[leaf] = value
  params = {'backbone': backbone}
  params.update({key.split('/')[0]: value for key, value in lin_arrays.items()})
  return {'params': params}


LAYER_NAMES: dict[str, Sequence[str]] = {
    'alex': tuple(name for name, *_ in ALEXNET_CONVS),
    'vgg': tuple(f'conv{b}_{j}' for b, n, _ in VGG16_BLOCKS for j in range(1, n + 1)),
}
