"""The real-world degradation's Poisson draws: the CDF table against jax.random.poisson.

  python benchmarks/poisson_sampler.py --batch=16 --side=160

Times one draw of Poisson counts for a canvas of uint8 levels at BasicSR's rates
(level / 255 * 2^e, e = 8 when an image has more than 128 distinct levels, as photos do),
colour [B, side, side, 3] and gray [B, side, side, 1] as `real_degradation._noise` draws
them, by `jax.random.poisson` and by `real_degradation.poisson_counts` (inverse CDF from a
table), jitted. side=160 is the first stage's canvas at 96x96 crops (up to 96 x 1.5 + 1,
rounded up to JPEG's 16-pixel blocks).
Prints ms per draw and the ratio.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from srgan_jax import real_degradation  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--side', type=int, default=160)
  parser.add_argument('--exponent', type=int, default=8, help='rates level / 255 * 2^this')
  parser.add_argument('--iters', type=int, default=10)
  parser.add_argument('--json', default='', help='append one JSON line per figure to this file')
  args = common.parse_args(parser)

  key = jax.random.PRNGKey(0)
  exponent = jnp.full((args.batch,), args.exponent, jnp.int32)

  @jax.jit
  def library(key, levels):
    rates = (levels.astype(jnp.float32) / 255.0) * 2.0 ** exponent[:, None, None, None]
    return jax.random.poisson(key, rates).astype(jnp.float32)

  @jax.jit
  def table(key, levels):
    uniform = jax.random.uniform(key, levels.shape)
    return real_degradation.poisson_counts(uniform, levels, exponent)

  for channels in (3, 1):
    levels = jax.random.randint(key, (args.batch, args.side, args.side, channels), 0, 256)
    seconds = {name: common.time_calls(lambda: fn(key, levels), 2, args.iters)
               for name, fn in (('jax_random_poisson', library), ('cdf_table', table))}
    common.emit({'shape': 'x'.join(map(str, levels.shape)),
                 **{f'{name}_ms': s * 1e3 for name, s in seconds.items()},
                 'speedup': seconds['jax_random_poisson'] / seconds['cdf_table']},
                args.json, benchmark='poisson_sampler')


if __name__ == '__main__':
  main()
