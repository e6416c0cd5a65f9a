"""A PyTorch model of the same SRGAN architecture and step, for side-by-side timing only.

Same layers as srgan_jax (SRResNet G, the 8-conv D, VGG19 to conv5_4), same step: G
forward once, D update on (HR, SR.detach()), G update on content + 1e-3 adversarial
through the updated D. Optional dependency.

Set up as a careful PyTorch user would, so that a ratio against it is not flattered:
bf16 via autocast, channels-last memory, cuDNN autotuning (`cudnn.benchmark`, as XLA
autotunes its convolutions), fused Adam on CUDA, and D's weights frozen while G's loss
is differentiated (the JAX step takes the gradient with respect to SR only). Each of
these is a field of `Settings`; undoing any of them made the step slower on a GPU
(benchmarks/RESULTS.md). As in ours, a conv that feeds a BatchNorm has no bias.
"""

import dataclasses

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from benchmarks import common


class ResidualBlock(nn.Module):

  def __init__(self, c):
    super().__init__()
    self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                              nn.PReLU(), nn.Conv2d(c, c, 3, padding=1, bias=False),
                              nn.BatchNorm2d(c))

  def forward(self, x):
    return x + self.body(x)


class Generator(nn.Module):

  def __init__(self, blocks=16, c=64):
    super().__init__()
    self.head = nn.Sequential(nn.Conv2d(3, c, 9, padding=4), nn.PReLU())
    self.body = nn.Sequential(*[ResidualBlock(c) for _ in range(blocks)],
                              nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
    self.up = nn.Sequential(*[m for _ in range(2) for m in
                              (nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.PReLU())])
    self.tail = nn.Conv2d(c, 3, 9, padding=4)

  def forward(self, lr):
    x = self.head(lr)
    return torch.tanh(self.tail(self.up(x + self.body(x))))


def generator_from_flax(variables, blocks: int = 16, c: int = 64) -> Generator:
  """Our x4 G's {'params', 'batch_stats'} copied into the PyTorch Generator, in eval mode."""
  params, stats = variables['params'], variables['batch_stats']
  model = Generator(blocks, c).eval()
  tensor = lambda x: torch.from_numpy(np.array(x, np.float32))

  def conv(module, p, channel_order=None):
    kernel = np.asarray(p['kernel']).transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if ('bias' in p) != (module.bias is not None):
      raise ValueError('the conv biases differ: both nets drop the bias of a conv before BN')
    if channel_order is not None:
      kernel = kernel[channel_order]
    module.weight.data = tensor(kernel)
    if 'bias' in p:
      bias = np.asarray(p['bias'])
      module.bias.data = tensor(bias if channel_order is None else bias[channel_order])

  def norm(module, p, s):
    module.weight.data, module.bias.data = tensor(p['scale']), tensor(p['bias'])
    module.running_mean.data, module.running_var.data = tensor(s['mean']), tensor(s['var'])

  def prelu(module, p):
    module.weight.data = tensor(np.reshape(p['negative_slope'], (1,)))

  conv(model.head[0], params['conv_in'])
  prelu(model.head[1], params['prelu_in'])
  for i in range(blocks):
    body, p, s = model.body[i].body, params[f'block{i}'], stats[f'block{i}']
    conv(body[0], p['conv1'])
    norm(body[1], p['bn1'], s['bn1'])
    prelu(body[2], p['prelu'])
    conv(body[3], p['conv2'])
    norm(body[4], p['bn2'], s['bn2'])
  conv(model.body[blocks], params['conv_body'])
  norm(model.body[blocks + 1], params['bn_body'], stats['bn_body'])
  # Our shuffle reads channels as (row offset, column offset, C), PyTorch's as (C, row, column).
  order = np.arange(4 * c).reshape(2, 2, c).transpose(2, 0, 1).reshape(-1)
  for i in range(2):
    conv(model.up[3 * i], params[f'conv_up{i}'], order)
    prelu(model.up[3 * i + 2], params[f'prelu_up{i}'])
  conv(model.tail, params['conv_out'])
  return model


class Discriminator(nn.Module):

  def __init__(self, crop=96):
    super().__init__()
    layers, cin = [], 3
    for i, c in enumerate((64, 64, 128, 128, 256, 256, 512, 512)):
      layers.append(nn.Conv2d(cin, c, 3, stride=2 if i % 2 else 1, padding=1, bias=i == 0))
      if i:
        layers.append(nn.BatchNorm2d(c))
      layers.append(nn.LeakyReLU(0.2))
      cin = c
    self.features = nn.Sequential(*layers)
    self.head = nn.Sequential(nn.Flatten(), nn.Linear(512 * (crop // 16) ** 2, 1024),
                              nn.LeakyReLU(0.2), nn.Linear(1024, 1))

  def forward(self, x):
    return self.head(self.features(x))[:, 0]


def vgg19_to_conv5_4():
  layers, cin = [], 3
  for block, count, c in ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512)):
    if block > 1:
      layers.append(nn.MaxPool2d(2))
    for _ in range(count):
      layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU()]
      cin = c
  return nn.Sequential(*layers)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the reference runs; the defaults are the careful user's choices."""
  channels_last: bool = True  # NHWC memory, which cuDNN's tensor-core kernels read.
  cudnn_benchmark: bool = True  # Shapes are fixed: let cuDNN pick algorithms by timing.
  fused_adam: bool = True  # On CUDA: one kernel per parameter group, not several per tensor.
  freeze_d: bool = True  # G's update asks for d/dSR through D, not D's weight gradients.
  # bf16 by autocast: fp32 weights and Adam, as our step keeps them. Off, a bfloat16 step
  # casts the networks themselves to bf16 (weights, optimiser and all): less careful,
  # and one cast fewer per weight per step.
  autocast: bool = True
  compile_mode: str = ''  # torch.compile G, D and VGG with this mode; '' runs eager.


