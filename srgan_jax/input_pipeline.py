"""Training images -> decoded once into memory -> random HR crops -> sharded global batches.

The host cuts the crops and draws each one's rotation and flip; the device applies them
(`dihedral`), since rotating 3-byte pixels in numpy cost the host six times the crop.

Sources (`config.data.source`):
- 'folder:PATH' (or a bare path): every image file under PATH, recursively.
- 'skimage:NAME,NAME,...': natural images that ship inside scikit-image (no network).
- 'tfds:NAME[/CONFIG]': any TFDS image dataset, e.g. 'tfds:div2k/bicubic_x4'.

Determinism and resumption: the batch of step t is a pure function of
(seed, t, shard), so there is no iterator state: a run resumed at step t sees exactly
the batches an uninterrupted run sees (the checkpoint's step is the loader's position).

Sharding: the dataset is cut into `num_shards` shards (file k of a folder goes to shard
k mod S; a TFDS split is cut into S contiguous parts by `tfds.even_splits`);
rows [k*B/S, (k+1)*B/S) of the global batch B are drawn from shard k. Process p owns a
contiguous block of rows and loads only the shards those rows use. Because the data
stream depends on S and not on the process count, 1 process and 2 processes with the
same S train on identical batches.
"""

import collections
import concurrent.futures
import dataclasses
import itertools
import os
import re
from typing import Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from srgan_jax import images as image_io


@dataclasses.dataclass
class LoadReport:
  """What loading a source kept and skipped, for the start-up log."""
  used: int = 0
  too_small: list = dataclasses.field(default_factory=list)
  unreadable: list = dataclasses.field(default_factory=list)  # (name, reason)
  bytes: int = 0


def _skimage_paths(names: str) -> list[str]:
  import skimage.data  # Ships a few natural images in its wheel.
  root = skimage.data.data_dir
  available = {os.path.splitext(f)[0]: os.path.join(root, f) for f in os.listdir(root)
               if f.lower().endswith(image_io.IMAGE_EXTENSIONS)}
  paths = []
  for name in [n.strip() for n in names.split(',') if n.strip()]:
    if name not in available:
      raise ValueError(f'skimage image {name!r} not found in {root}; have {sorted(available)}')
    paths.append(available[name])
  return paths


def list_source(source: str) -> list[str]:
  """Paths of a 'folder:' or 'skimage:' source, in a stable order."""
  if source.startswith('skimage:'):
    return _skimage_paths(source[len('skimage:'):])
  if source.startswith('folder:'):
    return image_io.list_image_files(source[len('folder:'):])
  kind = re.match(r'[A-Za-z_]\w*:', source)
  if kind and not os.path.exists(source):
    # A misspelt kind ('tfd:div2k') would otherwise read as a missing folder of that name.
    raise ValueError(f'unknown data source kind {kind.group(0)!r} in {source!r}; image '
                     'sources are folder:PATH, skimage:NAME,NAME or a folder path (training '
                     'also reads tfds:NAME[/CONFIG])')
  return image_io.list_image_files(source)


def _decode_files(paths: Sequence[str], min_size: int, threads: int,
                  report: LoadReport) -> list[np.ndarray]:
  def load(path):
    try:
      return image_io.read_rgb(path), None
    except (image_io.UnreadableImageError, OSError) as e:
      return None, str(e)

  kept = []
  with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    for path, (image, error) in zip(paths, pool.map(load, paths)):
      if image is None:
        logging.warning('skipping unreadable image: %s', error)
        report.unreadable.append((path, error))
      elif min(image.shape[:2]) < min_size:
        logging.warning('skipping %s: %dx%d is smaller than the %d-pixel crop',
                        path, image.shape[1], image.shape[0], min_size)
        report.too_small.append(path)
      else:
        kept.append(image)
  return kept


