"""Inference speed: one 512x512 image to 2048x2048 with the paper's generator (x4).

  python benchmarks/upscale.py [--size=512] [--dtypes=float32,bfloat16] [--iters=20] [--torch]
      [--output_convs=direct,subpixel2,subpixel4]

Random weights (speed does not depend on them), whole image in one call, after warm-up,
blocking on the result. Reports ms/image, output megapixels/s and TFLOP/s (analytic:
4.44 MFLOP per LR pixel, benchmarks/README.md).
"""

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from srgan_jax.models import Generator, build


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', type=int, default=512, help='LR side in pixels')
  parser.add_argument('--dtypes', default='float32,bfloat16')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--iters', type=int, default=20)
  parser.add_argument('--output_convs', default='direct',
                      help="comma list of forms of G's output conv: direct, subpixel2, subpixel4")
  parser.add_argument('--torch', action='store_true', help='also time the PyTorch reference')
  parser.add_argument('--torch_compile', action='store_true')
  args = common.parse_args(parser)
  flop = common.G_FORWARD_FLOP_PER_LR_PIXEL * args.size ** 2
  out_mpix = (4 * args.size) ** 2 / 1e6
  torch_seconds = {}  # dtype -> seconds of the PyTorch generator (direct form).
  for dtype, output_conv in itertools.product(args.dtypes.split(','),
                                              args.output_convs.split(',')):
    generator = Generator(output_conv=output_conv, dtype=build.DTYPES[dtype])
    lr = jnp.asarray(np.random.default_rng(0).random((1, args.size, args.size, 3), np.float32))
    variables = jax.jit(generator.init)(jax.random.PRNGKey(0), lr)
    apply = jax.jit(lambda v, x: generator.apply(v, x))
    seconds = common.time_calls(lambda: apply(variables, lr), args.warmup, args.iters)
    line = (f'jax {dtype} {output_conv}: {1e3 * seconds:.2f} ms/image, '
            f'{out_mpix / seconds:.1f} output MPix/s, {flop / seconds / 1e12:.2f} TFLOP/s')
    if args.torch:
      from benchmarks import torch_reference
      if dtype not in torch_seconds:
        torch_seconds[dtype] = torch_reference.time_generator(args.size, dtype, args.warmup,
                                                              args.iters, args.torch_compile)
      t = torch_seconds[dtype]
      line += f' | torch {1e3 * t:.2f} ms/image, jax speed-up x{t / seconds:.2f}'
    print(line, flush=True)


if __name__ == '__main__':
  main()
