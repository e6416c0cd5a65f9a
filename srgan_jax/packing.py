"""The train state as one array per dtype between steps (`train_step.CompiledStep`'s choice).

Every array passed to or returned from a compiled call costs the host a few microseconds
(its buffer is checked, donated and wrapped anew), before any kernel runs. The SRResNet
state is about 700 arrays and SRGAN's about 800; on a GPU that cost rivals the SRResNet
step's kernels, and packed, the same step runs much faster (benchmarks/README.md). So
the compiled step keeps the state packed on accelerators, and unpacks it only when
asked for it (to save, evaluate or preview). On the CPU it is the other way round:
copying the state into one array costs more than passing its arrays (`NoPacking`).

Packing itself is exact (slices and concatenation, no casts); a packed step computes
what the step computes, up to the last bits that XLA's fusion of the larger program may
round differently. Unpacking and repacking inside the step cost the device little.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


class Packing:
  """A pytree of a fixed structure as one 1-D array per dtype, and back.

  Built from the tree, or from its `jax.eval_shape`; `pack` and `unpack` are pure and
  run under jit. The packed form is a tuple with one array per dtype present, in the
  order of `dtypes` (e.g. float32 [n_f32], int32 [n_i32], uint32 [n_u32] for a train
  state), leaves in `jax.tree` order within each.
  """

  def __init__(self, tree: Any):
    leaves, self.treedef = jax.tree.flatten(tree)
    self.shapes = [tuple(leaf.shape) for leaf in leaves]
    self.leaf_dtypes = [jnp.dtype(leaf.dtype) for leaf in leaves]
    self.dtypes = sorted(set(self.leaf_dtypes), key=str)

  def pack(self, tree: Any) -> tuple:
    leaves = jax.tree.leaves(tree)
    # Compared by leaves, not treedef: a train state's static optimisers are built anew
    # (equal in behaviour, not in identity) each time the state is.
    found = [(tuple(leaf.shape), jnp.dtype(leaf.dtype)) for leaf in leaves]
    if found != list(zip(self.shapes, self.leaf_dtypes)):
      raise ValueError(f'cannot pack a tree of other leaves: {len(found)} leaves, expected '
                       f'{len(self.shapes)} of the shapes and dtypes this Packing was built from')
    return tuple(
        jnp.concatenate([jnp.ravel(leaf) for leaf, leaf_dtype in zip(leaves, self.leaf_dtypes)
                         if leaf_dtype == dtype]) for dtype in self.dtypes)

  def unpack(self, packed: tuple) -> Any:
    offsets = dict.fromkeys(self.dtypes, 0)
    by_dtype = dict(zip(self.dtypes, packed))
    leaves = []
    for shape, dtype in zip(self.shapes, self.leaf_dtypes):
      size = int(np.prod(shape))
      leaves.append(by_dtype[dtype][offsets[dtype]:offsets[dtype] + size].reshape(shape))
      offsets[dtype] += size
    return self.treedef.unflatten(leaves)


class NoPacking:
  """The pytree as it is: `pack` and `unpack` return their argument (the 'tree' form)."""

  def pack(self, tree: Any) -> Any:
    return tree

  def unpack(self, tree: Any) -> Any:
    return tree


def packed_step(step_fn: Callable, state_packing: Packing | NoPacking,
                vgg_packing: Packing | NoPacking) -> Callable:
  """`step_fn(state, hr, vgg_params, kernels) -> (state, metrics)` on packed state and VGG
  params.

  The returned function takes and returns the state packed by `state_packing`, and takes
  the VGG params packed by `vgg_packing`; it computes what `step_fn` computes. With
  `NoPacking` for both it is `step_fn` itself.
  """

  def step(packed_state: tuple, hr_uint8: jax.Array, packed_vgg_params: tuple, kernels=None):
    state, metrics = step_fn(state_packing.unpack(packed_state), hr_uint8,
                             vgg_packing.unpack(packed_vgg_params), kernels)
    return state_packing.pack(state), metrics

  return step
