import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import losses
from srgan_jax.models import Discriminator, Generator, VGG19Features
from srgan_jax.models.discriminator import apply_to_real_and_fake
from srgan_jax.models.layers import pixel_shuffle
from srgan_jax.train_step import count_params


def test_paper_generator_has_1_55m_parameters_and_upscales_x4():
  generator = Generator()
  lr = jnp.zeros((2, 24, 20, 3))
  variables = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), lr))
  # 1,549,462 less the 2,112 biases of the convolutions that feed a BatchNorm.
  assert count_params(variables['params']) == 1_547_350
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


@pytest.mark.slow
def test_discriminator_on_real_and_fake_in_one_call_equals_two_calls():
  # The train step's one vmapped call must give what two calls in a row give: each
  # batch's own BatchNorm statistics, and the running statistics after real, then fake.
  d = Discriminator(features=(8, 8, 16, 16), dense_features=16)
  rng = np.random.default_rng(0)
  real, fake = (jnp.asarray(rng.uniform(-1, 1, (3, 32, 32, 3)), jnp.float32) for _ in range(2))
  variables = d.init(jax.random.PRNGKey(0), real[:1])
  # Running statistics away from their initial zeros and ones, so a wrong blend shows.
  stats = jax.tree.map(lambda s: s + jnp.asarray(rng.uniform(0.5, 1.5, s.shape), s.dtype),
                       variables['batch_stats'])

  def two_calls(params):
    real_logits, updates = d.apply({'params': params, 'batch_stats': stats}, real,
                                   train=True, mutable=['batch_stats'])
    fake_logits, updates = d.apply({'params': params, 'batch_stats': updates['batch_stats']},
                                   fake, train=True, mutable=['batch_stats'])
    return losses.discriminator_bce(real_logits, fake_logits), (
        real_logits, fake_logits, updates['batch_stats'])

  def one_call(params):
    real_logits, fake_logits, new_stats = apply_to_real_and_fake(d, params, stats, real, fake)
    return losses.discriminator_bce(real_logits, fake_logits), (
        real_logits, fake_logits, new_stats)

  (loss2, aux2), grads2 = jax.value_and_grad(two_calls, has_aux=True)(variables['params'])
  (loss1, aux1), grads1 = jax.value_and_grad(one_call, has_aux=True)(variables['params'])
  np.testing.assert_allclose(loss1, loss2, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), aux1, aux2)
  for name in grads2:
    for leaf in grads2[name]:
      g1, g2 = grads1[name][leaf], grads2[name][leaf]
      assert float(jnp.max(jnp.abs(g1 - g2))) <= 1e-3 * float(jnp.max(jnp.abs(g2))), (name, leaf)


def test_vgg_truncates_after_requested_layer():
  for layer, shape, channels in [('conv2_2', (1, 16, 12), 128), ('conv5_4', (1, 2, 1), 512)]:
    module = VGG19Features((layer,))
    x = jnp.zeros((1, 32, 24, 3))
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))
    (out,) = jax.eval_shape(lambda v: module.apply(v, x), variables)
    assert out.shape == (*shape, channels)
    names = set(variables['params'])
    assert layer in names
    assert not any(n > layer for n in names), f'{layer}: layers past it exist: {sorted(names)}'


def test_vgg_before_activation_can_be_negative():
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 16, 3))
  before = VGG19Features(('conv1_2',), after_activation=False)
  after = VGG19Features(('conv1_2',), after_activation=True)
  variables = before.init(jax.random.PRNGKey(0), x)
  (b,), (a,) = before.apply(variables, x), after.apply(variables, x)
  assert float(b.min()) < 0
  np.testing.assert_allclose(np.asarray(a), np.maximum(np.asarray(b), 0), atol=1e-6)



def test_convolutions_that_feed_a_batch_norm_have_no_bias():
  """BN subtracts the mean, which cancels such a bias: G drops 2,112, D 1,856."""
  g = jax.eval_shape(Generator().init, jax.random.PRNGKey(0), jnp.zeros((1, 24, 24, 3)))
  d = jax.eval_shape(Discriminator().init, jax.random.PRNGKey(0), jnp.zeros((1, 96, 96, 3)))
  for variables in (g, d):
    for path, _ in jax.tree_util.tree_leaves_with_path(variables['params']):
      names = [p.key for p in path]
      if names[-1] == 'bias' and names[-2].startswith('conv'):
        siblings = variables['batch_stats']
        for name in names[:-2]:
          siblings = siblings[name]
        assert 'bn' + names[-2][len('conv'):] not in siblings, names
  assert count_params(d["params"]) == 23_565_505 - 1_856  # 23,565,505 with those biases.


def test_folding_a_conv_bias_into_batch_norm_keeps_the_inference_output():
  """Run folders written with those biases load with each one moved into its BN's running
  mean: conv(x) + b - mean == conv'(x) - (mean - b), checked on Flax's own layers."""
  from flax import linen as nn
  from srgan_jax.models import build

  class ConvNorm(nn.Module):
    use_bias: bool

    @nn.compact
    def __call__(self, x):
      x = nn.Conv(6, (3, 3), use_bias=self.use_bias, name='conv1')(x)
      x = nn.BatchNorm(use_running_average=True, name='bn1')(x)
      return nn.Conv(2, (3, 3), name='conv_out')(x)  # Has a bias, and no BN: kept.

  class Nested(nn.Module):
    use_bias: bool

    @nn.compact
    def __call__(self, x):
      return ConvNorm(self.use_bias, name='block0')(x)

  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 5, 3))
  old = Nested(use_bias=True).init(jax.random.PRNGKey(1), x)
  leaves, tree = jax.tree.flatten(old)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  old = jax.tree.unflatten(tree, [jax.random.uniform(k, l.shape, minval=0.5, maxval=1.5)
                                  for k, l in zip(keys, leaves)])  # Nonzero biases and stats.
  params, stats = build.fold_biases_into_batch_norm(old['params'], old['batch_stats'])
  assert 'bias' not in params['block0']['conv1'] and 'bias' in params['block0']['conv_out']
  want = Nested(use_bias=True).apply(old, x)
  got = Nested(use_bias=False).apply({'params': params, 'batch_stats': stats}, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Trees without such biases pass unchanged.
  again = build.fold_biases_into_batch_norm(params, stats)
  chex_equal = jax.tree.map(lambda a, b: np.array_equal(a, b), again, (params, stats))
  assert all(jax.tree.leaves(chex_equal))


def test_lpips_vgg16_taps_before_relu_are_the_taps_after_it_unrectified():
  from srgan_jax.models import lpips
  x = jax.random.normal(jax.random.PRNGKey(2), (1, 32, 32, 3))
  variables = lpips.VGG16Features().init(jax.random.PRNGKey(0), x)
  after = lpips.VGG16Features().apply(variables, x)
  before = lpips.VGG16Features(before_relu=True).apply(variables, x)
  assert [b.shape for b in before] == [a.shape for a in after]
  assert float(before[0].min()) < 0
  for b, a in zip(before, after):
    np.testing.assert_allclose(np.maximum(np.asarray(b), 0), np.asarray(a), atol=1e-6)
