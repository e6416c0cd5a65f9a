"""Real-SRResNet, stage 1 of the model for real photos: the shipped SRResNet fine-tuned on
degraded LR with the pixel loss, as Real-ESRNet is fine-tuned from ESRGAN.

  python -m srgan_jax.degrade --data=../shared/data/sr_benchmarks/Set14 --kind=jpeg \
      --quality=50 --output=runs/Set14_jpeg50
  python main.py --config=configs/real_srresnet_291.py --workdir=runs/real_srresnet_291 \
      --config.eval.sets="('runs/Set14_jpeg50', '../shared/data/sr_benchmarks/Set14')"

G starts from `pretrained/srresnet_x4.npz` (`init_from='srresnet'`); the loss (pixel MSE),
optimiser and data are `configs/srresnet_291.py`'s. LR comes from Real-ESRGAN's
degradation inside the step, in a milder, mostly first-order mix made for what people
enlarge (phone and web JPEGs, some sensor noise) rather than Real-ESRGAN's heavy second
order, whose large blurs and resizes teach a model to invent detail that JPEG and noise
did not take away: light blur, noise, a light first JPEG, a faint second noise and a
final JPEG over Real-ESRGAN's 30..95; a fifth of the samples keep the paper's bicubic LR,
so clean detail is kept. HR is not sharpened. best/ keeps the generator with
the best PSNR-Y on the first evaluation set (put the JPEG set first, as above).
"""

from configs import srresnet_291

# Real-ESRGAN's degradation cut down to what phone and web photos go through
# (real_degradation.DEFAULTS explains each field).
PHOTO_DEGRADATION = dict(
    kind='realesrgan',
    sharpen=False,
    blur_sigma=(0.2, 0.8),
    sinc_prob=0.0,
    resize_prob=(0.0, 0.0, 1.0),  # No first resize.
    noise_range=(1.0, 10.0),
    # Poisson noise as strong as that Gaussian: scale 1 gives sigma sqrt(255 x) levels,
    # about 11 at mid-grey (Real-ESRGAN's up to 3 is a very noisy sensor).
    poisson_scale_range=(0.05, 1.0),
    jpeg_range=(90.0, 95.0),
    second_blur_prob=0.0,
    resize_prob2=(0.0, 0.0, 1.0),  # No second resize.
    noise_range2=(1.0, 3.0),
    poisson_scale_range2=(0.05, 0.3),
    jpeg_range2=(30.0, 95.0),
    final_sinc_prob=0.0,
    clean_prob=0.2,
    # Degrade 152x152 crops and train on a 96x96 window of each, about Real-ESRGAN's 400
    # for 256.
    crop_pad_size=152,
)


def get_config():
  config = srresnet_291.get_config()
  config.degradation.update(PHOTO_DEGRADATION)
  config.init_from = 'srresnet'
  config.eval.metrics = ('psnr_y', 'ssim_y', 'lpips_alex')
  return config
