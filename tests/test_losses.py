import math

import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import losses


def test_pixel_mse_by_hand():
  sr = jnp.array([[[[1.0, 0.0, -1.0]]]])
  hr = jnp.array([[[[0.0, 0.0, 1.0]]]])
  assert float(losses.pixel_mse(sr, hr)) == pytest.approx((1 + 0 + 4) / 3)


def test_pixel_l1_by_hand():
  sr = jnp.array([[[[1.0, 0.0, -1.0]]]])
  hr = jnp.array([[[[0.0, 0.5, 1.0]]]])
  assert float(losses.pixel_distance(sr, hr, 'l1')) == pytest.approx((1 + 0.5 + 2) / 3)
  assert float(losses.pixel_distance(sr, hr, 'mse')) == pytest.approx((1 + 0.25 + 4) / 3)
  with pytest.raises(ValueError, match="criterion must be one of .*'L1'"):
    losses.pixel_distance(sr, hr, 'L1')


def test_feature_distance_scales_features_first():
  a, b = jnp.full((1, 2, 2, 1), 12.75), jnp.zeros((1, 2, 2, 1))
  a = a.at[0, 0, 0, 0].set(-25.5)
  # Scaled: three differences of 1 and one of -2.
  assert float(losses.feature_distance(a, b, 1 / 12.75)) == pytest.approx((3 + 4) / 4)
  assert float(losses.feature_distance(a, b, 1 / 12.75, 'l1')) == pytest.approx((3 + 2) / 4)


def test_adversarial_losses_by_hand():
  zero = jnp.zeros((4,))
  assert float(losses.generator_adversarial(zero)) == pytest.approx(math.log(2))
  assert float(losses.discriminator_bce(zero, zero)) == pytest.approx(2 * math.log(2))
  # A confident, correct D has almost no loss; a fooled one pays log(1 + e^10) per side.
  assert float(losses.discriminator_bce(jnp.full((2,), 10.0), jnp.full((2,), -10.0))) < 1e-4
  assert float(losses.discriminator_bce(jnp.full((2,), -10.0), jnp.full((2,), 10.0))) == \
      pytest.approx(2 * math.log1p(math.exp(10)), rel=1e-5)


def test_adversarial_losses_stay_finite_when_d_saturates():
  huge = jnp.array([1e4, -1e4])
  assert np.isfinite(float(losses.generator_adversarial(huge)))
  assert float(losses.generator_adversarial(jnp.array([-1e4]))) == pytest.approx(1e4)
  assert np.isfinite(float(losses.discriminator_bce(huge, huge)))


def test_total_variation_by_hand():
  image = jnp.array([[0.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 2, 1)
  # Horizontal differences are all 1, vertical all 0.
  assert float(losses.total_variation(image)) == pytest.approx(1.0)
