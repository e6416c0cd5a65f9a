"""Trains the test config for a few steps on a fixed batch and prints losses and a params digest.

Run in a fresh interpreter with XLA_FLAGS=--xla_force_host_platform_device_count=N to
compare device counts: python tests/device_run.py STEPS [compute_dtype]
"""

import json
import sys

import jax
import numpy as np
import optax

from configs import test as test_config
from srgan_jax import train_step
from srgan_jax.models import build


def main():
  steps = int(sys.argv[1])
  config = test_config.get_config()
  config.train.compute_dtype = sys.argv[2] if len(sys.argv) > 2 else 'float32'
  # SGD, so that parameters move by their gradients: Adam's normalised steps would turn
  # float noise in small gradients into full +-lr steps, hiding real differences.
  train_step.build_optimizer = lambda opt_config: optax.sgd(0.05)
  step = train_step.CompiledStep(config, build.build_models(config), train_step.make_mesh())
  step.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(steps):
    hr = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    metrics = step(jax.device_put(hr, step.batch_sharding), adversarial=True)
    losses.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  state = step.state
  leaves = jax.tree.leaves(jax.device_get((state.g_params, state.d_params, state.g_batch_stats,
                                           state.d_batch_stats)))
  print(json.dumps({'devices': jax.device_count(), 'losses': losses,
                    'params': [np.asarray(x, np.float64).ravel().tolist() for x in leaves]}))


if __name__ == '__main__':
  main()
