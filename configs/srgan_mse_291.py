"""SRGAN-MSE on the 291 images: the paper's SRGAN variant with a pixel content loss.

  python -m srgan_jax.weights fetch alexnet_torchvision   # LPIPS, which picks best/
  python main.py --config=configs/srgan_mse_291.py --workdir=runs/srgan_mse_291

G starts from the shipped SRResNet (`pretrained/srresnet_x4.npz`, trained by
`configs/srresnet_291.py`; `--config.init_from=runs/srresnet_291` starts from a run of
your own); the loss is pixel MSE + 1e-3 adversarial, one D step per G step, 10^5 steps at
1e-4 then 10^5 at 1e-5, as the paper trains SRGAN. It needs no VGG weights (the paper's
SRGAN-VGG54 does). Beside the paper's loss, the phase term (`losses.phase_loss`) keeps
D's strided gradients from drawing a grid through the 16 phases of the pixel shuffle. Its
weight, 0.01, keeps it near the pixel loss (about 0.015 for this G): the term is noisy on
64x64 crops, and five times that weight outweighs both other terms and stalls LPIPS.
Evaluation and export see an EMA of G's params: a GAN's generator swings from step to
step, and its recent average is the steadier model. best/ keeps the generator with the
lowest Set14 LPIPS (AlexNet). Expected: PSNR below the SRResNet it starts from (the
paper: SRGAN-MSE 30.64 dB on Set5 against SRResNet's 32.05), a lower NIQE and LPIPS.
Measured: pretrained/README.md gives the shipped run's command, steps and figures.
"""

from configs import srgan, srresnet_291


def get_config():
  config = srresnet_291.get_config()  # The 291 images, Set5 and Set14, pixel MSE.
  paper = srgan.get_config()
  config.loss.adversarial_weight = paper.loss.adversarial_weight
  config.loss.phase_weight = 0.01
  config.optimizer = paper.optimizer  # 1e-4, then 1e-5 after 10^5 steps.
  config.train.num_steps = paper.train.num_steps
  config.train.ema_decay = 0.995
  config.eval.metrics = paper.eval.metrics + ('grid',)
  config.eval.best_metric = paper.eval.best_metric
  config.eval.sets = tuple(reversed(config.eval.sets))  # Set14 first: best/ follows it.
  config.init_from = 'srresnet'
  return config
