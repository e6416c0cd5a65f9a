"""SRGAN-MSE for real photos: `configs/srgan_mse_291.py` on Real-ESRGAN's degradation.

  python main.py --config=configs/real_srgan_mse_291.py --workdir=runs/real_srgan_mse_291 \
      --config.init_from=runs/real_srresnet_291

G starts from a `configs/real_srresnet_291.py` run; D sees the USM-sharpened HR as real, as
Real-ESRGAN's does (its gan_gt is gt_usm).
"""

from configs import srgan_mse_291


def get_config():
  config = srgan_mse_291.get_config()
  config.degradation.kind = 'realesrgan'
  # Degrade 152x152 crops and train on a 96x96 window of each, about Real-ESRGAN's 400 for 256.
  config.degradation.crop_pad_size = 152
  return config
