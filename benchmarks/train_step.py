"""Speed of the SRGAN and SRResNet training steps: ms/step, images/s, model-FLOP utilisation.

  python benchmarks/train_step.py --models=srgan,srresnet --batch_sizes=16,64 \
      --dtypes=float32,bfloat16 --peak_tflops=989 [--torch]

Times the jitted step on one device with a fixed uint8 HR batch already on the device
(the input pipeline is benchmarked separately), after warm-up, blocking on the results.
MFU = analytic FLOPs (../shared/DESIGN.md) / time / peak. With --torch, the PyTorch model
of the same architecture and step (benchmarks/torch_reference.py) is timed in the same
run, and the JAX/PyTorch ratio printed. --output_convs times each form of G's output conv
(`srgan_jax/models/layers.py`); the PyTorch step is the direct form. --state_forms
times the step with the state packed into one array per dtype or as its pytree of
hundreds of arrays (`config.train.state_form`); the default, 'auto', is what training
runs on this backend, and each row names the form it timed.

--compiler_options compiles each variant once per set of XLA options (e.g.
"-;xla_gpu_experimental_enable_conv_fusion=true": the defaults, then the fusion), with
the ratio to the first set. The same step's time varies between processes by more than
many options change it, so --rounds=N builds every variant first, then times them in
turn N times and reports the median and each round: a comparison inside one process.

--steps_per_call runs K steps in one compiled call (a `lax.scan` over K batches, here K
copies of the one batch, so that the losses match the one-step call's after as many
steps): what a step costs the host once per call (dispatch, passing the arrays, XLA's
per-execution work on its command buffers) is then paid once per K steps. Warm-up and
timed steps are rounded up to whole calls; with --warmup and --iters multiples of K,
every variant runs as many steps and their `g_loss_last_step` compare. (On an H100,
four steps per call gained x1.00 for SRResNet and x1.02 for SRGAN: their steps keep the
device busy 94 and 99% of the time, benchmarks/RESULTS.md, sixth run.)
"""

import argparse
import functools
import itertools
import os
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from benchmarks import common
from configs import default
from srgan_jax import packing, train
from srgan_jax.models import vgg


def step_config(model: str, batch: int, dtype: str, crop: int, output_conv: str,
                state_form: str = 'auto'):
  config = default.get_config()
  config.generator.output_conv = output_conv
  config.train.state_form = state_form
  config.loss.content = 'vgg54' if model == 'srgan' else 'pixel'
  config.loss.adversarial_weight = 1e-3 if model == 'srgan' else 0.0
  config.train.batch_size = batch
  config.train.compute_dtype = dtype
  config.data.hr_crop_size = crop
  return config


class StepRunner:
  """One compiled train step on a fixed HR batch already on the device.

  Calling it runs a step (the state is donated and replaced) and returns the metrics,
  also kept as `metrics`; `compiled` is the executable (its `as_text()` is the optimised
  HLO), and `lowered` the step before compiling, for a caller that compiles it again
  with other XLA options (`lowered.compile(compiler_options={...})`) and swaps it in.

  The state travels between steps as `config.train.state_form` says, as in training
  (`train.uses_packed_state`): `state_form` is 'packed' (one array per dtype,
  `srgan_jax/packing.py`) or 'tree' (the TrainState pytree, hundreds of arrays; the
  difference is the host's per-array cost of a call).

  With `steps_per_call` K > 1, a call runs K steps in a `lax.scan` over K copies of the
  batch (uint8 [K, N, H, W, 3]) and returns the last step's metrics.
  """

  def __init__(self, config, model: str, compiler_options: Optional[dict] = None,
               steps_per_call: int = 1):
    train.validate_config(config)
    self.steps_per_call = steps_per_call
    self.state_form = 'packed' if train.uses_packed_state(config) else 'tree'
    batch, crop = config.train.batch_size, config.data.hr_crop_size
    self.state = jax.jit(functools.partial(train.init_state, config))(jax.random.PRNGKey(0))
    self.vgg_params = jax.device_put(vgg.random_params()) if model == 'srgan' else {}
    hr = np.random.default_rng(0).integers(0, 256, (batch, crop, crop, 3), np.uint8)
    self.hr = jax.device_put(hr if steps_per_call == 1 else np.stack([hr] * steps_per_call))
    state_packing, vgg_packing = packing.packings(self.state_form == 'packed', self.state,
                                                  self.vgg_params)
    step = packing.packed_step(train.make_train_step(config, model == 'srgan', 'keras'),
                               state_packing, vgg_packing)
    if steps_per_call > 1:
      step = steps_in_one_call(step)
    self.state = jax.jit(state_packing.pack)(self.state)
    self.vgg_params = jax.jit(vgg_packing.pack)(self.vgg_params)
    self.lowered = jax.jit(step, donate_argnums=(0,)).lower(self.state, self.hr,
                                                            self.vgg_params)
    self.compiled = self.lowered.compile(compiler_options=compiler_options or None)

  def __call__(self):
    self.state, self.metrics = self.compiled(self.state, self.hr, self.vgg_params)
    return self.metrics


