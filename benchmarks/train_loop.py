"""Speed of training itself: `main.py`'s loop, input and metrics included, in images/s.

  python benchmarks/train_loop.py --model=srresnet --batch=64 --dtype=bfloat16 \
      [--steps=500 --log_every=250] [--eval_set=skimage:astronaut]

`train_step.py` times a step on a batch already on the device; this runs
`train.train_and_evaluate`, the loop `main.py` runs, on images held in memory: the input
thread cutting crops, the copies to the device, one dispatch per step, the metrics, a
checkpoint at the end and, with --eval_set, an evaluation. It prints the images/s of each
logging window, as `metrics.jsonl` records them; the first includes compiling, so the
last is the loop's rate. With --step it then times the bare step of the same config as
`train_step.py` does, in the same process, and prints the loop's share of its rate.
SRGAN runs with random VGG weights (speed does not depend on them).
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common
from configs import srgan, srresnet
from srgan_jax import train

IMAGES = 'skimage:astronaut,chelsea,coffee,rocket,hubble_deep_field,retina,motorcycle_left'


def loop_config(args):
  config = (srgan if args.model == 'srgan' else srresnet).get_config()
  config.data.source = args.source
  config.data.hr_crop_size = args.crop
  config.train.batch_size = args.batch
  config.train.compute_dtype = args.dtype
  config.train.num_steps = args.steps
  config.train.log_every_steps = args.log_every
  config.train.checkpoint_every_steps = args.steps  # One save, at the end.
  config.train.image_every_steps = 0
  config.eval.sets = (args.eval_set,) if args.eval_set else ()
  config.vgg.allow_random_weights = True
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', choices=('srresnet', 'srgan'), default='srresnet')
  parser.add_argument('--batch', type=int, default=64, help='global batch')
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='bfloat16')
  parser.add_argument('--crop', type=int, default=96, help='HR crop side')
  parser.add_argument('--steps', type=int, default=500)
  parser.add_argument('--log_every', type=int, default=250,
                      help='steps per logging window (each window ends in a device sync)')
  parser.add_argument('--source', default=IMAGES, help='training images (config.data.source)')
  parser.add_argument('--eval_set', default='', help='an evaluation set run at the end')
  parser.add_argument('--workdir', default='', help='run folder (default: a new temporary one)')
  parser.add_argument('--step', action='store_true',
                      help='also time the bare step (train_step.py) and print the ratio')
  args = common.parse_args(parser)
  if args.steps < 2 * args.log_every:
    parser.error('--steps must hold at least two logging windows: the first one compiles')

  workdir = args.workdir or tempfile.mkdtemp(prefix='srgan_jax_loop_')
  train.train_and_evaluate(loop_config(args), workdir)
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  windows = [r for r in rows if 'images_per_s' in r]
  for row in windows:
    print(f'{args.model} {args.dtype} batch {args.batch}: steps {row["step"] - args.log_every}'
          f' to {row["step"]}: {row["images_per_s"]:,.1f} images/s '
          f'({1e3 / row["steps_per_s"]:.3f} ms/step)')
  loop_rate = windows[-1]['images_per_s']
  print(f'loop rate (last window): {loop_rate:,.1f} images/s')
  for key, value in sorted(rows[-1].items()):
    if key.startswith('eval/'):
      print(f'{key}: {value:.4f}')
  print(f'run folder: {workdir}')
  if args.step:
    from benchmarks.train_step import StepRunner
    seconds = common.time_calls(StepRunner(loop_config(args), args.model), 3, args.log_every)
    step_rate = args.batch / seconds
    print(f'bare step: {step_rate:,.1f} images/s ({1e3 * seconds:.3f} ms/step); the loop runs '
          f'at x{loop_rate / step_rate:.2f} of it')


if __name__ == '__main__':
  main()
