"""The regrouped output convolution and the reshape max pool compute what the plain ops
compute, values and gradients."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from srgan_jax.models import Generator, build
from srgan_jax.models.layers import PixelShuffleConv, coarsen_phases, max_pool, pixel_shuffle


def _values_and_grads(fn, params, x):
  """fn(params, x), and the gradients of a fixed random projection of it."""
  out = fn(params, x)
  weights = jax.random.normal(jax.random.PRNGKey(7), out.shape)
  grads = jax.grad(lambda p, x: jnp.sum(fn(p, x) * weights), argnums=(0, 1))(params, x)
  return out, grads


def space_to_depth(x, factor):
  """The inverse of pixel_shuffle, written independently: [N, H, W, C] -> [N, H/f, W/f, f*f*C]."""
  n, h, w, c = x.shape
  blocks = [x[:, i::factor, j::factor] for i in range(factor) for j in range(factor)]
  return jnp.stack(blocks, axis=3).reshape(n, h // factor, w // factor, factor * factor * c)


def test_space_to_depth_inverts_pixel_shuffle():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4, 5))
  np.testing.assert_array_equal(pixel_shuffle(space_to_depth(x, 2), 2), x)
  # Row offset i, column offset j of a 2x2 block lands in channel (i * 2 + j).
  blocks = space_to_depth(jnp.arange(4.0).reshape(1, 2, 2, 1), 2)
  np.testing.assert_array_equal(blocks[0, 0, 0], [0, 1, 2, 3])


def test_coarsen_phases_is_a_shuffle_then_a_coarser_space_to_depth():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4, 4 * 3))
  np.testing.assert_array_equal(coarsen_phases(x, 2, 2),
                                space_to_depth(pixel_shuffle(x, 2), 4))


@pytest.mark.parametrize('kernel_size,grid,phases,shape', [
    (9, 1, 2, (2, 6, 4)), (9, 2, 2, (2, 6, 5)), (9, 4, 2, (2, 6, 4)), (3, 2, 2, (1, 4, 7)),
    (5, 3, 3, (1, 3, 4)), (1, 2, 2, (1, 3, 3)), (7, 6, 3, (1, 4, 2))])
def test_pixel_shuffle_conv_equals_conv_after_pixel_shuffle(kernel_size, grid, phases, shape):
  x = jax.random.normal(jax.random.PRNGKey(0), (*shape, phases * phases * 4))
  module = PixelShuffleConv(3, kernel_size, grid=grid, phases=phases)
  conv = nn.Conv(3, (kernel_size, kernel_size))
  params = module.init(jax.random.PRNGKey(1), x)
  # Same names, shapes and initial values: either module loads the other's params.
  chex.assert_trees_all_equal(params, conv.init(jax.random.PRNGKey(1), pixel_shuffle(x, phases)))
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  got, got_grads = _values_and_grads(module.apply, params, x)
  want, want_grads = _values_and_grads(
      lambda p, x: conv.apply(p, pixel_shuffle(x, phases)), params, x)
  assert got.shape == (shape[0], shape[1] * phases, shape[2] * phases, 3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  chex.assert_trees_all_close(got_grads, want_grads, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize('factor,shape,dtype', [
    (2, (2, 8, 6, 3), jnp.float32), (2, (1, 7, 9, 2), jnp.float32),
    (3, (2, 9, 11, 2), jnp.float32), (2, (2, 12, 10, 4), jnp.bfloat16)])
def test_max_pool_equals_nn_max_pool_with_ties(factor, shape, dtype):
  # Values on a coarse grid, so many windows hold their maximum more than once.
  x = jnp.round(2 * jax.random.normal(jax.random.PRNGKey(1), shape)).astype(dtype)
  x = x.at[0, :factor, :factor].set(1)  # One window of equal values.
  cotangent = jax.random.normal(jax.random.PRNGKey(2), (shape[0], shape[1] // factor,
                                                        shape[2] // factor, shape[3]), dtype)
  plain = lambda x: nn.max_pool(x, (factor, factor), strides=(factor, factor))
  for fn in (jax.jit, lambda f: f):  # Compiled and op by op.
    ours, ours_vjp = jax.vjp(fn(lambda x: max_pool(x, factor)), x)
    theirs, theirs_vjp = jax.vjp(plain, x)
    np.testing.assert_array_equal(np.float32(ours), np.float32(theirs))
    np.testing.assert_array_equal(np.float32(ours_vjp(cotangent)[0]),
                                  np.float32(theirs_vjp(cotangent)[0]))
  # Of the equal window, only the first position (row-major) receives the gradient.
  grad = np.float32(jax.grad(lambda x: max_pool(x, factor)[0, 0, 0, 0])(x)[0, :factor, :factor, 0])
  np.testing.assert_array_equal(grad.ravel(), np.eye(factor * factor)[0])


@pytest.mark.parametrize('output_conv', ['subpixel2', 'subpixel4'])
def test_generator_forms_share_params_and_results(output_conv):
  lr = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 7, 3))  # Odd LR sides.
  direct = Generator(num_blocks=1, features=8, scale=4)
  other = Generator(num_blocks=1, features=8, scale=4, output_conv=output_conv)
  variables = direct.init(jax.random.PRNGKey(1), lr)
  chex.assert_trees_all_equal(variables, other.init(jax.random.PRNGKey(1), lr))
  for training in (False, True):
    mutable = ['batch_stats'] if training else False
    want = direct.apply(variables, lr, train=training, mutable=mutable)
    got = other.apply(variables, lr, train=training, mutable=mutable)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)


def test_unknown_forms_are_named():
  with pytest.raises(ValueError, match='grid must be 1 or a multiple of phases'):
    PixelShuffleConv(3, 9, grid=3).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 16)))
  with pytest.raises(ValueError, match="output_conv must be one of.*'subpixel'"):
    Generator(num_blocks=1, features=8, output_conv='subpixel').init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match=r"'subpixel4' needs scale >= 4, got 2; at this "
                                       r"scale use one of \['direct', 'subpixel2'\]"):
    Generator(num_blocks=1, features=8, scale=2, output_conv='subpixel4').init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3)))


def test_run_folders_saved_before_the_forms_existed_use_the_direct_form():
  saved = ml_collections.ConfigDict({'num_blocks': 1, 'features': 8, 'scale': 4})
  assert build.generator_from_config(saved).output_conv == 'direct'
  saved.output_conv = 'subpixel2'
  assert build.generator_from_config(saved).output_conv == 'subpixel2'