def _tfds_images(name: str, split: str, data_dir: str, image_key: str, shard: int,
                 num_shards: int, min_size: int, report: LoadReport) -> list[np.ndarray]:
  """Reads one shard of a TFDS split; TensorFlow is kept off the accelerators."""
  try:
    import tensorflow as tf  # Only TFDS needs TensorFlow.
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
        f'data source tfds:{name} needs TensorFlow Datasets ({e}); install it with '
        f'`pip install -e ".[tfds]"`, or train on a folder: --config.data.source=folder:PATH'
    ) from e
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow must not take accelerator memory.

  sub_split = tfds.even_splits(split, n=num_shards)[shard]
  dataset = tfds.load(name, split=sub_split, data_dir=data_dir or None, shuffle_files=False)
  kept = []
  for index, example in enumerate(tfds.as_numpy(dataset)):
    if image_key not in example:
      raise KeyError(f'tfds:{name} has no feature {image_key!r}; it has {sorted(example)} '
                     f'(set config.data.tfds_image_key)')
    image = np.asarray(example[image_key])
    if image.ndim == 2 or image.shape[-1] == 1:
      image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    image = image[..., :3].astype(np.uint8)
    if min(image.shape[:2]) < min_size:
      report.too_small.append(f'{name}[{sub_split}]#{index}')
      continue
    kept.append(image)
  return kept


def load_shard(data_config, shard: int, num_shards: int,
               report: Optional[LoadReport] = None) -> list[np.ndarray]:
  """Decodes every usable image of one shard into memory ([H, W, 3] uint8 each)."""
  report = report if report is not None else LoadReport()
  min_size = data_config.hr_crop_size
  source = data_config.source
  if source.startswith('tfds:'):
    kept = _tfds_images(source[len('tfds:'):], data_config.tfds_split,
                        data_config.tfds_data_dir, data_config.tfds_image_key,
                        shard, num_shards, min_size, report)
  else:
    paths = list_source(source)[shard::num_shards]
    kept = _decode_files(paths, min_size, data_config.decode_threads, report)
  report.used += len(kept)
  report.bytes += sum(image.nbytes for image in kept)
  if report.bytes > data_config.cache_max_bytes:
    raise MemoryError(
        f'decoded images of {source} take {report.bytes / 2**30:.2f} GiB, over '
        f'config.data.cache_max_bytes = {data_config.cache_max_bytes / 2**30:.2f} GiB; raise it or '
        f'use more shards/processes')
  if not kept:
    raise ValueError(
        f'no usable training image in shard {shard}/{num_shards} of {source}: '
        f'{len(report.unreadable)} unreadable, {len(report.too_small)} smaller than '
        f'{min_size}x{min_size}')
  return kept


def resolve_num_shards(data_config, global_batch: int, process_count: int) -> int:
  num_shards = data_config.num_shards or process_count
  if num_shards % process_count or global_batch % num_shards:
    raise ValueError(
        f'config.data.num_shards={num_shards} must be a multiple of the process count '
        f'({process_count}) and divide config.train.batch_size ({global_batch})')
  return num_shards


NUM_TRANSFORMS = 8  # The dihedral group of the square: 4 rotations, each with or without a flip.


