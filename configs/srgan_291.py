"""SRGAN-VGG54 on the 291 images: the paper's SRGAN, second phase.

  python -m srgan_jax.weights fetch vgg19_keras
  python -m srgan_jax.weights fetch alexnet_torchvision   # LPIPS, which picks best/
  python main.py --config=configs/srgan_291.py --workdir=runs/srgan_291

G starts from the shipped SRResNet (`pretrained/srresnet_x4.npz`, trained by
`configs/srresnet_291.py`); D starts from scratch. The paper's loss: VGG54 content (the
Keras VGG19's conv5_4 features before the fifth pool, scaled by 1/12.75) + 1e-3
adversarial, Adam at 1e-4 for both, one D step per G step; 10^5 steps at 1e-4, then 10^5
at 1e-5. Evaluated on Set14 and Set5; best/ keeps the generator with the lowest Set14 LPIPS
(AlexNet), the perceptual distance SRGAN is judged by. Expected: the paper's SRGAN
scores 29.40 / 26.02 dB PSNR on Set5 / Set14 and LPIPS 0.0882 / 0.1843 (SPSR's table).
Measured: pretrained/README.md gives the shipped run's command, steps and figures.
"""

from configs import srresnet_291


def get_config():
  config = srresnet_291.get_config()
  config.init_from = 'srresnet'
  config.loss.content = 'vgg54'
  config.loss.adversarial_weight = 1e-3
  config.vgg.source = 'keras'
  config.optimizer.learning_rate = 1e-4
  config.optimizer.lr_decay_steps = (100_000,)
  config.optimizer.lr_decay_factor = 0.1
  config.train.num_steps = 200_000
  config.eval.metrics = ('psnr_y', 'ssim_y', 'lpips_alex')
  config.eval.best_metric = 'lpips_alex'
  config.eval.sets = tuple(reversed(config.eval.sets))  # Set14 first: best/ follows it.
  return config
