"""Prepared training records: sub-images in ArrayRecord shards, described by a manifest.

A prepared folder (written by `python -m srgan_jax.prepare`) holds:
- `*.array_record`: shards of records, one sub-image each, written with `group_size:1`
  so that any record is one seek away (random access is how training reads them).
- `manifest.json`: the source, the cutting (crop, step), the encoding, and each shard's
  file name, record count, size and sha256, in the order that numbers the records
  (record i of the folder is record i - offset of the shard that holds it); the
  source images that were skipped, with the reason.

Payload encodings (benchmarks/input_pipeline.py measures each against the rate a GPU
step consumes; 'raw', the default, is the one that keeps up with both training phases):
- 'raw': an 8-byte header (height, width: little-endian uint32) and the uint8 pixels:
  no decoding;
- 'qoi': the Quite OK Image format, lossless, about 60% of raw's bytes on photos and
  decoded several times faster than PNG;
- 'png': PNG at zlib level 1 (BasicSR stores its LMDB sub-images this way).

This module imports no JAX: Grain's worker processes unpickle readers that use it, and
a worker that imported JAX onto an accelerator would take memory there (google/grain#820).
"""

import dataclasses
import hashlib
import json
import os
import struct
from typing import Sequence

import imagecodecs
import numpy as np
from array_record.python import array_record_module

MANIFEST = 'manifest.json'
FORMAT = 'srgan_jax.records/1'
ENCODINGS = ('raw', 'qoi', 'png')
SHARD_SUFFIX = '.array_record'
# Each record is read alone (random access): one record per chunk, as the reader expects.
# No compression: ArrayRecord's default (zstd) made reading raw sub-images three times
# slower, gains nothing on PNG and a sixth of the size on QOI (benchmarks/input_pipeline.py).
WRITER_OPTIONS = 'group_size:1,uncompressed'
_RAW_HEADER = struct.Struct('<II')


class RecordsError(ValueError):
  """A prepared folder that cannot be trained on; the message names the file and why."""


class UndecodableRecordError(ValueError):
  """One record whose payload does not decode to an image."""


def encode(image: np.ndarray, encoding: str) -> bytes:
  """[H, W, 3] uint8 -> payload bytes in `encoding` (lossless)."""
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(f'records hold [H, W, 3] uint8 images, got {image.dtype} {image.shape}')
  if encoding == 'png':
    return bytes(imagecodecs.png_encode(image, level=1))
  if encoding == 'qoi':
    return bytes(imagecodecs.qoi_encode(np.ascontiguousarray(image)))
  if encoding == 'raw':
    return _RAW_HEADER.pack(image.shape[0], image.shape[1]) + image.tobytes()
  raise ValueError(f'unknown record encoding {encoding!r}; one of {ENCODINGS}')


def decode(payload: bytes, encoding: str) -> np.ndarray:
  """Payload bytes -> [H, W, 3] uint8; `UndecodableRecordError` if they are not one."""
  try:
    if encoding == 'raw':
      height, width = _RAW_HEADER.unpack_from(payload)
      image = np.frombuffer(payload, np.uint8, offset=_RAW_HEADER.size)
      return image.reshape(height, width, 3)
    image = (imagecodecs.png_decode if encoding == 'png' else imagecodecs.qoi_decode)(payload)
  except Exception as e:  # Each codec raises its own error type.
    raise UndecodableRecordError(f'{type(e).__name__}: {e}') from e
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
    raise UndecodableRecordError(f'decoded to {image.dtype} {image.shape}, not [H, W, 3] uint8')
  return image


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def write_shard(path: str, payloads: Sequence[bytes]) -> dict:
  """Writes `payloads` as the ArrayRecord file `path`, atomically.

  The records go to `path + '.partial'`, which is renamed to `path` only once closed and
  synced: a killed writer leaves a `.partial` file, never a shard that looks complete.

  Returns:
    The shard's manifest entry: file (base name), records, bytes, sha256.
  """
  partial = path + '.partial'
  writer = array_record_module.ArrayRecordWriter(partial, WRITER_OPTIONS)
  for payload in payloads:
    writer.write(payload)
  writer.close()
  with open(partial, 'rb') as f:
    os.fsync(f.fileno())
  entry = {'file': os.path.basename(path), 'records': len(payloads),
           'bytes': os.path.getsize(partial), 'sha256': sha256_of(partial)}
  os.replace(partial, path)
  return entry


def write_json(path: str, value: dict):
  """Writes JSON atomically (temporary file, fsync, rename)."""
  partial = path + '.partial'
  with open(partial, 'w') as f:
    json.dump(value, f, indent=1)
    f.write('\n')
    f.flush()
    os.fsync(f.fileno())
  os.replace(partial, path)


