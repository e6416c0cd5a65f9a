"""SRResNet-MSE, the paper's first phase: pixel MSE, 1e6 steps at 1e-4, no discriminator.

  python main.py --config=configs/srresnet.py --workdir=runs/srresnet

On DIV2K (TFDS, downloaded on first use). Expected: the paper's 32.05 dB / 0.9019 on
Set5 and 28.49 / 0.8184 on Set14 (x4; it trained on ImageNet crops). Measured: not yet
run at this length; configs/srresnet_291.py is the offline recipe with a measured run.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.loss.content = 'pixel'
  config.loss.adversarial_weight = 0.0
  config.train.num_steps = 1_000_000
  config.train.checkpoint_every_steps = 10_000
  return config
