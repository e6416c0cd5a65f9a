"""SRGAN-VGG54, the paper's second phase.

G starts from an SRResNet-MSE run: set --config.init_from=runs/srresnet. VGG54 content
loss + 1e-3 adversarial; 1e5 steps at 1e-4, then 1e5 at 1e-5; one D step per G step.

  python -m srgan_jax.weights fetch vgg19_keras
  python main.py --config=configs/srgan.py --workdir=runs/srgan --config.init_from=runs/srresnet

Expected: the paper's 29.40 dB / 0.8472 on Set5 and 26.02 / 0.7397 on Set14 (x4), lower
PSNR than SRResNet by design, and LPIPS (AlexNet) about 0.088 on Set5 for the paper's
released results (SPSR's table). Measured: not yet run at this length.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.loss.content = 'vgg54'
  config.loss.adversarial_weight = 1e-3
  config.optimizer.learning_rate = 1e-4
  config.optimizer.lr_decay_steps = (100_000,)
  config.optimizer.lr_decay_factor = 0.1
  config.train.num_steps = 200_000
  # With config.eval.sets, best/ keeps the generator of the lowest LPIPS (AlexNet), the
  # perceptual distance SRGAN is judged by (its weights: weights fetch alexnet_torchvision).
  config.eval.metrics = ('psnr_y', 'ssim_y', 'lpips_alex')
  config.eval.best_metric = 'lpips_alex'
  return config
