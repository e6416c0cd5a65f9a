"""SRResNet-MSE, the paper's first phase: pixel MSE, 1e6 steps at 1e-4, no discriminator."""

from configs import default


def get_config():
  config = default.get_config()
  config.loss.content = 'pixel'
  config.loss.adversarial_weight = 0.0
  config.train.num_steps = 1_000_000
  config.train.checkpoint_every_steps = 10_000
  return config