@dataclasses.dataclass(frozen=True)
class PreparedRecords:
  """A prepared folder, checked: its shard paths, record counts and encoding."""
  directory: str
  manifest: dict

  @property
  def encoding(self) -> str:
    return self.manifest['encoding']

  @property
  def paths(self) -> list[str]:
    return [os.path.join(self.directory, s['file']) for s in self.manifest['shards']]

  @property
  def num_records(self) -> int:
    return sum(s['records'] for s in self.manifest['shards'])

  def locate(self, index: int) -> str:
    """'FILE#k': where record `index` (over the whole folder) lies, for messages."""
    for shard in self.manifest['shards']:
      if index < shard['records']:
        return f'{os.path.join(self.directory, shard["file"])}#{index}'
      index -= shard['records']
    raise IndexError(index)


def read_manifest(directory: str) -> dict:
  path = os.path.join(directory, MANIFEST)
  if not os.path.isdir(directory):
    raise RecordsError(f'records:{directory}: no such folder')
  if not os.path.exists(path):
    parts = sorted(f for f in os.listdir(directory) if f.startswith('part-'))
    hint = (f'; it holds {len(parts)} finished part(s) of a prepare run split over machines: '
            f'the manifest is written when all parts are done (python -m srgan_jax.prepare '
            f'--merge --output={directory})' if parts else
            '; prepare one with python -m srgan_jax.prepare --source=... --output=' + directory)
    raise RecordsError(f'{path} is missing: {directory} is not a finished prepared folder{hint}')
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise RecordsError(f'{path} cannot be read: {e}') from e
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    raise RecordsError(f'{path} is not a manifest of srgan_jax records (format '
                       f'{manifest.get("format") if isinstance(manifest, dict) else None!r}, '
                       f'expected {FORMAT!r})')
  return manifest


def open_prepared(directory: str, verify_checksums: bool = False) -> PreparedRecords:
  """Reads the manifest and checks every shard against it, before anything else runs.

  Each shard must exist, have the manifest's size, open as an ArrayRecord file and hold
  the manifest's record count: a missing, truncated or foreign file stops here, named.
  `verify_checksums` also reads every byte and compares its sha256 (minutes for a large
  set, so training does not; `python -m srgan_jax.prepare --verify` does).

  Raises:
    RecordsError: naming the manifest or the first bad shard and what is wrong with it.
  """
  directory = os.path.abspath(directory)
  manifest = read_manifest(directory)
  if manifest.get('encoding') not in ENCODINGS:
    raise RecordsError(f'{directory}/{MANIFEST}: unknown encoding {manifest.get("encoding")!r}')
  if not manifest['shards']:
    raise RecordsError(f'{directory}/{MANIFEST} lists no shard: no source image was usable '
                       f'({len(manifest.get("skipped", []))} skipped, see its "skipped")')
  for shard in manifest['shards']:
    check_shard(os.path.join(directory, shard['file']), shard, verify_checksums)
  return PreparedRecords(directory, manifest)


def check_shard(path: str, entry: dict, verify_checksum: bool = False):
  """Raises `RecordsError` if the file at `path` is not the shard `entry` describes."""
  if not os.path.exists(path):
    raise RecordsError(f'shard {path} is missing (listed in the manifest)')
  size = os.path.getsize(path)
  if size != entry['bytes']:
    raise RecordsError(f'shard {path} has {size} bytes, the manifest says {entry["bytes"]}: '
                       f'truncated or replaced; prepare it again')
  try:
    reader = array_record_module.ArrayRecordReader(path)
    try:
      count = reader.num_records() if reader.ok() else None
    finally:
      reader.close()
  except RuntimeError as e:  # The reader's own word on a damaged file.
    raise RecordsError(f'shard {path} is not a readable ArrayRecord file ({e})') from e
  if count is None:
    raise RecordsError(f'shard {path} is not a readable ArrayRecord file')
  if count != entry['records']:
    raise RecordsError(f'shard {path} holds {count} records, the manifest says '
                       f'{entry["records"]}')
  if verify_checksum:
    digest = sha256_of(path)
    if digest != entry['sha256']:
      raise RecordsError(f'shard {path}: sha256 {digest} does not match the manifest\'s '
                         f'{entry["sha256"]}; the file changed after it was prepared')


def describe(manifest: dict) -> str:
  """One line for the start-up log."""
  return (f'{manifest["records"]:,} records ({manifest["encoding"]}, sub-images of '
          f'{manifest["crop"]} px, step {manifest["step"]}) in {len(manifest["shards"])} '
          f'shards from {manifest["used_images"]:,} images of {manifest["source"]}')


def merge_parts(parts: Sequence[dict], settings: dict) -> dict:
  """The manifest of a folder whose `parts` (one per machine, in part order) are done."""
  shards = [s for part in parts for s in part['shards']]
  return {
      'format': FORMAT, **settings,
      'images': sum(p['images'] for p in parts),
      'used_images': sum(p['used_images'] for p in parts),
      'records': sum(s['records'] for s in shards),
      'bytes': sum(s['bytes'] for s in shards),
      'shards': shards,
      'skipped': [s for part in parts for s in part['skipped']],
  }