def sample_rows(shard_images: Sequence[np.ndarray], seed: int, step: int, shard: int,
                rows: int, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
  """The rows that `shard` contributes to the global batch of `step`, before their transforms.

  Returns:
    crops: [rows, crop_size, crop_size, 3] uint8, random crops as cut from the images.
    transforms: [rows] int32 in [0, 8), each crop's random rotation and flip, applied by
      `dihedral` on the device: in numpy here it took 85% of a batch's host time
      (a rotated copy moves 3 bytes at a time), and the host is what must keep up.
  """
  rng = np.random.default_rng((seed, step, shard))
  which = rng.integers(0, len(shard_images), size=rows)
  corner = rng.random((rows, 2))
  transforms = rng.integers(0, NUM_TRANSFORMS, size=rows).astype(np.int32)
  crops = np.empty((rows, crop_size, crop_size, 3), np.uint8)
  for r in range(rows):
    image = shard_images[which[r]]
    top = int(corner[r, 0] * (image.shape[0] - crop_size + 1))
    left = int(corner[r, 1] * (image.shape[1] - crop_size + 1))
    crops[r] = image[top:top + crop_size, left:left + crop_size]
  return crops, transforms


def dihedral(crops: jax.Array, transforms: jax.Array) -> jax.Array:
  """Rotates and flips each crop: [N, S, S, C], [N] int in [0, 8) -> [N, S, S, C].

  Transform t is (t mod 4) quarter turns counter-clockwise (`np.rot90`), then, for
  t >= 4, a left-right flip. One elementwise pass that picks among the 8 variants.
  """
  out = crops
  for t in range(1, NUM_TRANSFORMS):
    variant = jnp.rot90(crops, t % 4, axes=(1, 2))
    if t >= 4:
      variant = variant[:, :, ::-1]
    out = jnp.where((transforms == t)[:, None, None, None], variant, out)
  return out


class TrainBatches:
  """This process's rows of each step's global batch, as globally sharded `jax.Array`s.

  Args:
    data_config: `config.data`.
    global_batch: `config.train.batch_size` (all processes together).
    seed: data seed.
    sharding: sharding of the global [B, crop, crop, 3] uint8 batch.
  """

  def __init__(self, data_config, global_batch: int, seed: int, sharding):
    self.crop_size = data_config.hr_crop_size
    self.seed = seed
    self.global_batch = global_batch
    self.sharding = sharding
    self.prefetch = max(1, data_config.prefetch_batches)
    process_count, process = jax.process_count(), jax.process_index()
    self.num_shards = resolve_num_shards(data_config, global_batch, process_count)
    self.rows_per_shard = global_batch // self.num_shards
    per_process = self.num_shards // process_count
    self.shard_ids = list(range(process * per_process, (process + 1) * per_process))
    self._dihedral = jax.jit(dihedral, out_shardings=sharding)
    self.report = LoadReport()
    self.shards = {k: load_shard(data_config, k, self.num_shards, self.report)
                   for k in self.shard_ids}
    logging.info(
        'data %s: %d images in memory (%.1f MiB) for shards %s of %d; skipped %d smaller '
        'than %d px, %d unreadable', data_config.source, self.report.used,
        self.report.bytes / 2**20, self.shard_ids, self.num_shards,
        len(self.report.too_small), self.crop_size, len(self.report.unreadable))

  def local_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows for `step`: crops [B / process_count, crop, crop, 3] uint8 and
    their transforms [B / process_count] (see `sample_rows`)."""
    parts = [sample_rows(self.shards[k], self.seed, step, k, self.rows_per_shard, self.crop_size)
             for k in self.shard_ids]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

  def global_batch_array(self, step: int) -> jax.Array:
    """The global HR batch of `step`, [B, crop, crop, 3] uint8, sharded, transformed."""
    crops, transforms = (jax.make_array_from_process_local_data(self.sharding, x)
                         for x in self.local_batch(step))
    return self._dihedral(crops, transforms)

  def iterate(self, start_step: int, num_steps: int) -> Iterator[tuple[int, jax.Array]]:
    """Yields (step, batch) for steps start_step .. num_steps - 1, in order.

    `config.data.prefetch_batches` batches are prepared ahead, each on a thread of its
    own, so the input keeps up with a step that is faster than one thread's batches.
    An error in preparing a batch is raised here, at that batch's step.
    """
    steps = iter(range(start_step, num_steps))
    with concurrent.futures.ThreadPoolExecutor(self.prefetch,
                                               thread_name_prefix='train-batches') as pool:
      pending = collections.deque(
          (step, pool.submit(self.global_batch_array, step))
          for step in itertools.islice(steps, self.prefetch))
      try:
        while pending:
          step, future = pending.popleft()
          batch = future.result()
          following = next(steps, None)
          if following is not None:
            pending.append((following, pool.submit(self.global_batch_array, following)))
          yield step, batch
      finally:  # A stopped loop leaves at most the running batches to finish.
        for _, future in pending:
          future.cancel()
