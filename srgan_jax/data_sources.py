"""Training images by index, and the rows each step draws from them. No JAX here.

Sources (`config.data.source`), each cut into `num_shards` data shards (image or record i
belongs to shard i mod S):
- 'records:DIR': sub-images prepared once by `python -m srgan_jax.prepare`, read at random
  from ArrayRecord shards and decoded per use: host memory does not grow with the data.
- 'tfds:NAME[/CONFIG]': a TFDS dataset prepared as ArrayRecord, read at random through
  `tfds.data_source`; decoded per use.
- 'folder:PATH' (or a bare path) and 'skimage:NAME,NAME': decoded once into memory (a
  small set: the fastest rows there are, see benchmarks/input_pipeline.py), bounded by
  `config.data.cache_max_bytes`, checked from the files' headers before decoding.

The rows that data shard k contributes to the batch of step t are a pure function of
(seed, t, k): which images, where the crops are, their rotations and flips, and what
replaces an image that cannot be used (a record that does not decode, a TFDS image smaller
than the crop): the next usable one of the shard, so a resumed run sees the same rows.

`ProcessRows` is what Grain's worker processes unpickle and run; they import JAX (Grain
does) but never start an accelerator backend here (`init_worker`).
"""

import concurrent.futures
import dataclasses
import os
import re
from typing import Optional, Protocol, Sequence, Union

import numpy as np
from absl import logging
from PIL import Image

from srgan_jax import blur_kernels, child_processes
from srgan_jax import images as image_io
from srgan_jax import records

NUM_TRANSFORMS = 8  # The dihedral group of the square: 4 rotations, each with or without a flip.


@dataclasses.dataclass
class LoadReport:
  """What loading an in-memory source kept and skipped, for the start-up log."""
  used: int = 0
  too_small: list = dataclasses.field(default_factory=list)
  unreadable: list = dataclasses.field(default_factory=list)  # (name, reason)
  bytes: int = 0


class ImageSource(Protocol):
  """Random access to one data shard's images."""

  def __len__(self) -> int:
    ...

  def read(self, indices: Sequence[int]) -> list[Union[np.ndarray, str]]:
    """[H, W, 3] uint8 per index, or the reason it cannot be used."""

  def name(self, index: int) -> str:
    """Where image `index` comes from, for messages."""


@dataclasses.dataclass
class InMemoryImages:
  images: list  # [H, W, 3] uint8 each

  def __len__(self):
    return len(self.images)

  def read(self, indices):
    return [self.images[i] for i in indices]

  def name(self, index):
    return f'image #{index} in memory'


class RecordImages:
  """Data shard `shard` of `num_shards` of a prepared records folder."""

  def __init__(self, prepared: records.PreparedRecords, shard: int, num_shards: int):
    self.prepared = prepared
    self.indices = np.arange(shard, prepared.num_records, num_shards, dtype=np.int64)
    self._source = None

  def __getstate__(self):  # Workers open their own readers.
    return {**self.__dict__, '_source': None}

  def __len__(self):
    return len(self.indices)

  def read(self, indices):
    if self._source is None:
      import grain  # Imported where reading happens: Grain imports JAX.
      self._source = grain.sources.ArrayRecordDataSource(self.prepared.paths)
    wanted = [int(self.indices[i]) for i in indices]
    try:
      payloads = self._source.__getitems__(wanted)
    except RuntimeError:  # A damaged chunk (the reader checks each one's hash): find it.
      payloads = [self._read_one(index) for index in wanted]
    out = []
    for payload in payloads:
      if isinstance(payload, str):
        out.append(payload)
        continue
      try:
        out.append(records.decode(payload, self.prepared.encoding))
      except records.UndecodableRecordError as e:
        out.append(f'does not decode ({e})')
    return out

  def _read_one(self, index: int):
    """The payload of record `index`, or why it cannot be read."""
    try:
      return self._source[index]
    except RuntimeError as e:
      return f'cannot be read ({str(e)[:200]})'

  def name(self, index):
    return self.prepared.locate(int(self.indices[index]))


