"""Input speed and memory per source: HR crops/s per host core, peak host memory, start-up.

  python benchmarks/input_pipeline.py [--folder=../shared/data/sr_train/BSDS200] \
      [--sources=memory,records-png,records-qoi,records-raw,tfds] [--workers=1,2] \
      [--batch=64] [--crop=96] [--seconds=10] [--degradation]

The folder's images are prepared once per source into a temporary folder: records with
each encoding (`python -m srgan_jax.prepare`, 480-pixel sub-images, step 240), and TFDS's
DIV2K builder fed these images as its HR set (`tfds.data_source` then decodes whole PNG
images per crop, as it would DIV2K's). Then, each in a fresh process:
- `memory`: the in-memory cache (decoded at start-up), one reading thread;
- `records-ENCODING`, `tfds`: read at random by N worker processes (`--workers`).
Each runs `TrainBatches.host_rows`, the trainer's own input (Grain over steps), for
`--seconds`, pinned to as many cores as it has workers (the main process shares them; one
core for the cache), and reports crops/s, crops/s per core,
the peak resident memory of the process and its workers (VmHWM, summed), and the seconds
from start to the first batch. Beside them: the rates the compiled step consumes per
core of a 16-core GPU host (SRGAN 311, SRResNet 935 crops/s; benchmarks/RESULTS.md).
With --degradation it also times the device part of a batch: the rotations and flips,
and the training step's bicubic x4 LR degradation.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks import common

# Crops/s per host core that one H200 consumes at batch 64 of 96x96 (SRGAN 4,978 and
# SRResNet 14,960 images/s, benchmarks/RESULTS.md) over a GPU host's 16 cores.
GPU_NEEDS_PER_CORE = {'srgan': 4978 / 16, 'srresnet': 14960 / 16}


def _peak_mib(pids) -> float:
  total = 0
  for pid in pids:
    try:
      with open(f'/proc/{pid}/status') as f:
        total += next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
      continue
  return total / 1024


def _children(pid: int) -> list[int]:
  found = []
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/status') as f:
          if any(line.split() == ['PPid:', str(pid)] for line in f):
            found.append(int(entry))
      except OSError:
        continue
  return found


def measure(source: str, workers: int, batch: int, crop: int, seconds: float,
            tfds_data_dir: str = '') -> dict:
  """One figure, in this process: the trainer's host input for `seconds`."""
  # Pinned to one core per worker (one for the in-memory cache): the process, its threads
  # and its workers share them, so crops/s over those cores is a rate per core.
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:max(workers, 1)])
  import jax
  from configs import default
  from srgan_jax import input_pipeline
  data = default.get_config().data
  data.source, data.hr_crop_size, data.num_workers = source, crop, workers
  data.tfds_data_dir = tfds_data_dir
  data.prefetch_batches = 1 if workers == 0 else 2
  started = time.perf_counter()
  batches = input_pipeline.TrainBatches(data, batch, 0, jax.sharding.SingleDeviceSharding(
      jax.devices()[0]))
  rows = batches.host_rows(0, 1 << 30)
  next(rows)
  first = time.perf_counter() - started
  for _ in range(2):  # Fills the workers' buffers.
    next(rows)
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    done += len(next(rows).crops)
  rate = done / (time.perf_counter() - start)
  peak = _peak_mib([os.getpid(), *_children(os.getpid())])
  rows.close()
  return {'crops_per_s': rate, 'peak_mib': peak, 'first_batch_s': first}


