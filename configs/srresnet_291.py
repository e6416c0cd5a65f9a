"""SRResNet-MSE on the classic 291 images (BSDS200 + T91), offline: the paper's model.

  python main.py --config=configs/srresnet_291.py --workdir=runs/srresnet_291

The paper's G (16 blocks, 64 channels), loss (pixel MSE), optimiser (Adam, 1e-4) and
batch (16 random 96x96 HR crops, LR by MATLAB bicubic x4), on the 291-image set that SR
papers before DIV2K trained on, read from a folder (`SRGAN_JAX_DATA`, default
../shared/data, holding sr_train/ and sr_benchmarks/). Evaluated on Set5 and Set14
every 5,000 steps; best/ keeps the generator with the best Set5 PSNR.

Expected: the paper's SRResNet reaches 32.05 dB on Set5 after 10^6 steps on ImageNet
crops; VDSR, trained on these 291 images, reports 31.35 dB on Set5 at x4 (Kim et al. 2016).
Measured: `pretrained/srresnet_x4.npz` is this config on 2 CPU cores with batch 8 of
64x64 crops at 2e-4 (--config.train.batch_size=8 --config.data.hr_crop_size=64
--config.optimizer.learning_rate=2e-4); its steps, figures and command are in
pretrained/README.md, its training curve in the benchmarks folder.
"""

import os

from configs import default

DATA = os.environ.get('SRGAN_JAX_DATA') or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared', 'data')


def get_config():
  config = default.get_config()
  config.loss.content = 'pixel'
  config.loss.adversarial_weight = 0.0
  config.data.source = 'folder:' + os.path.normpath(os.path.join(DATA, 'sr_train'))
  config.data.decode_threads = 2
  config.train.num_steps = 1_000_000
  # No EMA: BatchNorm's running statistics follow the raw params, and with them an EMA
  # of the params scores well below the params themselves while they still move
  # (benchmarks/README.md links the measurement).
  config.train.ema_decay = 0.0
  config.train.log_every_steps = 100
  config.train.image_every_steps = 5000
  config.train.checkpoint_every_steps = 5000
  config.eval.sets = tuple(os.path.normpath(os.path.join(DATA, 'sr_benchmarks', name))
                           for name in ('Set5', 'Set14'))
  config.eval.every_steps = 5000
  return config
