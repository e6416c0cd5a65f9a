import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import losses
from tests.conftest import phase_means_by_scipy


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


def test_phase_means_equal_the_definition_by_scipy():
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 37, 22, 3)).astype(np.float32)  # Neither a multiple of 4.
  ours = np.asarray(losses.phase_means(jnp.asarray(images)))
  assert ours.shape == (2, 4, 4)
  for image, means in zip(images, ours):
    np.testing.assert_allclose(means, phase_means_by_scipy(image), atol=1e-6)


def test_phase_loss_sees_a_grid_and_pulls_the_phases_back_to_hr():
  rng = np.random.default_rng(1)
  hr = jnp.asarray(rng.uniform(-0.5, 0.5, (4, 64, 64, 3)), jnp.float32)
  grid = np.zeros((4, 4), np.float32)
  grid[0, 0] = 4 / 127.5  # One phase of 16 brighter by 4 levels: a grid of dots.
  sr = hr + jnp.asarray(np.tile(grid, (16, 16)))[None, :, :, None]
  assert float(losses.phase_loss(hr, hr)) == 0.0
  expected = np.mean([np.square(127.5 * (phase_means_by_scipy(a) - phase_means_by_scipy(b)))
                      for a, b in zip(np.asarray(sr), np.asarray(hr))])
  assert float(losses.phase_loss(sr, hr)) == pytest.approx(expected, rel=1e-4)
  # About the dot's 4 levels less its 5x5 blur (4/25), squared, in 1 phase of 16.
  assert 0.9 < float(losses.phase_loss(sr, hr)) < 1.0
  # Texture as strong, on no fixed phase, costs far less.
  noisy = hr + jnp.asarray(rng.normal(0, 4 / 127.5, hr.shape), jnp.float32)
  assert float(losses.phase_loss(noisy, hr)) < 0.15 * float(losses.phase_loss(sr, hr))
  # Its gradient darkens the bright phase, and gradient steps remove the grid.
  step = jax.grad(losses.phase_loss)(sr, hr)
  assert float(step[0, 0, 0, 0]) > 0 and float(step[0, 1, 1, 0]) < 0
  before = float(losses.phase_loss(sr, hr))
  for _ in range(50):
    sr = sr - 0.1 * jax.grad(losses.phase_loss)(sr, hr)
  assert float(losses.phase_loss(sr, hr)) < 0.01 * before