def _prepare_sources(folder: str, names, root: str) -> dict:
  """name -> config.data.source, with the preparation's seconds and bytes on disk."""
  from srgan_jax import images, prepare, records
  prepared = {}
  for name in names:
    started = time.perf_counter()
    if name == 'memory':
      prepared[name] = (f'folder:{folder}', 0.0, 0)
    elif name.startswith('records-'):
      output = os.path.join(root, name)
      settings = {'source': f'folder:{folder}', 'crop': 480, 'step': 240, 'min_size': 96,
                  'encoding': name[len('records-'):], 'images_per_shard': 32, 'num_parts': 1,
                  'tfds_split': 'train', 'tfds_image_key': 'hr', 'tfds_data_dir': ''}
      manifest = prepare.prepare(settings, output, processes=os.cpu_count(), progress=False)
      prepared[name] = (f'records:{output}', time.perf_counter() - started, manifest['bytes'])
      print(f'prepared {name}: {records.describe(manifest)}, {manifest["bytes"] / 2**20:.0f} MiB '
            f'in {prepared[name][1]:.1f} s', flush=True)
    elif name == 'tfds':
      hr = {f'{i:04d}': images.read_rgb(path)
            for i, path in enumerate(images.list_image_files(folder), start=1)}
      data_dir = common.prepare_div2k_locally(os.path.join(root, 'div2k'),
                                              {'train': hr, 'valid': dict([next(iter(hr.items()))])})
      prepared[name] = (f'tfds:div2k/bicubic_x4@{data_dir}', time.perf_counter() - started, 0)
      print(f'prepared tfds: {len(hr)} images as TFDS DIV2K HR in {prepared[name][1]:.1f} s',
            flush=True)
    else:
      raise ValueError(f'unknown source {name!r}')
  return prepared


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--folder', default=os.path.join(common.SHARED_DATA, 'sr_train', 'BSDS200'))
  parser.add_argument('--sources', default='memory,records-png,records-qoi,records-raw,tfds')
  parser.add_argument('--workers', default='1,2',
                      help='worker processes for the sources decoded per use')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--crop', type=int, default=96)
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--degradation', action='store_true',
                      help='also time the device part and the in-step bicubic degradation')
  parser.add_argument('--measure', help=argparse.SUPPRESS)  # SOURCE[@DATA_DIR],WORKERS
  args = parser.parse_args()
  if args.measure:
    source, workers = args.measure.rsplit(',', 1)
    source, _, data_dir = source.partition('@')
    print(json.dumps(measure(source, int(workers), args.batch, args.crop, args.seconds,
                             data_dir)))
    return

  common.parse_args(parser)
  print(f'host: {os.cpu_count()} CPUs; batch {args.batch} of {args.crop}x{args.crop} crops; '
        f'{args.seconds:g} s per figure, each in a fresh process; folder {args.folder}')
  root = tempfile.mkdtemp(prefix='input_pipeline_')
  try:
    sources = _prepare_sources(args.folder, args.sources.split(','), root)
    rows = []
    for name, (source, prepare_s, disk) in sources.items():
      for workers in ([0] if name == 'memory' else
                      [int(w) for w in args.workers.split(',') if w]):
        command = [sys.executable, os.path.abspath(__file__), f'--measure={source},{workers}',
                   f'--batch={args.batch}', f'--crop={args.crop}', f'--seconds={args.seconds}']
        result = _run_measure(command, source)
        cores = max(workers, 1)
        row = {'source': name, 'workers': workers, 'crops_per_s': result['crops_per_s'],
               'crops_per_s_per_core': result['crops_per_s'] / cores,
               'x_srgan_need': result['crops_per_s'] / cores / GPU_NEEDS_PER_CORE['srgan'],
               'x_srresnet_need': result['crops_per_s'] / cores / GPU_NEEDS_PER_CORE['srresnet'],
               'peak_mib': result['peak_mib'], 'first_batch_s': result['first_batch_s'],
               'disk_mib': disk / 2**20}
        common.emit(row)
        rows.append(row)
    print('\n| source | workers | crops/s | per core | x SRGAN need (311) | x SRResNet need '
          '(935) | peak MiB | first batch s | disk MiB |\n|---|---|---|---|---|---|---|---|---|')
    for r in rows:
      print(f'| {r["source"]} | {r["workers"] or "1 thread"} | {r["crops_per_s"]:,.0f} | '
            f'{r["crops_per_s_per_core"]:,.0f} | {r["x_srgan_need"]:.2f} | '
            f'{r["x_srresnet_need"]:.2f} | {r["peak_mib"]:,.0f} | {r["first_batch_s"]:.1f} | '
            f'{r["disk_mib"]:,.0f} |')
  finally:
    shutil.rmtree(root, ignore_errors=True)

  if args.degradation:
    import jax
    from srgan_jax import degradation, input_pipeline
    rng = np.random.default_rng(0)
    hr = jax.device_put(rng.integers(0, 256, (args.batch, args.crop, args.crop, 3), np.uint8))
    transforms = jax.device_put(rng.integers(0, 8, args.batch).astype(np.int32))
    turn = jax.jit(input_pipeline.dihedral)
    down = jax.jit(lambda x: degradation.downscale_uint8_batch(x, 4))
    for name, fn in (('rotations and flips', lambda: turn(hr, transforms)),
                     ('in-step bicubic x4 degradation', lambda: down(hr))):
      seconds = common.time_calls(fn, 3, 50)
      print(f'{name}, batch {args.batch}: {1e3 * seconds:.3f} ms on the device')


def _run_measure(command, source) -> dict:
  result = subprocess.run(command, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))
  if result.returncode:
    raise RuntimeError(f'measuring {source} failed:\n{result.stderr[-3000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


if __name__ == '__main__':
  main()
