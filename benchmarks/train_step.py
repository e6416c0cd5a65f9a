"""Speed of the SRGAN and SRResNet training steps: ms/step, images/s, model-FLOP utilisation.

  python benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=16,64 \
      --dtypes=float32,bfloat16 --peak_tflops=989 [--torch [--torch_compile]]

Times the step as training runs it (`train_step.CompiledStep`) on one device, with a
fixed uint8 HR batch already there (the input is benchmarked separately), after warm-up,
blocking on the results. MFU = analytic FLOPs (benchmarks/README.md) / time / peak.
With --torch, the PyTorch model of the same architecture and step
(benchmarks/torch_reference.py) is timed in the same run and the ratio printed;
--torch_compile times it under torch.compile(mode="reduce-overhead") (CUDA graphs), its
fastest form on a GPU. --degradations=bicubic,realesrgan times the step with each LR
synthesis, and for the real-world one its degradation alone (its share of the step),
--output_convs times each form of G's output conv, and
--state_forms the state packed into one array per dtype against its pytree (what the
compiled step chooses by backend). --profile=DIR writes a `jax.profiler` trace of a few
steps of each variant, to open in XProf or TensorBoard.
"""

import argparse
import functools
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from benchmarks import common
from configs import default, real_srgan_291
from srgan_jax import blur_kernels, train_step
from srgan_jax.models import build, vgg


ADVERSARIAL = ('srgan', 'real_srgan')


def step_config(model: str, batch: int, dtype: str, crop: int, output_conv: str,
                degradation: str = 'bicubic', crop_pad_size: int = 0):
  """srgan: the paper's VGG54 + 1e-3 adversarial step; srresnet: pixel MSE;
  real_srgan: configs/real_srgan_291.py (L1 pixel, five-layer L1 perceptual, 0.1
  adversarial, its photo-like degradation when `degradation` is realesrgan)."""
  if model == 'real_srgan':
    config = real_srgan_291.get_config()
    config.degradation.kind = degradation
  else:
    config = default.get_config()
    config.degradation.kind = degradation
    config.loss.content = 'vgg54' if model == 'srgan' else 'pixel'
    config.loss.adversarial_weight = 1e-3 if model == 'srgan' else 0.0
  config.degradation.crop_pad_size = crop_pad_size
  config.generator.output_conv = output_conv
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.data.hr_crop_size = crop
  return config


class StepRunner:
  """The compiled train step on a fixed random HR batch already on the device.

  Calling it runs one step and returns the metrics (device arrays), also kept as `metrics`.
  `packed`: as `train_step.CompiledStep` (None: its choice for this backend).
  """

  def __init__(self, config, model: str, packed=None):
    batch, crop = config.train.batch_size, config.data.hr_crop_size
    self.adversarial = model in ADVERSARIAL
    vgg_params = vgg.random_params() if self.adversarial else {}
    self.step = train_step.CompiledStep(config, build.build_models(config),
                                        train_step.make_mesh(), vgg_params, 'keras', packed)
    self.step.init(jax.random.PRNGKey(0))
    if config.degradation.kind == 'realesrgan' and config.degradation.crop_pad_size:
      crop = config.degradation.crop_pad_size  # Degraded at this size, trained on `crop`.
    hr = np.random.default_rng(0).integers(0, 256, (batch, crop, crop, 3), np.uint8)
    self.hr = jax.device_put(hr, self.step.batch_sharding)
    self.kernels = None
    if config.degradation.kind == 'realesrgan':  # The host's kernels, made once.
      self.kernels = jax.device_put(blur_kernels.batch_kernels(config.degradation, 0, 0,
                                                               range(batch)),
                                    self.step.batch_sharding)
    self.metrics = None
    self.config = config

  def __call__(self):
    self.metrics = self.step(self.hr, self.adversarial, kernels=self.kernels)
    return self.metrics

  def degradation_seconds(self, warmup: int, iters: int) -> float:
    """Seconds per call of the step's degradation alone (a new key per call, as the step's
    draws change per step)."""
    degrade = jax.jit(functools.partial(train_step.degrade, self.config))
    calls = itertools.count()
    return common.time_calls(
        lambda: degrade(jax.random.PRNGKey(next(calls)), self.hr, self.kernels), warmup, iters)