def steps_in_one_call(step):
  """step(state, hr, vgg) -> (state, metrics) as one call over a stack of batches,
  hr uint8 [K, N, H, W, 3]: K steps in turn, returning the last step's metrics."""

  def steps(state, hr_stack, vgg_params):
    state, metrics = jax.lax.scan(lambda state, hr: step(state, hr, vgg_params), state,
                                  hr_stack)
    return state, jax.tree.map(lambda values: values[-1], metrics)

  return steps


def parse_compiler_options(text: str) -> list:
  """'-;xla_a=true xla_b=X,Y' -> [{}, {'xla_a': True, 'xla_b': 'X,Y'}]: one set of XLA
  options per variant, sets split by ';', options by spaces; '-' or nothing: defaults."""
  # XLA takes booleans and numbers as such, not as strings.
  value_of = lambda value: (int(value) if value.lstrip('-').isdigit()
                            else {'true': True, 'false': False}.get(value.lower(), value))
  return [{name: value_of(value) for name, value in options.items()}
          for options in common.parse_variants(text, lambda name: name.startswith('xla_'),
                                               'xla_NAME=VALUE')]


def options_label(options: dict) -> str:
  """The options as written on the command line; '-' for none."""
  text = lambda value: str(value).lower() if isinstance(value, bool) else str(value)
  return ' '.join(f'{name}={text(value)}' for name, value in options.items()) or '-'


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default='srgan,srresnet', help='comma list: srgan, srresnet')
  parser.add_argument('--batch_sizes', default='16,64', help='comma list of global batch sizes')
  parser.add_argument('--dtypes', default='float32,bfloat16', help='comma list of compute dtypes')
  parser.add_argument('--crop', type=int, default=96, help='HR crop side (FLOPs assume 96)')
  parser.add_argument('--output_convs', default='subpixel4',
                      help='comma list of config.generator.output_conv: '
                           'direct, subpixel2, subpixel4')
  parser.add_argument('--state_forms', default='auto',
                      help='comma list of config.train.state_form: '
                           + ', '.join(train.STATE_FORMS) + ' (auto: as training on this backend)')
  parser.add_argument('--compiler_options', default='-',
                      help='XLA option sets to compile each step with, one variant each: '
                           'sets split by ";", options by spaces, "-" for the defaults, e.g. '
                           '"-;xla_gpu_experimental_enable_conv_fusion=true" (XLA_FLAGS apply '
                           'to every set)')
  parser.add_argument('--steps_per_call', default='1',
                      help='comma list: steps run in one compiled call (lax.scan), e.g. 1,4')
  parser.add_argument('--rounds', type=int, default=1,
                      help='time every variant this many times, taking turns (all are built '
                           'first), and report the median: a comparison inside one process, '
                           'clear of the spread between processes')
  parser.add_argument('--warmup', type=int, default=3,
                      help='untimed steps before each timing (compile included)')
  parser.add_argument('--iters', type=int, default=20, help='timed steps')
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help='device peak for MFU, e.g. 989 (H100 SXM bf16 dense); 0: no MFU')
  parser.add_argument('--torch', action='store_true', help='also time benchmarks/torch_reference.py')
  parser.add_argument('--torch_compile', action='store_true',
                      help='time the reference under torch.compile(mode="reduce-overhead"), '
                           'CUDA graphs: its fastest form on an H100 (compiling an SRGAN '
                           'step took 110 s there)')
  parser.add_argument('--json', default='', help='append one JSON line per figure to this file')
  args = common.parse_args(parser)
  try:
    steps_per_call = [int(k) for k in args.steps_per_call.split(',')]
  except ValueError:
    parser.error(f'--steps_per_call takes a comma list of integers, got {args.steps_per_call!r}')
  if args.rounds < 1 or args.iters < 1 or min(steps_per_call) < 1:
    parser.error('--rounds, --iters and --steps_per_call must be at least 1')
  try:
    option_sets = parse_compiler_options(args.compiler_options)
  except ValueError as error:
    parser.error(str(error))
  variants = list(itertools.product(
      args.models.split(','), map(int, args.batch_sizes.split(',')), args.dtypes.split(','),
      args.output_convs.split(','), args.state_forms.split(','), steps_per_call,
      range(len(option_sets))))

  failed = []

  def build(variant):
    """The variant's StepRunner, or None where XLA rejects its options (an option this
    jax does not know, or a value it does not take): that variant's row says why, and
    the others still run."""
    model, batch, dtype, output_conv, state_form, steps, options = variant
    config = step_config(model, batch, dtype, args.crop, output_conv, state_form)
    if not option_sets[options]:
      return StepRunner(config, model, steps_per_call=steps)
    try:
      return StepRunner(config, model, option_sets[options], steps)
    except jax.errors.JaxRuntimeError as error:
      row = {'impl': 'jax', 'model': model, 'batch': batch, 'dtype': dtype,
             'compiler_options': options_label(option_sets[options]),
             'error': str(error).splitlines()[0]}
      common.emit(row, args.json)
      failed.append(row)
      return None

  torch_seconds = {}  # (model, batch, dtype) -> seconds: one reference per JAX variant set.
  first_options_seconds = {}  # The variant without its options -> seconds with the first set.
  one_step_seconds = {}  # The variant without its steps per call -> seconds with one.

  def time_steps(runner):
    """Seconds per step: warm-up and timed steps rounded up to whole calls."""
    calls = lambda steps: -(-steps // runner.steps_per_call)
    seconds = common.time_calls(runner, calls(args.warmup), calls(args.iters))
    return seconds / runner.steps_per_call

  def report(variant, runner, seconds_per_round):
    model, batch, dtype, output_conv, state_form, steps, options = variant
    seconds = float(np.median(seconds_per_round))
    per_image = (common.SRGAN_STEP_FLOP_PER_IMAGE if model == 'srgan'
                 else common.SRRESNET_STEP_FLOP_PER_IMAGE) * (args.crop / 96) ** 2
    row = {'impl': 'jax', 'model': model, 'batch': batch, 'dtype': dtype, 'crop': args.crop,
           'output_conv': output_conv, 'state_form': runner.state_form,
           'compiler_options': options_label(option_sets[options]), 'steps_per_call': steps,
           'ms_per_step': 1e3 * seconds, 'images_per_s': batch / seconds,
           'tflops': per_image * batch / seconds / 1e12,
           # The same seed, batch and step count in every run: a compiler flag or conv
           # form that changes the numerics shows here, not only in the time.
           'g_loss_last_step': float(runner.metrics['g_loss'])}
    if args.rounds > 1:
      row['ms_per_round'] = [round(1e3 * s, 4) for s in seconds_per_round]
    if options == 0:
      first_options_seconds[variant[:-1]] = seconds
    if len(option_sets) > 1 and variant[:-1] in first_options_seconds:
      row['speedup_over_first_options'] = first_options_seconds[variant[:-1]] / seconds
    without_steps = variant[:-2] + variant[-1:]
    if steps == 1:
      one_step_seconds[without_steps] = seconds
    elif without_steps in one_step_seconds:
      row['speedup_over_one_step_per_call'] = one_step_seconds[without_steps] / seconds
    if args.peak_tflops:
      row['mfu'] = row['tflops'] / args.peak_tflops
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

  if args.rounds == 1:  # Each variant built, timed and freed in turn; rows print as they come.
    for variant in variants:
      runner = build(variant)
      if runner is not None:
        report(variant, runner, [time_steps(runner)])
      del runner
  else:
    built = [(variant, runner) for variant in variants
             if (runner := build(variant)) is not None]
    seconds = common.time_in_turns(
        [functools.partial(time_steps, runner) for _, runner in built], args.rounds)
    for (variant, runner), times in zip(built, seconds):
      report(variant, runner, times)
  if failed:
    sys.exit(f'{len(failed)} variant(s) not compiled: '
             + '; '.join(f"{row['compiler_options']}: {row['error']}" for row in failed))


if __name__ == '__main__':
  main()
