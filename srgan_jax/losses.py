"""Losses of SRResNet and SRGAN (Ledig et al. 2017, Sec. 2.2). Images are in [-1, 1].

Adversarial terms take discriminator logits and use the log-sigmoid form
(log sigmoid(z) = -softplus(-z)), which stays finite when D saturates.
"""

import jax
import jax.numpy as jnp
import optax


def pixel_mse(sr: jnp.ndarray, hr: jnp.ndarray) -> jnp.ndarray:
  """Mean squared error over all values of [N, H, W, 3] images in [-1, 1]."""
  return jnp.mean(jnp.square(sr.astype(jnp.float32) - hr.astype(jnp.float32)))


def feature_mse(sr_features: jnp.ndarray, hr_features: jnp.ndarray,
                feature_scale: float) -> jnp.ndarray:
  """VGG content loss: MSE of feature maps [N, h, w, C] multiplied by `feature_scale`.

  HR features are a target: no gradient flows into them.
  """
  hr_features = jax.lax.stop_gradient(hr_features)
  return jnp.mean(jnp.square((sr_features - hr_features) * feature_scale))


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