class TfdsImages:
  """Data shard `shard` of `num_shards` of a TFDS split, through `tfds.data_source`."""

  def __init__(self, name: str, split: str, data_dir: str, image_key: str, shard: int,
               num_shards: int, length: int):
    self.dataset, self.split, self.data_dir, self.image_key = name, split, data_dir, image_key
    self.indices = np.arange(shard, length, num_shards, dtype=np.int64)
    self._source = None

  def __getstate__(self):
    return {**self.__dict__, '_source': None}

  def __len__(self):
    return len(self.indices)

  def read(self, indices):
    if self._source is None:
      self._source = open_tfds_source(self.dataset, self.split, self.data_dir)
    return [tfds_image(self._source[int(self.indices[i])], self.image_key, self.dataset)
            for i in indices]

  def name(self, index):
    return f'tfds:{self.dataset}[{self.split}]#{int(self.indices[index])}'


def tfds_image(example: dict, image_key: str, dataset: str) -> np.ndarray:
  """The [H, W, 3] uint8 image of a TFDS example (gray repeated, alpha dropped)."""
  if image_key not in example:
    raise KeyError(f'tfds:{dataset} has no feature {image_key!r}; it has {sorted(example)} '
                   f'(set config.data.tfds_image_key)')
  image = np.asarray(example[image_key])
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
  return np.ascontiguousarray(image[..., :3].astype(np.uint8))


class TfdsUnavailableError(RuntimeError):
  """A TFDS dataset that is neither prepared nor downloadable now."""


def _tfds():
  try:
    import tensorflow_datasets as tfds  # Only the tfds: source needs it.
  except ImportError as e:
    raise ImportError(
        f'the tfds: data source needs TensorFlow Datasets ({e}); install it with '
        f'`pip install -e ".[tfds]"`, or train on a folder or prepared records') from e
  return tfds


def _hide_accelerators_from_tensorflow():
  try:
    import tensorflow as tf  # TFDS decodes some features with TensorFlow.
  except ImportError:
    return
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow must not take accelerator memory.


def open_tfds_source(name: str, split: str, data_dir: str):
  _hide_accelerators_from_tensorflow()
  return _tfds().data_source(name, split=split, data_dir=data_dir or None, download=False)


# TFDS retries a failed download for minutes (urllib3 backoff over 10 tries): offline,
# a run should say so within seconds instead.
_DOWNLOAD_RETRIES = 2


def prepare_tfds(name: str, split: str, data_dir: str) -> int:
  """Makes sure `name` is prepared as ArrayRecord in `data_dir`; returns the split's size.

  Not prepared: downloads and prepares it (TFDS's builder), and if that fails (offline,
  a server down), raises `TfdsUnavailableError` within seconds, naming the dataset, where
  TFDS wants the files, and the alternatives.
  """
  tfds = _tfds()
  builder = tfds.builder(name, data_dir=data_dir or None)
  if not builder.is_prepared():
    from tensorflow_datasets.core.download import downloader  # Its retry count, see above.
    retries, downloader.MAX_RETRIES = downloader.MAX_RETRIES, _DOWNLOAD_RETRIES
    try:
      builder.download_and_prepare(file_format='array_record')
    except Exception as e:  # The download raises whatever its transport raises.
      raise TfdsUnavailableError(
          f'tfds:{name} is not prepared in {builder.data_dir} and could not be downloaded '
          f'({type(e).__name__}: {str(e)[:300]}). Place its downloaded archives in '
          f'{os.path.join(builder.data_dir_root, "downloads", "manual")} (TFDS\'s manual_dir) '
          f'and run `tfds build {name} --file_format=array_record --data_dir='
          f'{builder.data_dir_root}`, or train without TFDS: '
          f'--config.data.source=folder:PATH, or records prepared from a folder '
          f'(python -m srgan_jax.prepare --source=folder:PATH --output=DIR, then '
          f'--config.data.source=records:DIR)') from e
    finally:
      downloader.MAX_RETRIES = retries
  file_format = str(getattr(builder.info.file_format, 'value', builder.info.file_format))
  if file_format != 'array_record':
    raise TfdsUnavailableError(
        f'tfds:{name} in {builder.data_dir} is prepared as {file_format}, which has no random '
        f'access; prepare it again as ArrayRecord: `tfds build {name} '
        f'--file_format=array_record --data_dir={builder.data_dir_root}` (into another '
        f'data_dir, or after moving this copy aside)')
  if split not in builder.info.splits:
    raise ValueError(f'tfds:{name} has no split {split!r}; it has {sorted(builder.info.splits)}')
  return builder.info.splits[split].num_examples


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
                     'also reads tfds:NAME[/CONFIG] and records:DIR)')
  return image_io.list_image_files(source)


