"""Prepares training data once: photos cut into sub-images, written as ArrayRecord shards.

  python -m srgan_jax.prepare --source=folder:PATH --output=DIR
  python -m srgan_jax.prepare --source=tfds:div2k/bicubic_x4 --output=DIR
  python main.py --config=configs/srresnet.py --workdir=runs/x --config.data.source=records:DIR

Each usable image is cut into overlapping sub-images (`--crop=480 --step=240`, as BasicSR's
extract_subimages; the last row and column of sub-images end at the image's edge; a side
shorter than the crop is kept whole), encoded losslessly (`--encoding`) and written to
shards of `--images_per_shard` source images. Images smaller than `--min_size` (the
largest training crop the records serve) or unreadable are skipped; the manifest lists
them with the reason. The format is in `srgan_jax/records.py`.

Resuming: a killed prepare run, rerun with the same arguments, keeps every finished shard
and writes the rest; it ends with the same files as an uninterrupted run. A shard is
written under a `.partial` name and renamed when complete, so none reads as complete when
it is not. Different arguments on a folder that already holds shards are refused.

Several machines: `--num_parts=N --part=K` on machine K (same arguments otherwise, same
--output, e.g. on a shared file system) writes image k of the source when k mod N = K;
the part that finishes last writes the manifest (or run `--merge` once all are done).
`--verify` rereads a prepared folder and checks every shard's checksum.
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time
from typing import Optional

import numpy as np
import tqdm

from srgan_jax import child_processes, data_sources, images as image_io, records

SETTINGS = 'prepare.json'


def subimage_starts(size: int, crop: int, step: int) -> list[int]:
  """Start offsets along one side: every `step`, plus one ending at the edge; [0] if short."""
  if size <= crop:
    return [0]
  starts = list(range(0, size - crop + 1, step))
  if starts[-1] + crop < size:
    starts.append(size - crop)
  return starts


def cut_subimages(image: np.ndarray, crop: int, step: int) -> list[np.ndarray]:
  """[H, W, 3] -> sub-images [min(crop, H), min(crop, W), 3], row by row."""
  height, width = image.shape[:2]
  return [np.ascontiguousarray(image[top:top + crop, left:left + crop])
          for top in subimage_starts(height, crop, step)
          for left in subimage_starts(width, crop, step)]


class _Images:
  """Source item -> [H, W, 3] uint8, in any process (a TFDS source opens once per process)."""

  def __init__(self, settings: dict):
    self.settings = settings
    self._tfds = None

  def read(self, item) -> np.ndarray:
    source = self.settings['source']
    if not source.startswith('tfds:'):
      return image_io.read_rgb(item)
    if self._tfds is None:
      self._tfds = data_sources.open_tfds_source(source[len('tfds:'):], self.settings['tfds_split'],
                                                 self.settings['tfds_data_dir'])
    return data_sources.tfds_image(self._tfds[item], self.settings['tfds_image_key'],
                                   source[len('tfds:'):])

  def name(self, item) -> str:
    source = self.settings['source']
    return f'{source}[{self.settings["tfds_split"]}]#{item}' if source.startswith('tfds:') else item


_WORKER_IMAGES: Optional[_Images] = None


def _init_worker(settings: dict):
  global _WORKER_IMAGES
  child_processes.end_multiprocessing_child_with_parent()  # A killed prepare leaves none.
  _WORKER_IMAGES = _Images(settings)


def write_shard_job(job: tuple) -> dict:
  """Writes one shard: (output, file stem, settings, items) -> its sidecar (also on disk)."""
  output, stem, settings, items = job
  images = _WORKER_IMAGES or _Images(settings)
  payloads, skipped = [], []
  for item in items:
    try:
      image = images.read(item)
    except (image_io.UnreadableImageError, OSError, ValueError) as e:
      skipped.append({'image': images.name(item), 'reason': str(e)})
      continue
    if min(image.shape[:2]) < settings['min_size']:
      skipped.append({'image': images.name(item), 'reason': f'{image.shape[1]}x{image.shape[0]} '
                      f'is smaller than --min_size={settings["min_size"]}'})
      continue
    payloads.extend(records.encode(sub, settings['encoding'])
                    for sub in cut_subimages(image, settings['crop'], settings['step']))
  sidecar = {'images': len(items), 'used_images': len(items) - len(skipped),
             'skipped': skipped, 'shards': []}
  if payloads:
    sidecar['shards'] = [records.write_shard(os.path.join(output, stem + records.SHARD_SUFFIX),
                                             payloads)]
  records.write_json(os.path.join(output, stem + '.json'), sidecar)
  return sidecar


def _finished(output: str, stem: str) -> Optional[dict]:
  """The sidecar of a shard written completely before, or None."""
  try:
    with open(os.path.join(output, stem + '.json')) as f:
      sidecar = json.load(f)
  except (OSError, ValueError):
    return None
  for shard in sidecar['shards']:
    path = os.path.join(output, shard['file'])
    if not os.path.exists(path) or os.path.getsize(path) != shard['bytes']:
      return None
  return sidecar


def list_items(settings: dict) -> list:
  source = settings['source']
  if source.startswith('tfds:'):
    length = data_sources.prepare_tfds(source[len('tfds:'):], settings['tfds_split'],
                                       settings['tfds_data_dir'])
    return list(range(length))
  if source.startswith('records:'):
    raise ValueError('--source is already prepared records; give the folder or TFDS dataset')
  return data_sources.list_source(source)


def _check_settings(output: str, settings: dict):
  """Records the arguments that decide the files; refuses a folder made with others."""
  path = os.path.join(output, SETTINGS)
  if os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
    if differ:
      raise ValueError(
          f'{output} holds records prepared with other arguments '
          f'({", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in differ.items())}); '
          f'use another --output, or the same arguments to finish that run')
  else:
    records.write_json(path, settings)


def part_path(output: str, part: int, num_parts: int) -> str:
  return os.path.join(output, f'part-{part:05d}-of-{num_parts:05d}.json')


def merge(output: str, settings: dict) -> dict:
  """Writes manifest.json from the finished parts; raises if a part is missing."""
  num_parts = settings['num_parts']
  missing = [k for k in range(num_parts) if not os.path.exists(part_path(output, k, num_parts))]
  if missing:
    raise ValueError(f'{output}: part(s) {missing} of {num_parts} are not finished; run '
                     f'--part=K for each, then --merge')
  parts = []
  for k in range(num_parts):
    with open(part_path(output, k, num_parts)) as f:
      parts.append(json.load(f))
  manifest = records.merge_parts(parts, settings)
  records.write_json(os.path.join(output, records.MANIFEST), manifest)
  return manifest


def prepare(settings: dict, output: str, part: int = 0, processes: int = 1,
            progress: bool = True) -> Optional[dict]:
  """Writes part `part` of the records; returns the manifest once every part is done."""
  os.makedirs(output, exist_ok=True)
  _check_settings(output, settings)
  items = list_items(settings)[part::settings['num_parts']]
  size = settings['images_per_shard']
  jobs, sidecars = [], {}
  for j, start in enumerate(range(0, len(items), size)):
    stem = f'part{part:05d}-{j:05d}'
    done = _finished(output, stem)
    if done is None:
      jobs.append((output, stem, settings, items[start:start + size]))
    else:
      sidecars[stem] = done
  bar = tqdm.tqdm(total=len(items), initial=sum(s['images'] for s in sidecars.values()),
                  unit='image', desc=f'prepare part {part}', disable=not progress,
                  file=sys.stderr)
  if processes > 1 and len(jobs) > 1:
    context = multiprocessing.get_context('spawn')  # No fork of a process holding threads.
    with concurrent.futures.ProcessPoolExecutor(min(processes, len(jobs)), mp_context=context,
                                                initializer=_init_worker,
                                                initargs=(settings,)) as pool:
      futures = {pool.submit(write_shard_job, job): job[1] for job in jobs}
      for future in concurrent.futures.as_completed(futures):
        sidecars[futures[future]] = future.result()
        bar.update(sidecars[futures[future]]['images'])
  else:
    for job in jobs:
      sidecars[job[1]] = write_shard_job(job)
      bar.update(sidecars[job[1]]['images'])
  bar.close()
  stems = sorted(sidecars)
  summary = {'images': sum(sidecars[s]['images'] for s in stems),
             'used_images': sum(sidecars[s]['used_images'] for s in stems),
             'shards': [shard for s in stems for shard in sidecars[s]['shards']],
             'skipped': [skip for s in stems for skip in sidecars[s]['skipped']]}
  records.write_json(part_path(output, part, settings['num_parts']), summary)
  try:
    return merge(output, settings)
  except ValueError:  # Other parts are still running; the last one merges.
    return None


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.prepare', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--source', help='folder:PATH, tfds:NAME[/CONFIG] or skimage:NAME,NAME')
  parser.add_argument('--output', required=True, help='folder to write the records into')
  parser.add_argument('--crop', type=int, default=480, help='sub-image side in pixels')
  parser.add_argument('--step', type=int, default=240, help='pixels between sub-images')
  parser.add_argument('--min_size', type=int, default=96,
                      help='skip images with a side below this: the largest training crop')
  parser.add_argument('--encoding', choices=records.ENCODINGS, default='raw',
                      help='lossless payload encoding (benchmarks/input_pipeline.py compares them)')
  parser.add_argument('--images_per_shard', type=int, default=32)
  parser.add_argument('--processes', type=int, default=os.cpu_count(),
                      help='parallel processes writing shards')
  parser.add_argument('--num_parts', type=int, default=1, help='machines sharing the job')
  parser.add_argument('--part', type=int, default=0, help='this machine: 0 .. num_parts - 1')
  parser.add_argument('--tfds_split', default='train')
  parser.add_argument('--tfds_image_key', default='hr')
  parser.add_argument('--tfds_data_dir', default='')
  parser.add_argument('--merge', action='store_true',
                      help='only write the manifest of a folder whose parts are all done')
  parser.add_argument('--verify', action='store_true',
                      help='only check a prepared folder: every shard and its sha256')
  args = parser.parse_args(argv)
  try:
    if args.verify:
      prepared = records.open_prepared(args.output, verify_checksums=True)
      print(f'{args.output}: ok, {records.describe(prepared.manifest)}')
      return 0
    if args.merge:
      with open(os.path.join(args.output, SETTINGS)) as f:
        manifest = merge(args.output, json.load(f))
      print(f'{args.output}: {records.describe(manifest)}')
      return 0
    if not args.source:
      parser.error('--source is required to prepare')
    if not 0 <= args.part < args.num_parts:
      parser.error(f'--part={args.part} must be in 0 .. --num_parts - 1 = {args.num_parts - 1}')
    if args.min_size > args.crop:
      parser.error(f'--min_size={args.min_size} is larger than --crop={args.crop}')
    settings = {'source': args.source, 'crop': args.crop, 'step': args.step,
                'min_size': args.min_size, 'encoding': args.encoding,
                'images_per_shard': args.images_per_shard, 'num_parts': args.num_parts,
                'tfds_split': args.tfds_split, 'tfds_image_key': args.tfds_image_key,
                'tfds_data_dir': args.tfds_data_dir}
    started = time.perf_counter()
    manifest = prepare(settings, args.output, args.part, args.processes)
  except (FileNotFoundError, ValueError, records.RecordsError,
          data_sources.TfdsUnavailableError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  seconds = time.perf_counter() - started
  if manifest is not None and not manifest['shards']:
    reasons = '; '.join(f'{s["image"]}: {s["reason"]}' for s in manifest['skipped'][:5])
    print(f'error: no usable image in {args.source} ({len(manifest["skipped"])} skipped: '
          f'{reasons})', file=sys.stderr)
    return 2
  if manifest is None:
    print(f'{args.output}: part {args.part} of {args.num_parts} done in {seconds:.1f} s; the '
          f'last part to finish writes the manifest')
    return 0
  thousands = max(manifest['images'], 1) / 1000
  print(f'{args.output}: {records.describe(manifest)}; {manifest["bytes"] / 2**30:.2f} GiB, '
        f'{len(manifest["skipped"])} images skipped; {seconds:.1f} s here '
        f'({seconds / thousands:.0f} s and {manifest["bytes"] / 2**30 / thousands:.2f} GiB per '
        f'thousand source images)')
  return 0


if __name__ == '__main__':
  sys.exit(main())
