"""Real-SRGAN, stage 2 of the model for real photos: Real-ESRGAN's losses on stage 1's G.

  python -m srgan_jax.weights fetch vgg19_keras
  python -m srgan_jax.weights fetch alexnet_torchvision   # LPIPS, which picks best/
  python main.py --config=configs/real_srgan_291.py --workdir=runs/real_srgan_291 \
      --config.eval.sets="('runs/Set14_jpeg50', '../shared/data/sr_benchmarks/Set14')"

G starts from stage 1 (`pretrained/real_srresnet_x4.npz`, `configs/real_srresnet_291.py`),
D (the paper's) from scratch; the data and the photo-like degradation are stage 1's. The
loss is Real-ESRGAN's (train_realesrgan_x4plus.yml), in this project's units:

- L1 pixel, weight 0.5 on images in [-1, 1]: Real-ESRGAN's 1.0 on [0, 1].
- L1 perceptual on VGG19 conv1_2, conv2_2, conv3_4, conv4_4 and conv5_4 before their ReLU,
  weights 0.1, 0.1, 1, 1, 1. The Keras VGG19 takes 0..255 input where Real-ESRGAN's
  torchvision VGG19 takes [0, 1] divided by ImageNet's std (about 0.226): features are
  multiplied by 1/57.5 (= 1 / (255 x 0.226)) to bring them to that scale.
- adversarial, weight 0.1, non-saturating BCE, one D step per G step, Adam at 1e-4.
- the phase loss (`losses.phase_loss`), weight 1, not in Real-ESRGAN: its U-Net D and
  RRDB G differ from the paper's D and pixel-shuffle G, whose 16 output phases the
  perceptual and adversarial gradients otherwise drive into a fine grid.

best/ keeps the generator with the lowest LPIPS-alex on the first evaluation set (put the
JPEG set first, as above).
"""

from configs import real_srresnet_291


def get_config():
  config = real_srresnet_291.get_config()
  config.init_from = 'real_srresnet'
  config.loss.content = 'vgg12,vgg22,vgg34,vgg44,vgg54'
  config.loss.vgg_layer_weights = (0.1, 0.1, 1.0, 1.0, 1.0)
  config.loss.vgg_after_activation = False
  config.loss.vgg_feature_scale = 1 / 57.5
  config.loss.criterion = 'l1'
  config.loss.pixel_weight = 0.5
  config.loss.adversarial_weight = 0.1
  config.loss.phase_weight = 1.0
  config.vgg.source = 'keras'
  config.optimizer.learning_rate = 1e-4
  config.eval.metrics = ('psnr_y', 'ssim_y', 'lpips_alex')
  config.eval.best_metric = 'lpips_alex'
  return config
