"""Host input pipeline speed: random 96x96 crops (flips, rotations) per second, after decoding.

  python benchmarks/input_pipeline.py --source=folder:../shared/data/sr_train/BSDS200 \
      [--batch=64] [--seconds=5] [--workers=1,2] [--degradation]

Decoding happens once (timed separately); then each worker process builds batches of
`--batch` crops with `input_pipeline.sample_rows` for consecutive steps, as the trainer
does. Reports crops/s per worker and in total. With --degradation it also times the
in-step bicubic x4 LR degradation on a [batch, 96, 96, 3] uint8 batch, on the default
JAX device, to compare with a training step's time.
"""

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def _worker(args):
  source, batch, crop, seconds, worker = args
  from configs import default
  from srgan_jax import input_pipeline
  data = default.get_config().data
  data.source, data.hr_crop_size, data.decode_threads = source, crop, 1
  images = input_pipeline.load_shard(data, 0, 1)
  done, step = 0, worker * 1_000_000
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    input_pipeline.sample_rows(images, 0, step, 0, batch, crop)
    done += batch
    step += 1
  return done / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--source', default='folder:../shared/data/sr_train/BSDS200')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--crop', type=int, default=96)
  parser.add_argument('--seconds', type=float, default=5.0)
  parser.add_argument('--workers', default=f'1,{os.cpu_count()}',
                      help='comma list of worker-process counts to measure')
  parser.add_argument('--degradation', action='store_true',
                      help='also time the in-step bicubic degradation on the default device')
  args = parser.parse_args()

  from configs import default
  from srgan_jax import input_pipeline
  data = default.get_config().data
  data.source, data.hr_crop_size = args.source, args.crop
  start = time.perf_counter()
  report = input_pipeline.LoadReport()
  input_pipeline.load_shard(data, 0, 1, report)
  print(f'command: {" ".join(sys.argv)}')
  print(f'machine: {os.cpu_count()} CPUs; source {args.source}: {report.used} images decoded in '
        f'{time.perf_counter() - start:.2f} s ({report.bytes / 2**20:.0f} MiB)')
  for workers in map(int, args.workers.split(',')):
    jobs = [(args.source, args.batch, args.crop, args.seconds, w) for w in range(workers)]
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      rates = pool.map(_worker, jobs)
    print(f'workers={workers} batch={args.batch} crop={args.crop}: '
          f'{np.mean(rates):,.0f} crops/s per worker, {sum(rates):,.0f} crops/s total')

  if args.degradation:
    import jax
    from benchmarks import common
    from srgan_jax import degradation
    hr = jax.device_put(np.random.default_rng(0).integers(
        0, 256, (args.batch, args.crop, args.crop, 3), np.uint8))
    down = jax.jit(lambda x: degradation.downscale_uint8_batch(x, 4))
    seconds = common.time_calls(lambda: down(hr), 3, 50)
    print(f'in-step bicubic x4 degradation, batch {args.batch}: {1e3 * seconds:.3f} ms '
          f'on {common.machine()}')


if __name__ == '__main__':
  main()
