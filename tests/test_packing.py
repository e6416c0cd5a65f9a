import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from srgan_jax import packing, train_step
from srgan_jax.models import build, vgg
from tests.test_train import _fixed_batch


def _mixed_tree():
  rng = np.random.default_rng(0)
  return {
      'w': jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32),
      'scalar': jnp.asarray(7.5, jnp.float32),
      'count': jnp.asarray(3, jnp.int32),
      'key': jnp.asarray([1, 4000000000], jnp.uint32),  # Not exact in float32.
      'half': jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16),
      'empty': {},
      'nested': [jnp.asarray(rng.normal(size=(2,)), jnp.float32),
                 jnp.asarray([[1, 2]], jnp.int32)],
  }


def test_pack_gives_one_array_per_dtype_and_unpack_restores_the_tree_exactly():
  tree = _mixed_tree()
  layout = packing.Packing(tree)
  packed = jax.jit(layout.pack)(tree)
  assert [(p.dtype, p.shape) for p in packed] == [
      (jnp.dtype(jnp.bfloat16), (5,)), (jnp.dtype(jnp.float32), (24 + 1 + 2,)),
      (jnp.dtype(jnp.int32), (3,)), (jnp.dtype(jnp.uint32), (2,))]
  restored = jax.jit(layout.unpack)(packed)
  assert jax.tree.structure(restored) == jax.tree.structure(tree)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(tree)):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  # Built from shapes alone, as training builds it from `jax.eval_shape`.
  abstract = packing.Packing(jax.eval_shape(lambda: tree))
  assert all(np.array_equal(a, b) for a, b in zip(abstract.pack(tree), packed))


def test_packing_refuses_a_tree_of_other_leaves():
  tree = _mixed_tree()
  layout = packing.Packing(tree)
  with pytest.raises(ValueError, match='other leaves'):
    layout.pack({**tree, 'w': tree['w'][:2]})
  with pytest.raises(ValueError, match='other leaves'):
    layout.pack({**tree, 'count': tree['count'].astype(jnp.float32)})


@pytest.mark.slow
def test_packed_step_computes_what_the_tree_step_computes(tiny_config, monkeypatch):
  """The compiled step passes the state packed on accelerators and as a pytree on the CPU:
  the same arithmetic, to the last bits that XLA's different fusion of the two programs
  may round otherwise.

  With plain SGD: Adam's first steps move every parameter by about the learning rate
  whatever its gradient, which turns rounding noise in a small gradient into
  differences of a whole step between any two programs.
  """
  monkeypatch.setattr(train_step, 'build_optimizer', lambda opt: optax.sgd(opt.learning_rate))
  tiny_config.loss.content = 'vgg22'
  vgg_params = vgg.random_params(0)
  hr = _fixed_batch(tiny_config)
  models = build.build_models(tiny_config)
  steps = {packed: train_step.CompiledStep(tiny_config, models, train_step.make_mesh(),
                                           vgg_params, packed=packed)
           for packed in (True, False)}
  for step in steps.values():
    step.init(jax.random.PRNGKey(0))
  assert isinstance(steps[True]._loop_state, tuple)  # One array per dtype...
  assert len(steps[True]._loop_state) == 3
  assert isinstance(steps[False]._loop_state, train_step.TrainState)  # ...or the pytree.
  for _ in range(3):
    packed_metrics, metrics = (steps[packed](hr, adversarial=True) for packed in (True, False))
    assert set(metrics) == set(packed_metrics)
    for name in metrics:
      # 1e-5: a few float32 roundings apart (jax 0.6's CPU build put the adversarial loss
      # 1.2e-6 apart after three steps); a misplaced leaf moves a loss by far more.
      np.testing.assert_allclose(packed_metrics[name], metrics[name], rtol=1e-5, err_msg=name)
  unpacked, state = steps[True].state, steps[False].state
  assert int(unpacked.step) == 3
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(state)]
  for path, got, want in zip(paths, jax.tree.leaves(unpacked), jax.tree.leaves(state)):
    assert got.dtype == want.dtype and got.shape == want.shape, path
    # 1e-5: a tenth of the median SGD update of D's conv1 kernel over these three steps
    # (1.3e-4). BatchNorm's backward in float32 turns the two programs' different
    # rounding into gradients a few percent apart in small entries: jax 0.6's CPU build
    # put one conv1 entry 1.9e-6 apart, 5% of its own update. A leaf packed out of place
    # would differ by the parameters themselves (about 0.1 for a kernel, 1e-4 for a
    # bias after three steps).
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                               err_msg=path)


def test_compiled_step_packs_on_accelerators_only(monkeypatch):
  for backend, packed in (('cpu', False), ('gpu', True), ('tpu', True)):
    monkeypatch.setattr(jax, 'default_backend', lambda: backend)
    assert train_step.packs_state() == packed, backend
