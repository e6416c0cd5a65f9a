"""Losses of SRResNet and SRGAN (Ledig et al. 2017, Sec. 2.2). Images are in [-1, 1].

Adversarial terms take discriminator logits and use the log-sigmoid form
(log sigmoid(z) = -softplus(-z)), which stays finite when D saturates.
"""

import jax
import jax.numpy as jnp
import optax


CRITERIA = ('mse', 'l1')


def _distance(a: jnp.ndarray, b: jnp.ndarray, criterion: str) -> jnp.ndarray:
  if criterion == 'mse':
    return jnp.mean(jnp.square(a - b))
  if criterion == 'l1':
    return jnp.mean(jnp.abs(a - b))
  raise ValueError(f'loss criterion must be one of {CRITERIA}, got {criterion!r}')


def pixel_mse(sr: jnp.ndarray, hr: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error over all values of [N, H, W, 3] images in [-1, 1]."""
  return pixel_distance(sr, hr, 'mse')


def pixel_distance(sr: jnp.ndarray, hr: jnp.ndarray, criterion: str) -> jnp.ndarray:
  """Mean squared ('mse', the paper) or absolute ('l1', ESRGAN and Real-ESRGAN) difference
  over all values of [N, H, W, 3] images in [-1, 1]."""
  return _distance(sr.astype(jnp.float32), hr.astype(jnp.float32), criterion)


def feature_distance(sr_features: jnp.ndarray, hr_features: jnp.ndarray,
                     feature_scale: float, criterion: str = 'mse') -> jnp.ndarray:
  """VGG content loss: the mean squared ('mse', the paper) or absolute ('l1', Real-ESRGAN)
  difference of feature maps [N, h, w, C], each multiplied by `feature_scale` first.

  HR features are a target: no gradient flows into them.
  """
  hr_features = jax.lax.stop_gradient(hr_features)
  return _distance(sr_features * feature_scale, hr_features * feature_scale, criterion)


def generator_adversarial(fake_logits: jnp.ndarray) -> jnp.ndarray:
  """-log D(G(LR)) averaged over the batch; logits [N]."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)))


def discriminator_bce(real_logits: jnp.ndarray, fake_logits: jnp.ndarray) -> jnp.ndarray:
  """-log D(HR) - log(1 - D(SR)), each averaged over its batch; logits [N]."""
  real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
  fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
  return jnp.mean(real) + jnp.mean(fake)


def phase_means(images: jnp.ndarray, period: int = 4) -> jnp.ndarray:
  """The mean fine detail at each of the period^2 (row mod period, column mod period)
  positions: [N, H, W, 3] RGB (any range) -> [N, period, period].

  Detail is luma (BT.601: 0.299 R + 0.587 G + 0.114 B) minus its 5x5 box blur, edges
  mirrored about the half-pixel (scipy's 'reflect'). Natural images have nearly equal
  means; a x4 pixel shuffle whose 16 phases drift apart shows them as a fine grid
  (`quality.pixel_grid` scores it, `phase_loss` trains against it). Rows and columns past
  a multiple of `period` are left out.
  """
  luma = images.astype(jnp.float32) @ jnp.array([0.299, 0.587, 0.114], jnp.float32)
  padded = jnp.pad(luma, ((0, 0), (2, 2), (2, 2)), mode='symmetric')
  blur = jax.lax.reduce_window(padded, 0.0, jax.lax.add, (1, 5, 5), (1, 1, 1), 'VALID') / 25
  detail = luma - blur
  n, height, width = detail.shape
  rows, cols = height // period, width // period
  detail = detail[:, :rows * period, :cols * period].reshape(n, rows, period, cols, period)
  return detail.mean(axis=(1, 3))


def phase_loss(sr: jnp.ndarray, hr: jnp.ndarray) -> jnp.ndarray:
  """How far SR's `phase_means` sit from HR's, in squared 0..255 levels: the mean over
  images and the 16 phases of (127.5 x (SR's - HR's))^2, for [N, H, W, 3] in [-1, 1].

  VGG features and the discriminator are strided: their gradients with respect to SR
  repeat with their stride, and the pixel shuffle's 16 output phases, each its own set of
  channels, follow them apart within a few hundred steps into a grid that neither loss
  sees. The offset of a phase is its bias plus its filter applied to the image's mean
  features, so it differs from image to image: each image's phase means are pinned to
  its HR's. Squared, not absolute: a crop's texture scatters its phase means, and under an
  absolute difference that scatter, not the grid, sets the gradient's sign.
  """
  offset = phase_means(sr) - jax.lax.stop_gradient(phase_means(hr))
  return jnp.mean(jnp.square(127.5 * offset))


def total_variation(images: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute difference between neighbouring pixels of [N, H, W, C] images."""
  dy = jnp.abs(images[:, 1:] - images[:, :-1])
  dx = jnp.abs(images[:, :, 1:] - images[:, :, :-1])
  return jnp.mean(dy) + jnp.mean(dx)