def _device(settings: Settings = Settings()) -> str:
  if torch.cuda.is_available():
    # A global switch: set before each timing, from the settings it runs with.
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    return 'cuda'
  return 'cpu'


def make_step(model: str, batch: int, dtype: str, crop: int, settings: Settings = Settings()):
  """(step, modules): `step()` runs one training step on a fixed random batch.

  `modules` is {'g', 'd', 'vgg'}, for tests that look at what a step changed.
  """
  device = _device(settings)
  fmt = torch.channels_last if settings.channels_last else torch.contiguous_format
  bf16_networks = dtype == 'bfloat16' and not settings.autocast
  float_type = torch.bfloat16 if bf16_networks else torch.float32
  g = Generator().to(device, float_type, memory_format=fmt)
  d = Discriminator(crop).to(device, float_type, memory_format=fmt)
  vgg = vgg19_to_conv5_4().to(device, float_type, memory_format=fmt).requires_grad_(False)
  fused = device == 'cuda' and settings.fused_adam
  g_opt = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.9, 0.999), fused=fused)
  d_opt = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.9, 0.999), fused=fused)
  hr = (torch.rand(batch, 3, crop, crop, device=device, dtype=float_type) * 2 - 1).contiguous(
      memory_format=fmt)
  lr = F.avg_pool2d((hr + 1) / 2, 4).contiguous(memory_format=fmt)  # degradation not timed here
  autocast = torch.autocast(device, dtype=torch.bfloat16,
                            enabled=dtype == 'bfloat16' and settings.autocast)

  def srgan_step():
    with autocast:
      sr = g(lr)
      real_logits, fake_logits = d(hr), d(sr.detach())
      d_loss = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) +
                F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    d.requires_grad_(not settings.freeze_d)
    with autocast:
      with torch.no_grad():
        hr_features = vgg(hr)
      content = F.mse_loss(vgg(sr) / 12.75, hr_features / 12.75)
      logits = d(sr)
      adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
      g_loss = content + 1e-3 * adversarial
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    d.requires_grad_(True)
    return g_loss

  def srresnet_step():
    with autocast:
      loss = F.mse_loss(g(lr), hr)
    g_opt.zero_grad(set_to_none=True)
    loss.backward()
    g_opt.step()
    return loss

  step = srgan_step if model == 'srgan' else srresnet_step
  if settings.compile_mode:
    for module in (g, d, vgg):
      module.forward = torch.compile(module.forward, mode=settings.compile_mode)
  if settings.compile_mode == 'reduce-overhead':
    # CUDA graphs reuse their output memory: each step must say where it begins, or the
    # next replay overwrites outputs still in use ("accessing tensor output of CUDAGraphs
    # that has been overwritten by a subsequent run").
    eager_step = step

    def step():
      torch.compiler.cudagraph_mark_step_begin()
      return eager_step()
  return step, {'g': g, 'd': d, 'vgg': vgg}


def synchronize():
  """Waits for the GPU's queue to drain (nothing to wait for on the CPU)."""
  if torch.cuda.is_available():
    torch.cuda.synchronize()


def time_calls(fn, warmup: int, iters: int, settings: Settings = Settings()) -> float:
  """Seconds per call of fn(), after warm-up, with the settings' global switches set."""
  _device(settings)
  return common.time_calls(fn, warmup, iters, wait=lambda _: synchronize())


def time_step(model: str, batch: int, dtype: str, crop: int, warmup: int, iters: int,
              settings: Settings = Settings()) -> float:
  """Seconds per training step."""
  step, _ = make_step(model, batch, dtype, crop, settings)
  return time_calls(step, warmup, iters, settings)


def time_generator(lr_size: int, dtype: str, warmup: int, iters: int, compile_model: bool) -> float:
  """Seconds for G (inference mode) on one [1, 3, lr_size, lr_size] image."""
  device = _device()
  g = Generator().to(device, memory_format=torch.channels_last).eval()
  if compile_model:
    g = torch.compile(g)
  lr = torch.rand(1, 3, lr_size, lr_size, device=device).contiguous(memory_format=torch.channels_last)
  with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
    return time_calls(lambda: g(lr), warmup, iters)
