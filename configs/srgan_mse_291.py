"""SRGAN-MSE on the 291 images: the paper's SRGAN variant with a pixel content loss.

  python main.py --config=configs/srgan_mse_291.py --workdir=runs/srgan_mse_291 \
      --config.init_from=runs/srresnet_291

G starts from an SRResNet-MSE run (`configs/srresnet_291.py`); the loss is pixel MSE +
1e-3 adversarial, one D step per G step, 10^5 steps at 1e-4 then 10^5 at 1e-5, as the
paper trains SRGAN. It needs no VGG weights (the paper's SRGAN-VGG54 does). Expected:
PSNR below the SRResNet it starts from (the paper: SRGAN-MSE 30.64 dB on Set5 against
SRResNet's 32.05), sharper textures. Evaluated on Set5 and Set14 every 5,000 steps.
Measured: only in benchmarks/reproduce.sh's short runs so far (benchmarks/README.md).
"""

from configs import srresnet_291


def get_config():
  config = srresnet_291.get_config()
  config.loss.adversarial_weight = 1e-3
  config.optimizer.lr_decay_steps = (100_000,)
  config.optimizer.lr_decay_factor = 0.1
  config.train.num_steps = 200_000
  return config
