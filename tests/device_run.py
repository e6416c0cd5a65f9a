"""Trains the test config for a few steps on a fixed batch and prints losses and a params digest.

Run in a fresh interpreter with XLA_FLAGS=--xla_force_host_platform_device_count=N to
compare device counts: python tests/device_run.py STEPS [compute_dtype]
"""

import json
import sys

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import test as test_config
from srgan_jax import train


def main():
  steps = int(sys.argv[1])
  config = test_config.get_config()
  config.train.compute_dtype = sys.argv[2] if len(sys.argv) > 2 else 'float32'
  mesh = train.make_mesh()
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
  init = lambda rng: train.init_state(config, rng)
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  state_sharding = jax.tree.map(lambda _: replicated, abstract)
  state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(0))
  # SGD, so that parameters move by their gradients: Adam turns the float noise of
  # gradients that are zero in exact arithmetic (conv biases before a BatchNorm) into
  # full +-lr steps, which would hide real differences behind sign flips of noise.
  sgd = optax.sgd(0.05)
  state = state.replace(g_tx=sgd, d_tx=sgd, g_opt_state=sgd.init(state.g_params),
                        d_opt_state=sgd.init(state.d_params))
  state_sharding = jax.tree.map(lambda _: replicated, state)
  step = jax.jit(train.make_train_step(config, adversarial=True),
                 in_shardings=(state_sharding, batch_sharding, replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  rng = np.random.default_rng(0)
  losses = []
  for i in range(steps):
    hr = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    state, metrics = step(state, jax.device_put(hr, batch_sharding), {})
    losses.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  leaves = jax.tree.leaves(jax.device_get((state.g_params, state.d_params, state.g_batch_stats,
                                           state.d_batch_stats)))
  print(json.dumps({'devices': jax.device_count(), 'losses': losses,
                    'params': [np.asarray(x, np.float64).ravel().tolist() for x in leaves]}))


if __name__ == '__main__':
  main()
