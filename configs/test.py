"""A tiny run for tests: 2 blocks of 8 channels, 32x32 crops, batch 8, a few steps.

Trains on images that scikit-image ships (no network), content loss pixel MSE, D on
after 2 steps so both step functions run.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.generator.num_blocks = 2
  config.generator.features = 8
  config.discriminator.features = (8, 8, 16, 16)
  config.discriminator.dense_features = 16
  config.loss.content = 'pixel'
  config.loss.adversarial_weight = 1e-3
  config.loss.adversarial_start_step = 2
  config.optimizer.learning_rate = 1e-3
  config.data.source = 'skimage:chelsea,coffee,rocket'
  config.data.hr_crop_size = 32
  config.data.decode_threads = 2
  config.train.batch_size = 8
  config.train.num_steps = 6
  config.train.log_every_steps = 2
  config.train.image_every_steps = 3
  config.train.checkpoint_every_steps = 3
  config.eval.sets = ('skimage:astronaut',)
  return config
