"""SRResNet-MSE for real photos: the paper's G on the 291 images, LR by Real-ESRGAN's degradation.

  python main.py --config=configs/real_srresnet_291.py --workdir=runs/real_srresnet_291

`configs/srresnet_291.py` with `degradation.kind='realesrgan'`: each HR crop is USM-sharpened
and degraded inside the step by Real-ESRGAN's second-order blur, resize, noise and JPEG
(srgan_jax/real_degradation.py, BasicSR's train_realesrnet_x4plus.yml settings), the blur
kernels drawn in the data workers. Evaluated on Set5 and Set14's bicubic LR like the paper's
model; to score it on degraded inputs, write a degraded set once and add it:
  python -m srgan_jax.degrade --data=../shared/data/sr_benchmarks/Set14 --seed=0 \
      --output=runs/Set14_realesrgan
  ... --config.eval.sets="('../shared/data/sr_benchmarks/Set14', 'runs/Set14_realesrgan')"
"""

from configs import srresnet_291


def get_config():
  config = srresnet_291.get_config()
  config.degradation.kind = 'realesrgan'
  # Degrade 152x152 crops and train on a 96x96 window of each, about Real-ESRGAN's 400 for 256.
  config.degradation.crop_pad_size = 152
  return config