STATE_FORMS = {'auto': None, 'packed': True, 'tree': False}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default='srgan,srresnet', help='comma list: srgan, srresnet, real_srgan')
  parser.add_argument('--batch_sizes', default='16,64', help='comma list of global batch sizes')
  parser.add_argument('--dtypes', default='float32,bfloat16', help='comma list of compute dtypes')
  parser.add_argument('--crop', type=int, default=96, help='HR crop side (FLOPs scale with its area)')
  parser.add_argument('--output_convs', default='subpixel4',
                      help='comma list of config.generator.output_conv: '
                           'direct, subpixel2, subpixel4')
  parser.add_argument('--crop_pad_size', type=int, default=0,
                      help="the real-world degradation's HR side before the --crop window is "
                           'cut (config.degradation.crop_pad_size; 0: --crop)')
  parser.add_argument('--degradations', default='bicubic',
                      help='comma list of config.degradation.kind: bicubic, realesrgan '
                           '(then the degradation alone is timed too, and its share printed)')
  parser.add_argument('--state_forms', default='auto',
                      help='comma list: auto (the compiled step\'s choice here), packed, tree')
  parser.add_argument('--warmup', type=int, default=3,
                      help='untimed steps before each timing (compile included)')
  parser.add_argument('--iters', type=int, default=20, help='timed steps')
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help='device peak for MFU, e.g. 989 (H100 SXM bf16 dense); 0: no MFU')
  parser.add_argument('--torch', action='store_true', help='also time benchmarks/torch_reference.py')
  parser.add_argument('--torch_compile', action='store_true',
                      help='time the reference under torch.compile(mode="reduce-overhead")')
  parser.add_argument('--profile', default='',
                      help='write a jax.profiler trace of 5 steps per variant under this folder')
  parser.add_argument('--json', default='', help='append one JSON line per figure to this file')
  args = common.parse_args(parser)
  if args.iters < 1 or args.warmup < 0:
    parser.error('--iters must be at least 1 and --warmup at least 0')
  forms = args.state_forms.split(',')
  if set(forms) - set(STATE_FORMS):
    parser.error(f'--state_forms takes {sorted(STATE_FORMS)}, got {args.state_forms!r}')

  torch_seconds = {}  # (model, batch, dtype) -> seconds: one reference per JAX variant set.
  for model, batch, dtype, output_conv, form, kind in itertools.product(
      args.models.split(','), map(int, args.batch_sizes.split(',')), args.dtypes.split(','),
      args.output_convs.split(','), forms, args.degradations.split(',')):
    config = step_config(model, batch, dtype, args.crop, output_conv, kind, args.crop_pad_size)
    runner = StepRunner(config, model, STATE_FORMS[form])
    seconds = common.time_calls(runner, args.warmup, args.iters)
    # Real-ESRGAN's perceptual loss runs the same VGG19 to conv5_4 as VGG54.
    per_image = (common.SRGAN_STEP_FLOP_PER_IMAGE if model in ADVERSARIAL
                 else common.SRRESNET_STEP_FLOP_PER_IMAGE) * (args.crop / 96) ** 2
    row = {'impl': 'jax', 'model': model, 'batch': batch, 'dtype': dtype, 'crop': args.crop,
           'output_conv': output_conv,
           'state_form': 'packed' if runner.step.packed else 'tree',
           'degradation': kind, 'ms_per_step': 1e3 * seconds, 'images_per_s': batch / seconds,
           'tflops': per_image * batch / seconds / 1e12,
           # The same seed, batch and step count in every run: a form that changes the
           # numerics shows here, not only in the time.
           'g_loss_last_step': float(runner.metrics['g_loss'])}
    if args.peak_tflops:
      row['mfu'] = row['tflops'] / args.peak_tflops
    if kind != 'bicubic':
      degradation_seconds = runner.degradation_seconds(args.warmup, args.iters)
      row['crop_pad_size'] = args.crop_pad_size or args.crop
      row['degradation_ms'] = 1e3 * degradation_seconds
      row['degradation_share_of_step'] = degradation_seconds / seconds
    if args.torch:
      from benchmarks import torch_reference
      key = (model, batch, dtype)
      if key not in torch_seconds:
        torch_seconds[key] = torch_reference.time_step(
            model, batch, dtype, args.crop, args.warmup, args.iters,
            torch_reference.Settings(compile_mode='reduce-overhead' if args.torch_compile
                                     else ''))
      row['torch_compiled'] = args.torch_compile
      row['torch_ms_per_step'] = 1e3 * torch_seconds[key]
      row['jax_speedup_over_torch'] = torch_seconds[key] / seconds
    common.emit(row, args.json)
    if args.profile:
      folder = os.path.join(args.profile, f'{model}_{batch}_{dtype}_{output_conv}_{form}')
      with jax.profiler.trace(folder):
        jax.block_until_ready([runner() for _ in range(5)])
      print(f'trace: {folder} (tensorboard --logdir {folder}, or XProf)')
    del runner


if __name__ == '__main__':
  main()
