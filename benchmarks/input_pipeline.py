"""Host input pipeline speed: training batches per second, as the trainer makes them.

  python benchmarks/input_pipeline.py --source=folder:../shared/data/sr_train/BSDS200 \
      [--batch=64] [--seconds=5] [--workers=1,2] [--degradation]

Decoding happens once (timed separately). Then two figures, in crops (HR images) per second:
- `trainer`: `input_pipeline.TrainBatches.iterate` as a training run has it (a producer
  thread per prefetched batch, `config.data.prefetch_batches`), over all devices: crops
  cut on the host, sent to the devices, rotated and flipped there. This is the rate the
  input can feed a training step at; compare it with the step's images/s
  (`benchmarks/train_step.py`).
- `workers=N`: N processes, each running only the host part (`input_pipeline.sample_rows`)
  for consecutive steps: how that part scales with CPUs.
With --degradation it also times, on the default device, what the batch costs there: the
rotations and flips, and the training step's bicubic x4 LR degradation.
"""

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def _data_config(source: str, crop: int):
  from configs import default
  data = default.get_config().data
  data.source, data.hr_crop_size = source, crop
  return data


def _worker(args):
  source, batch, crop, seconds, worker = args
  from srgan_jax import input_pipeline
  data = _data_config(source, crop)
  data.decode_threads = 1
  images = input_pipeline.load_shard(data, 0, 1)
  done, step = 0, worker * 1_000_000
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    input_pipeline.sample_rows(images, 0, step, 0, batch, crop)
    done += batch
    step += 1
  return done / (time.perf_counter() - start)


def trainer_rate(batches, seconds: float) -> float:
  """Crops/s of the training loop's batch iterator, each batch waited for on the device."""
  import jax
  iterator = batches.iterate(0, 1 << 30)
  for _ in range(3):  # Compiles the device part; fills the prefetch queue.
    jax.block_until_ready(next(iterator)[1])
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    jax.block_until_ready(next(iterator)[1])
    done += batches.global_batch
  rate = done / (time.perf_counter() - start)
  iterator.close()
  return rate


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--source', default='folder:../shared/data/sr_train/BSDS200')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--crop', type=int, default=96)
  parser.add_argument('--seconds', type=float, default=5.0)
  parser.add_argument('--workers', default=f'1,{os.cpu_count()}',
                      help='comma list of worker-process counts to measure (empty: none)')
  parser.add_argument('--prefetch_batches', default='2',
                      help='comma list of config.data.prefetch_batches for the trainer figure '
                           '(its producer threads)')
  parser.add_argument('--degradation', action='store_true',
                      help='also time the device part and the in-step bicubic degradation')
  args = parser.parse_args()

  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  from benchmarks import common
  from srgan_jax import degradation, input_pipeline, train_step
  start = time.perf_counter()
  batches = input_pipeline.TrainBatches(_data_config(args.source, args.crop), args.batch, 0,
                                        NamedSharding(train_step.make_mesh(), P('data')))
  print(f'command: {" ".join(sys.argv)}')
  print(f'machine: {os.cpu_count()} CPUs, {common.machine()}; source {args.source}: '
        f'{batches.report.used} images decoded in {time.perf_counter() - start:.2f} s '
        f'({batches.report.bytes / 2**20:.0f} MiB)')
  for prefetch in map(int, args.prefetch_batches.split(',')):
    batches.prefetch = prefetch  # What config.data.prefetch_batches sets.
    rate = trainer_rate(batches, args.seconds)
    print(f'trainer ({prefetch} producer thread{"s" if prefetch > 1 else ""}, '
          f'{jax.device_count()} devices) '
          f'batch={args.batch} crop={args.crop}: {rate:,.0f} crops/s')
  for workers in [int(w) for w in args.workers.split(',') if w]:
    jobs = [(args.source, args.batch, args.crop, args.seconds, w) for w in range(workers)]
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
      rates = pool.map(_worker, jobs)
    print(f'workers={workers} (host part only) batch={args.batch} crop={args.crop}: '
          f'{np.mean(rates):,.0f} crops/s per worker, {sum(rates):,.0f} crops/s total')

  if args.degradation:
    rng = np.random.default_rng(0)
    hr = jax.device_put(rng.integers(0, 256, (args.batch, args.crop, args.crop, 3), np.uint8))
    transforms = jax.device_put(rng.integers(0, 8, args.batch).astype(np.int32))
    turn = jax.jit(input_pipeline.dihedral)
    down = jax.jit(lambda x: degradation.downscale_uint8_batch(x, 4))
    for name, fn in (('rotations and flips', lambda: turn(hr, transforms)),
                     ('in-step bicubic x4 degradation', lambda: down(hr))):
      seconds = common.time_calls(fn, 3, 50)
      print(f'{name}, batch {args.batch}: {1e3 * seconds:.3f} ms on the device')


if __name__ == '__main__':
  main()
