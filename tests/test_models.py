import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax.models import Discriminator, Generator, VGG19Features
from srgan_jax.models.layers import pixel_shuffle
from srgan_jax.train import count_params


def test_paper_generator_has_1_55m_parameters_and_upscales_x4():
  generator = Generator()
  lr = jnp.zeros((2, 24, 20, 3))
  variables = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), lr))
  assert count_params(variables['params']) == 1_549_462
  out = jax.eval_shape(lambda v: generator.apply(v, lr), variables)
  assert out.shape == (2, 96, 80, 3)


@pytest.mark.parametrize('scale', [2, 8])
def test_generator_scales(scale):
  generator = Generator(num_blocks=1, features=8, scale=scale)
  lr = jnp.ones((1, 5, 7, 3)) * 0.5
  variables = generator.init(jax.random.PRNGKey(0), lr)
  sr = generator.apply(variables, lr)
  assert sr.shape == (1, 5 * scale, 7 * scale, 3)
  assert float(jnp.max(jnp.abs(sr))) <= 1.0


def test_generator_rejects_scale_3():
  with pytest.raises(ValueError, match='2, 4 or 8'):
    Generator(scale=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))


def test_pixel_shuffle_moves_channel_offsets_into_space():
  # Channel (i * 2 + j) of one LR pixel lands at output offset (i, j).
  x = jnp.arange(4.0).reshape(1, 1, 1, 4)
  out = pixel_shuffle(x, 2)
  np.testing.assert_array_equal(np.asarray(out)[0, :, :, 0], [[0, 1], [2, 3]])


def test_discriminator_logits_shape_and_size_follows_input():
  d = Discriminator()
  variables = jax.eval_shape(lambda: d.init(jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 3))))
  # Conv layers + BN + dense 6*6*512 -> 1024 -> 1.
  dense = variables['params']['dense0']['kernel']
  assert dense.shape == (6 * 6 * 512, 1024)
  logits = jax.eval_shape(lambda v: d.apply(v, jnp.zeros((3, 96, 96, 3))), variables)
  assert logits.shape == (3,)


def test_vgg_truncates_after_requested_layer():
  for layer, shape, channels in [('conv2_2', (1, 16, 12), 128), ('conv5_4', (1, 2, 1), 512)]:
    module = VGG19Features(layer)
    x = jnp.zeros((1, 32, 24, 3))
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))
    out = jax.eval_shape(lambda v: module.apply(v, x), variables)
    assert out.shape == (*shape, channels)
    names = set(variables['params'])
    assert layer in names
    assert not any(n > layer for n in names), f'{layer}: layers past it exist: {sorted(names)}'


def test_vgg_before_activation_can_be_negative():
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 16, 3))
  before = VGG19Features('conv1_2', after_activation=False)
  after = VGG19Features('conv1_2', after_activation=True)
  variables = before.init(jax.random.PRNGKey(0), x)
  b, a = before.apply(variables, x), after.apply(variables, x)
  assert float(b.min()) < 0
  np.testing.assert_allclose(np.asarray(a), np.maximum(np.asarray(b), 0), atol=1e-6)

