"""VGG19 features (Simonyan & Zisserman 2015) for the perceptual loss.

The port keeps the public layer names (conv1_1 ... conv5_4) and stops after the deepest
layer asked for, so VGG54 never computes the classifier or the last pool. Its weights
come from `srgan_jax.weights` ('vgg19_keras' or 'vgg19_torchvision'); the input
convention belongs to the weights' source (`preprocess`):

- 'keras':       Caffe-style input: BGR, 0-255, minus the mean [103.939, 116.779, 123.68].
- 'torchvision': RGB in [0, 1], ImageNet mean and std.
- 'random':      fresh init (mechanics tests only), Keras preprocessing.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.models.layers import max_pool

# (block, convolutions in the block); pools follow each block.
BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
LAYER_NAMES = tuple(f'conv{b}_{j}' for b, n in BLOCKS for j in range(1, n + 1))
CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
SOURCES = ('keras', 'torchvision')

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)


class VGG19Features(nn.Module):
  """VGG19 up to the deepest of the layers asked for.

  Attributes:
    output_layers: the phi_i,j to return, as 'convI_J' names (the paper's VGG54 is
      ('conv5_4',); Real-ESRGAN's perceptual loss takes five).
    after_activation: return each phi_i,j after its ReLU (the paper) or before it
      (ESRGAN, Real-ESRGAN).
    dtype: compute dtype.
  """

  output_layers: Sequence[str] = ('conv5_4',)
  after_activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x) -> tuple:
    """Maps preprocessed images [N, H, W, 3] to one float32 feature map
    [N, H/2^(i-1), W/2^(i-1), C] per output layer, in the order of `output_layers`."""
    unknown = [name for name in self.output_layers if name not in LAYER_NAMES]
    if unknown or not self.output_layers:
      raise ValueError(f'unknown VGG19 layers {unknown}; choose from {LAYER_NAMES}')
    last = max(LAYER_NAMES.index(name) for name in self.output_layers)
    found = {}
    x = x.astype(self.dtype)
    for block, count in BLOCKS:
      if block > 1:
        x = max_pool(x, 2)  # nn.max_pool's values and gradients, computed faster.
      for j in range(1, count + 1):
        name = f'conv{block}_{j}'
        x = nn.Conv(CHANNELS[block], (3, 3), dtype=self.dtype, name=name)(x)
        if name in self.output_layers and not self.after_activation:
          found[name] = x.astype(jnp.float32)
        x = nn.relu(x)
        if name in self.output_layers and self.after_activation:
          found[name] = x.astype(jnp.float32)
        if name == LAYER_NAMES[last]:
          return tuple(found[name] for name in self.output_layers)
    raise AssertionError('unreachable')


def layers_for_loss(content: str) -> tuple[str, ...]:
  """'vgg54' -> ('conv5_4',); 'vgg12,vgg22' -> ('conv1_2', 'conv2_2')."""
  names = tuple(part.strip() for part in content.split(','))
  for part in names:
    if len(part) != 5 or not part.startswith('vgg') or not part[3:].isdigit():
      raise ValueError(f'VGG content loss must look like vgg22, vgg54 or vgg12,vgg22,...; '
                       f'got {content!r}')
  layers = tuple(f'conv{part[3]}_{part[4]}' for part in names)
  unknown = [layer for layer in layers if layer not in LAYER_NAMES]
  if unknown or len(set(layers)) != len(layers):
    raise ValueError(f'VGG content loss {content!r} names unknown or repeated layers; '
                     f'VGG19 has {LAYER_NAMES}')
  return layers


def preprocess(images: jnp.ndarray, source: str) -> jnp.ndarray:
  """Maps images in [-1, 1], RGB, [N, H, W, 3] to the input convention of `source`'s weights."""
  if source in ('keras', 'random'):
    bgr = (images[..., ::-1] + 1.0) * 127.5
    return bgr - CAFFE_MEAN_BGR
  if source == 'torchvision':
    rgb = (images + 1.0) * 0.5
    return (rgb - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
  raise ValueError(f'unknown VGG weights source {source!r}; one of keras, torchvision, random')


def random_params(seed: int = 0) -> dict:
  """Fresh VGG19 params (He-style init from Flax defaults); for mechanics tests only."""
  variables = VGG19Features(('conv5_4',)).init(
      jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3), jnp.float32))
  return jax.tree.map(np.asarray, variables['params'])
