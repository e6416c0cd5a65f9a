"""Speed of the perceptual metrics: LPIPS images/s at 512x512, NIQE seconds per image.

  python benchmarks/metrics.py [--size=512] [--batch=1] [--iters=10] [--niqe_image=FILE]

LPIPS (both backbones, random weights: speed does not depend on them) on a batch of
pairs of `size` x `size` images, jitted, after warm-up, blocking on the result. NIQE
(NumPy, on the host) on one BSD100-sized image (481x321: by default the first image of
../shared/data/sr_train/BSDS200, the same size as BSD100's, else random pixels).
"""

import argparse
import glob
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from srgan_jax import images, niqe, quality
from srgan_jax.models import lpips


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', type=int, default=512, help='LPIPS image side in pixels')
  parser.add_argument('--batch', type=int, default=1, help='LPIPS pairs per call')
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--niqe_image', default='',
                      help='default: the first BSDS200 image of ../shared/data, else random')
  args = common.parse_args(parser)
  rng = np.random.default_rng(0)
  shape = (args.batch, args.size, args.size, 3)
  x0, x1 = (jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32) for _ in range(2))
  for backbone in ('alex', 'vgg'):
    module = lpips.LPIPS(backbone)
    variables = jax.jit(module.init)(jax.random.PRNGKey(0), x0[:1], x1[:1])
    apply = jax.jit(module.apply)
    seconds = common.time_calls(lambda: apply(variables, x0, x1), args.warmup, args.iters)
    print(f'lpips_{backbone} {args.size}x{args.size}, batch {args.batch}: '
          f'{args.batch / seconds:,.2f} image pairs/s ({1e3 * seconds:.1f} ms per call)',
          flush=True)

  path = args.niqe_image or next(iter(sorted(glob.glob(os.path.join(
      common.SHARED_DATA, 'sr_train', 'BSDS200', '*.png')))), '')
  image = images.read_rgb(path) if path else rng.integers(0, 256, (321, 481, 3), np.uint8)
  y = quality.rgb_to_y(image)
  mu, cov = np.zeros(36), np.eye(36)  # Speed does not depend on the pristine model.
  niqe.niqe(y, mu, cov)
  start = time.perf_counter()
  for _ in range(args.iters):
    niqe.niqe(y, mu, cov)
  seconds = (time.perf_counter() - start) / args.iters
  print(f'niqe {image.shape[1]}x{image.shape[0]} ({os.path.basename(path) or "random"}): '
        f'{seconds:.3f} s per image')


if __name__ == '__main__':
  main()