def _header_bytes(path: str) -> int:
  """Decoded uint8 RGB bytes of an image file, from its header alone (0 if unreadable)."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except Exception:  # Decoding reports it with its reason.
    return 0
  return width * height * 3


def load_images(data_config, shard: int, num_shards: int,
                report: Optional[LoadReport] = None) -> list[np.ndarray]:
  """Decodes every usable image of one shard of a folder/skimage source into memory.

  Raises:
    MemoryError: before decoding, if the images' headers add up to more than
      `config.data.cache_max_bytes` (then prepare records instead).
    ValueError: if no image of the shard is usable.
  """
  report = report if report is not None else LoadReport()
  min_size = data_config.hr_crop_size
  source = data_config.source
  paths = list_source(source)[shard::num_shards]
  estimate = sum(_header_bytes(p) for p in paths)
  if estimate > data_config.cache_max_bytes:
    raise MemoryError(
        f'the images of {source} (shard {shard}/{num_shards}) would take '
        f'{estimate / 2**30:.2f} GiB decoded, over config.data.cache_max_bytes = '
        f'{data_config.cache_max_bytes / 2**30:.2f} GiB: prepare them as records, read from '
        f'disk as training goes (python -m srgan_jax.prepare --source={source} --output=DIR, '
        f'then --config.data.source=records:DIR), or raise the bound')

  def load(path):
    try:
      return image_io.read_rgb(path), None
    except (image_io.UnreadableImageError, OSError) as e:
      return None, str(e)

  kept = []
  with concurrent.futures.ThreadPoolExecutor(max(1, data_config.decode_threads)) as pool:
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
  report.used += len(kept)
  report.bytes += sum(image.nbytes for image in kept)
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


def sample_rows(source: ImageSource, seed: int, step: int, shard: int, rows: int,
                crop_size: int, min_size: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """The rows that `shard` contributes to the global batch of `step`, before their transforms.

  Images from `min_size` pixels up (default crop_size) are used; one smaller than the crop
  is first mirrored out at its bottom and right to crop_size, as BasicSR pads to its
  crop_pad_size (reflect-101).

  Returns:
    crops: [rows, crop_size, crop_size, 3] uint8, random crops as cut from the images.
    transforms: [rows] int32 in [0, 8), each crop's random rotation and flip, applied by
      `input_pipeline.dihedral` on the device: in numpy here it took 85% of a batch's
      host time (a rotated copy moves 3 bytes at a time), and the host is what must keep up.
    substituted: 'NAME: reason' for each drawn image that could not be used and was
      replaced by the next usable one of the shard.
  """
  rng = np.random.default_rng((seed, step, shard))
  which = rng.integers(0, len(source), size=rows)
  corner = rng.random((rows, 2))
  transforms = rng.integers(0, NUM_TRANSFORMS, size=rows).astype(np.int32)
  unique = sorted(set(int(i) for i in which))
  read = dict(zip(unique, source.read(unique)))
  substituted = []
  crops = np.empty((rows, crop_size, crop_size, 3), np.uint8)
  min_size = min_size or crop_size
  for r in range(rows):
    index = int(which[r])
    image = _usable(read[index], min_size)
    if isinstance(image, str):
      substituted.append(f'{source.name(index)}: {image}')
      image = _next_usable(source, index, min_size, read)
    missing = [(0, max(0, crop_size - n)) for n in image.shape[:2]]
    if any(after for _, after in missing):
      image = np.pad(image, missing + [(0, 0)], mode='reflect')
    top = int(corner[r, 0] * (image.shape[0] - crop_size + 1))
    left = int(corner[r, 1] * (image.shape[1] - crop_size + 1))
    crops[r] = image[top:top + crop_size, left:left + crop_size]
  return crops, transforms, substituted


def _usable(image: Union[np.ndarray, str], crop_size: int) -> Union[np.ndarray, str]:
  if isinstance(image, str) or min(image.shape[:2]) >= crop_size:
    return image
  return f'{image.shape[1]}x{image.shape[0]} is smaller than the {crop_size}-pixel crop'


def _next_usable(source: ImageSource, index: int, crop_size: int, read: dict) -> np.ndarray:
  for offset in range(1, len(source)):
    candidate = (index + offset) % len(source)
    if candidate not in read:
      read[candidate] = source.read([candidate])[0]
    image = _usable(read[candidate], crop_size)
    if not isinstance(image, str):
      return image
  raise records.RecordsError(f'no image of the shard holding {source.name(index)} is usable '
                             f'for {crop_size}-pixel crops')


@dataclasses.dataclass(frozen=True)
class HostRows:
  """One process's rows of one step's global batch, as the host prepares them."""
  step: int
  crops: np.ndarray  # [B / process_count, crop, crop, 3] uint8
  transforms: np.ndarray  # [B / process_count] int32 in [0, 8)
  substituted: tuple  # 'NAME: reason' per replaced image
  # [B / process_count, 3, 21, 21] float32 blur kernels of the real-world degradation
  # (`blur_kernels`); None for the bicubic one.
  kernels: Optional[np.ndarray] = None


@dataclasses.dataclass
class ProcessRows:
  """step -> `HostRows` of this process's data shards: the function Grain maps over steps."""
  sources: dict  # data shard -> ImageSource
  seed: int
  rows_per_shard: int
  crop_size: int
  min_size: int = 0  # Images from this size up are padded to crop_size (`sample_rows`).
  # The real-world degradation's fields (a dict of `config.degradation`): each row also
  # gets its blur kernels, drawn here for the same reason BasicSR draws them in its data
  # workers (float64 on the host; see blur_kernels). None: bicubic, no kernels.
  degradation: Optional[dict] = None

  def __call__(self, step: int) -> HostRows:
    shards = sorted(self.sources)
    parts = [sample_rows(self.sources[k], self.seed, step, k, self.rows_per_shard,
                         self.crop_size, self.min_size) for k in shards]
    kernels = None
    if self.degradation is not None:
      rows = [k * self.rows_per_shard + r for k in shards for r in range(self.rows_per_shard)]
      kernels = blur_kernels.batch_kernels(self.degradation, self.seed, step, rows)
    return HostRows(int(step), np.concatenate([p[0] for p in parts]),
                    np.concatenate([p[1] for p in parts]),
                    tuple(s for p in parts for s in p[2]), kernels)


def init_worker(worker_index: int, worker_count: int):
  """Grain's worker_init_fn: the worker ends with the trainer, however the trainer dies
  (`child_processes`), and must not start JAX (or TensorFlow) on an accelerator."""
  del worker_index, worker_count
  child_processes.end_multiprocessing_child_with_parent()
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ['CUDA_VISIBLE_DEVICES'] = ''
  import jax  # Already imported by Grain; the flag must change before any backend starts.
  jax.config.update('jax_platforms', 'cpu')
