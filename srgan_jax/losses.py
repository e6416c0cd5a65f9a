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


def total_variation(images: jnp.ndarray) -> jnp.ndarray:
  """Mean absolute difference between neighbouring pixels of [N, H, W, C] images."""
  dy = jnp.abs(images[:, 1:] - images[:, :-1])
  dx = jnp.abs(images[:, :, 1:] - images[:, :, :-1])
  return jnp.mean(dy) + jnp.mean(dx)
