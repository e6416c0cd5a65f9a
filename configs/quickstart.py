"""Quickstart: a small SRResNet then SRGAN-MSE on images that ship with scikit-image.

Runs offline in under 10 minutes on a 2-core CPU:
  python main.py --config=configs/quickstart.py --workdir=runs/quickstart

What differs from the paper, and why (the CPU budget):
- a smaller G: 4 residual blocks of 32 channels (the paper: 16 of 64), and a 6-layer
  D of 32-128 channels with a 256-wide dense layer;
- batches of 8 64x64 HR crops (the paper: 16 of 96x96); learning rate 1e-3 (the paper:
  1e-4), 1e-4 from step 1800 and 1e-5 in the short GAN phase, so that 300 GAN steps add
  adversarial training without undoing the warm-up's PSNR;
- phases in one run: SRResNet-MSE warm-up for `adversarial_start_step` steps, then the
  paper's SRGAN-MSE variant (pixel MSE + 1e-3 adversarial), one D step per G step.
Held-out evaluation: astronaut and coffee, never in the training source.
G's output conv runs in its subpixel2 form (same params and results,
`srgan_jax/models/layers.py`), the fastest for this small model on a CPU; its time and
result are in benchmarks/README.md.
"""

from configs import default

TRAIN_IMAGES = ('chelsea,rocket,hubble_deep_field,retina,motorcycle_left,ihc,camera,moon,'
                'coins,clock_motion')


def get_config():
  config = default.get_config()
  config.generator.num_blocks = 4
  config.generator.features = 32
  config.generator.output_conv = 'subpixel2'
  config.discriminator.features = (32, 32, 64, 64, 128, 128)
  config.discriminator.dense_features = 256
  config.loss.content = 'pixel'
  config.loss.adversarial_weight = 1e-3
  config.loss.adversarial_start_step = 2400
  config.optimizer.learning_rate = 1e-3
  config.optimizer.lr_decay_steps = (1800, 2400)
  config.optimizer.lr_decay_factor = 0.1
  config.data.source = 'skimage:' + TRAIN_IMAGES
  config.data.hr_crop_size = 64
  config.data.decode_threads = 2
  config.train.batch_size = 8
  config.train.num_steps = 2700
  config.train.ema_decay = 0.99
  config.train.log_every_steps = 100
  config.train.image_every_steps = 900
  config.train.checkpoint_every_steps = 900
  config.eval.sets = ('skimage:astronaut,coffee',)
  config.eval.every_steps = 900
  return config
