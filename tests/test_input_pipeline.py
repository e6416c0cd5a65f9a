import logging as std_logging
import os
import threading

import jax
import numpy as np
import pytest
from PIL import Image

from srgan_jax import data_sources, images, input_pipeline


def _data_config(source, crop=32, **overrides):
  from configs import default
  data = default.get_config().data
  data.source = source
  data.hr_crop_size = crop
  data.decode_threads = 2
  for k, v in overrides.items():
    setattr(data, k, v)
  return data


def _write_bad_folder(root):
  root.mkdir(exist_ok=True)
  rng = np.random.default_rng(0)
  good = rng.integers(0, 256, (50, 60, 3)).astype(np.uint8)
  Image.fromarray(good).save(root / 'good.png')
  png = root / 'truncated.png'
  Image.fromarray(good).save(png)
  png.write_bytes(png.read_bytes()[:200])
  Image.fromarray(rng.integers(0, 65536, (40, 40)).astype(np.uint16)).save(root / 'deep16.png')
  Image.fromarray(np.dstack([good, np.full(good.shape[:2], 128, np.uint8)])).save(root / 'rgba.png')
  Image.fromarray(good).convert('P', palette=Image.Palette.ADAPTIVE).save(root / 'palette.gif')
  Image.fromarray(good[:20, :20]).save(root / 'tiny.png')
  (root / 'notes.jpg').write_text('this is not a JPEG')
  nested = root / 'nested'
  nested.mkdir()
  Image.fromarray(good).save(nested / 'deep.jpg', quality=95)


def test_decode_rules(tmp_path):
  _write_bad_folder(tmp_path)
  deep = images.decode(str(tmp_path / 'deep16.png'))
  assert deep.is_gray and deep.bit_depth == 16 and deep.rgb.dtype == np.uint8
  raw = np.asarray(Image.open(tmp_path / 'deep16.png')).astype(np.float64)
  np.testing.assert_array_equal(deep.rgb[..., 0], np.round(raw * 255 / 65535).astype(np.uint8))
  rgba = images.decode(str(tmp_path / 'rgba.png'))
  assert rgba.alpha is not None and np.all(rgba.alpha == 128) and rgba.rgb.shape[2] == 3
  assert images.decode(str(tmp_path / 'palette.gif')).rgb.shape == (50, 60, 3)
  with pytest.raises(images.UnreadableImageError, match='notes.jpg'):
    images.decode(str(tmp_path / 'notes.jpg'))
  with pytest.raises(images.UnreadableImageError, match='truncated.png'):
    images.decode(str(tmp_path / 'truncated.png'))


def test_oversized_image_is_unreadable_not_a_crash(tmp_path, monkeypatch):
  Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(tmp_path / 'huge.png')
  # Pillow refuses images over twice MAX_IMAGE_PIXELS (a decompression bomb guard).
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  with pytest.raises(images.UnreadableImageError, match='huge.png: too large to decode'):
    images.decode(str(tmp_path / 'huge.png'))


def test_lossless_formats_decode_exactly(tmp_path):
  image = np.random.default_rng(3).integers(0, 256, (12, 9, 3)).astype(np.uint8)
  for name, kwargs in [('a.bmp', {}), ('a.webp', {'lossless': True}), ('a.tif', {}),
                       ('a.png', {})]:
    Image.fromarray(image).save(tmp_path / name, **kwargs)
    np.testing.assert_array_equal(images.read_rgb(str(tmp_path / name)), image)
  assert len(images.list_image_files(str(tmp_path))) == 4


def test_exif_orientation_is_applied(tmp_path):
  image = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
  exif = image.getexif()
  exif[0x0112] = 6  # Rotate 90 CW to display.
  image.save(tmp_path / 'rotated.jpg', exif=exif)
  assert images.read_rgb(str(tmp_path / 'rotated.jpg')).shape == (30, 10, 3)


def test_bad_files_are_skipped_with_reasons(tmp_path, caplog):
  _write_bad_folder(tmp_path)
  report = data_sources.LoadReport()
  with caplog.at_level(std_logging.WARNING):
    kept = data_sources.load_images(_data_config(f'folder:{tmp_path}'), 0, 1, report)
  # good, deep16 (40x40 >= 32), rgba, palette, nested/deep.jpg; not tiny, truncated, notes.
  assert len(kept) == 5 and report.used == 5
  assert [os.path.basename(p) for p in report.too_small] == ['tiny.png']
  assert sorted(os.path.basename(p) for p, _ in report.unreadable) == ['notes.jpg', 'truncated.png']
  text = caplog.text
  assert 'tiny.png' in text and 'smaller than the 32-pixel crop' in text
  assert 'notes.jpg' in text and 'truncated.png' in text


@pytest.mark.slow
def test_training_on_a_folder_of_bad_files_runs(tmp_path, tiny_config, caplog):
  from srgan_jax import train
  _write_bad_folder(tmp_path / 'data')
  tiny_config.data.source = f'folder:{tmp_path / "data"}'
  tiny_config.eval.sets = ()
  tiny_config.train.num_steps = 3
  with caplog.at_level(std_logging.WARNING):
    state = train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert int(state.step) == 3
  for name in ('tiny.png', 'notes.jpg', 'truncated.png'):
    assert name in caplog.text


def test_folder_without_usable_images_fails_at_start(tmp_path, monkeypatch):
  (tmp_path / 'a.jpg').write_text('not an image')
  with pytest.raises(ValueError, match='no usable training image.*1 unreadable'):
    data_sources.load_images(_data_config(f'folder:{tmp_path}'), 0, 1)
  with pytest.raises(FileNotFoundError, match='no such file or folder'):
    data_sources.load_images(_data_config(f'folder:{tmp_path}/missing'), 0, 1)
  with pytest.raises(FileNotFoundError, match='no such file or folder'):
    data_sources.load_images(_data_config(f'{tmp_path}/missing'), 0, 1)
  with pytest.raises(ValueError, match="unknown data source kind 'tfd:'"):
    data_sources.load_images(_data_config('tfd:div2k/bicubic_x4'), 0, 1)
  # Evaluation sets are listed by the same function, and read no TFDS.
  with pytest.raises(ValueError, match="kind 'tfds:'.*training also reads tfds:NAME"):
    data_sources.list_source('tfds:div2k')
  # A folder whose name looks like a kind is still a folder.
  (tmp_path / 'set:1').mkdir()
  (tmp_path / 'set:1' / 'a.jpg').write_text('not an image')
  monkeypatch.chdir(tmp_path)
  with pytest.raises(ValueError, match='no usable training image in shard 0/1 of set:1'):
    data_sources.load_images(_data_config('set:1'), 0, 1)


def _rows(images_list, **kwargs):
  return data_sources.sample_rows(data_sources.InMemoryImages(images_list), **kwargs)


def test_images_between_min_size_and_the_crop_are_mirrored_out_as_basicsr_pads():
  """crop_pad_size: a 40x50 image gives 48x48 crops of it reflected (reflect-101, as
  cv2.copyMakeBorder's BORDER_REFLECT_101 in BasicSR) at the bottom; a 20-pixel one is
  still replaced, being under min_size."""
  image = np.random.default_rng(0).integers(0, 256, (40, 50, 3)).astype(np.uint8)
  small = np.zeros((20, 20, 3), np.uint8)
  crops, _, substituted = _rows([image, small], seed=0, step=0, shard=0, rows=16, crop_size=48,
                                min_size=32)
  padded = np.concatenate([image, image[-2:-10:-1]], axis=0)  # Rows 40..47: 38, 37, .. 31.
  assert padded.shape == (48, 50, 3)
  for crop in crops:
    assert any(np.array_equal(crop, padded[:, left:left + 48]) for left in range(3))
  assert substituted and all('smaller than the 32-pixel crop' in s for s in substituted)


def test_batches_are_a_pure_function_of_seed_and_step():
  shard = [np.random.default_rng(i).integers(0, 256, (70, 90, 3)).astype(np.uint8) for i in range(3)]
  a = _rows(shard, seed=1, step=5, shard=0, rows=8, crop_size=32)
  b = _rows(shard, seed=1, step=5, shard=0, rows=8, crop_size=32)
  c = _rows(shard, seed=1, step=6, shard=0, rows=8, crop_size=32)
  d = _rows(shard, seed=2, step=5, shard=0, rows=8, crop_size=32)
  for x, y in zip(a[:2], b[:2]):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
  assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[1], d[1])
  assert a[0].shape == (8, 32, 32, 3) and a[0].dtype == np.uint8
  assert a[1].shape == (8,) and set(a[1]) <= set(range(8))
  assert a[2] == []  # Nothing replaced.


def _numpy_dihedral(crop, transform):
  rotated = np.rot90(crop, transform % 4)
  return rotated[:, ::-1] if transform >= 4 else rotated


def test_dihedral_on_the_device_is_numpy_rotation_then_flip():
  crops = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 3)).astype(np.uint8)
  transforms = np.arange(16, dtype=np.int32) % 8
  out = np.asarray(jax.jit(input_pipeline.dihedral)(crops, transforms))
  assert out.dtype == np.uint8
  for crop, transform, result in zip(crops, transforms, out):
    np.testing.assert_array_equal(result, _numpy_dihedral(crop, transform))


def test_crops_come_from_the_images_with_dihedral_transforms():
  image = np.random.default_rng(0).integers(0, 256, (40, 40, 3)).astype(np.uint8)
  crops, transforms, _ = _rows([image], seed=0, step=0, shard=0, rows=64, crop_size=40)
  assert all(np.array_equal(crop, image) for crop in crops)  # Cut as they are.
  rows = np.asarray(input_pipeline.dihedral(crops, transforms))
  variants = [np.rot90(image, k) for k in range(4)] + [np.rot90(image, k)[:, ::-1] for k in range(4)]
  seen = set()
  for row in rows:
    matches = [i for i, v in enumerate(variants) if np.array_equal(row, v)]
    assert matches, 'a crop is not a rotation/flip of the image'
    seen.add(matches[0])
  assert len(seen) == 8


def test_stream_depends_on_shards_not_processes():
  """Rows of process 1 of 2 equal rows B/2.. of a single process with num_shards=2."""
  data = _data_config('skimage:chelsea,coffee,rocket,astronaut', num_shards=2)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  one = input_pipeline.TrainBatches(data, 8, seed=3, sharding=sharding)
  assert one.shard_ids == [0, 1]
  whole = one.local_batch(7)
  second_shard = data_sources.sample_rows(one.shards[1], 3, 7, 1, 4, 32)
  np.testing.assert_array_equal(whole.crops[4:], second_shard[0])
  np.testing.assert_array_equal(whole.transforms[4:], second_shard[1])


def test_prefetching_iterator_yields_steps_in_order():
  data = _data_config('skimage:chelsea')
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  batches = input_pipeline.TrainBatches(data, 4, seed=0, sharding=sharding)
  seen = [(step, np.asarray(batch.hr)) for step, batch in batches.iterate(3, 7)]
  assert [s for s, _ in seen] == [3, 4, 5, 6]
  rows = batches.local_batch(4)
  expected = np.stack([_numpy_dihedral(c, t) for c, t in zip(rows.crops, rows.transforms)])
  np.testing.assert_array_equal(seen[1][1], expected)


@pytest.mark.parametrize('prefetch', [1, 3])
def test_iterator_raises_a_batch_error_at_its_step_and_stops_early_cleanly(prefetch):
  data = _data_config('skimage:chelsea', prefetch_batches=prefetch)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  batches = input_pipeline.TrainBatches(data, 4, seed=0, sharding=sharding)
  prepare = batches.rows

  def failing(step):
    if step == 5:
      raise OSError('disk gone at step 5')
    return prepare(step)

  threads_before = threading.active_count()
  batches.rows = failing
  seen = []
  with pytest.raises(OSError, match='disk gone at step 5'):
    for step, _ in batches.iterate(2, 9):
      seen.append(step)
  assert seen == [2, 3, 4]
  # A loop that stops early (a stop request) leaves no thread behind.
  batches.rows = prepare
  for step, _ in batches.iterate(0, 100):
    break
  for _ in range(50):  # The reading threads end once their current batch is done.
    if threading.active_count() <= threads_before:
      break
    threading.Event().wait(0.1)
  assert threading.active_count() <= threads_before


def test_num_shards_must_fit_batch_and_processes():
  data = _data_config('skimage:chelsea', num_shards=3)
  with pytest.raises(ValueError, match='num_shards=3'):
    data_sources.resolve_num_shards(data, 8, 1)


@pytest.fixture(scope='module')
def div2k_on_disk(tmp_path_factory):
  """DIV2K bicubic_x4 prepared by TFDS's own builder from local files laid out as its zips.

  Returns (data_dir, {name: HR image}) for the 5 train images; one is too small for a
  16-pixel crop.
  """
  pytest.importorskip('tensorflow_datasets')
  from benchmarks import common
  rng = np.random.default_rng(0)
  splits = {'train': {}, 'valid': {}}
  for split, names in (('train', ('0001', '0002', '0003', '0004', '0005')), ('valid', ('0801',))):
    for i, name in enumerate(names):
      side = 12 if name == '0003' else 32 + 4 * i
      splits[split][name] = rng.integers(0, 256, (side, side + 8, 3)).astype(np.uint8)
  data_dir = common.prepare_div2k_locally(str(tmp_path_factory.mktemp('div2k')), splits)
  return data_dir, splits['train']


def test_tfds_source_reads_each_shard_of_a_prepared_dataset(div2k_on_disk):
  data_dir, train_hr = div2k_on_disk
  data = _data_config('tfds:div2k/bicubic_x4', crop=16, tfds_data_dir=data_dir)
  shards = input_pipeline.open_shards(data, [0, 1], 2, data_sources.LoadReport())
  found = [image.tobytes() for k in (0, 1) for image in shards[k].read(range(len(shards[k])))]
  # Every train image once, bit for bit, split between the two shards, read at random.
  assert sorted(found) == sorted(hr.tobytes() for hr in train_hr.values())
  assert [len(shards[k]) for k in (0, 1)] == [3, 2]
  # 0003 is 12 pixels high: a row that draws it takes the next usable image of its shard.
  small = next((k, i) for k in (0, 1) for i in range(len(shards[k]))
               if shards[k].read([i])[0].shape[0] == 12)
  for step in range(40):
    crops, _, substituted = data_sources.sample_rows(shards[small[0]], 0, step, small[0], 4, 16)
    assert crops.shape == (4, 16, 16, 3) and crops.dtype == np.uint8
    if substituted:
      assert 'tfds:div2k/bicubic_x4[train]#' in substituted[0]
      assert 'smaller than the 16-pixel crop' in substituted[0]
      break
  else:
    raise AssertionError('no step drew the small image')


def test_tfds_missing_feature_is_named(div2k_on_disk):
  data = _data_config('tfds:div2k/bicubic_x4', crop=8, tfds_data_dir=div2k_on_disk[0],
                      tfds_image_key='highres')
  shards = input_pipeline.open_shards(data, [0], 1, data_sources.LoadReport())
  with pytest.raises(KeyError, match="no feature 'highres'; it has \\['hr', 'lr'\\]"):
    shards[0].read([0])


def test_tfds_offline_stops_in_seconds_naming_the_dataset_and_the_ways_on(tmp_path):
  """Not prepared and no network: a clear error at once, not minutes of retries."""
  pytest.importorskip('tensorflow_datasets')
  import time
  data = _data_config('tfds:div2k/bicubic_x4', tfds_data_dir=str(tmp_path / 'tfds'))
  started = time.monotonic()
  with pytest.raises(data_sources.TfdsUnavailableError) as error:
    input_pipeline.open_shards(data, [0], 1, data_sources.LoadReport())
  assert time.monotonic() - started < 30
  message = str(error.value)
  assert 'tfds:div2k/bicubic_x4 is not prepared' in message
  assert os.path.join(str(tmp_path / 'tfds'), 'downloads', 'manual') in message
  assert 'folder:PATH' in message and 'records:DIR' in message


def test_tfds_prepared_as_tfrecord_is_refused_with_the_fix(tmp_path, monkeypatch):
  tfds = pytest.importorskip('tensorflow_datasets')
  builder = tfds.builder('div2k/bicubic_x4', data_dir=str(tmp_path))
  monkeypatch.setattr(type(builder), 'is_prepared', lambda self: True)
  monkeypatch.setattr(type(builder.info), 'file_format',
                      property(lambda self: tfds.core.file_adapters.FileFormat.TFRECORD))
  with pytest.raises(data_sources.TfdsUnavailableError, match='prepared as tfrecord.*--file_format=array_record'):
    data_sources.prepare_tfds('div2k/bicubic_x4', 'train', str(tmp_path))


def _every_16_bit_value(channels, seed=0):
  """[256, 256, channels] uint16 in which every channel holds each of 0..65535 once."""
  rng = np.random.default_rng(seed)
  return np.stack([rng.permutation(65536).reshape(256, 256) for _ in range(channels)],
                  axis=-1).astype(np.uint16)


def test_sixteen_bit_png_is_read_at_full_range(tmp_path):
  """Pillow hands a 16-bit RGB PNG over cut to 8 bits (and 16-bit gray + alpha as RGBA):
  the reader keeps every value, and the 8-bit reading applies the documented rule."""
  from tests.conftest import write_png16
  for channels, name in ((3, 'rgb'), (4, 'rgba'), (1, 'gray'), (2, 'la')):
    samples = _every_16_bit_value(channels)
    write_png16(tmp_path / f'{name}.png', samples)
    deep = images.decode(str(tmp_path / f'{name}.png'), keep_16_bits=True)
    colour = samples[..., :3] if channels >= 3 else samples[..., :1].repeat(3, axis=2)
    assert deep.rgb.dtype == np.uint16 and deep.bit_depth == 16
    assert deep.is_gray == (channels < 3)
    np.testing.assert_array_equal(deep.rgb, colour)
    if channels in (2, 4):
      np.testing.assert_array_equal(deep.alpha, samples[..., -1])
    else:
      assert deep.alpha is None
    eight = images.decode(str(tmp_path / f'{name}.png'))
    assert eight.rgb.dtype == np.uint8 and eight.bit_depth == 16
    np.testing.assert_array_equal(eight.rgb, np.round(colour * (255 / 65535)).astype(np.uint8))
  whole = (tmp_path / 'rgb.png').read_bytes()
  (tmp_path / 'cut.png').write_bytes(whole[:len(whole) // 2])
  with pytest.raises(images.UnreadableImageError, match=r'cut.png: cannot decode \(PngError'):
    images.decode(str(tmp_path / 'cut.png'), keep_16_bits=True)


def test_sixteen_bit_tiff_is_read_at_full_range_and_oriented(tmp_path):
  import tifffile
  samples = _every_16_bit_value(3, seed=1)
  tifffile.imwrite(tmp_path / 'contig.tif', samples, photometric='rgb', compression='zlib')
  tifffile.imwrite(tmp_path / 'planar.tif', np.moveaxis(samples, -1, 0), photometric='rgb',
                   planarconfig='separate')
  # EXIF/TIFF orientation 6: shown turned 90 degrees clockwise.
  tifffile.imwrite(tmp_path / 'turned.tif', samples, photometric='rgb',
                   extratags=[(274, 'H', 1, 6, True)])
  for name in ('contig.tif', 'planar.tif'):
    np.testing.assert_array_equal(
        images.decode(str(tmp_path / name), keep_16_bits=True).rgb, samples)
  np.testing.assert_array_equal(images.decode(str(tmp_path / 'turned.tif'), keep_16_bits=True).rgb,
                                np.rot90(samples, -1))
  whole = (tmp_path / 'contig.tif').read_bytes()
  (tmp_path / 'cut.tif').write_bytes(whole[:len(whole) // 2])
  with pytest.raises(images.UnreadableImageError, match='cut.tif: cannot decode'):
    images.decode(str(tmp_path / 'cut.tif'), keep_16_bits=True)


def test_orientations_match_pillow(tmp_path):
  """The 16-bit path turns the array itself; each EXIF orientation must do what Pillow's
  exif_transpose does to an 8-bit image."""
  from PIL import ImageOps
  array = np.random.default_rng(2).integers(0, 256, (5, 7, 3)).astype(np.uint8)
  for orientation in range(1, 9):
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / 'o.png', exif=exif)
    with Image.open(tmp_path / 'o.png') as saved:
      expected = np.asarray(ImageOps.exif_transpose(saved))
    np.testing.assert_array_equal(images._orient(array, orientation), expected)


def test_save_png_writes_8_and_16_bits_exactly(tmp_path):
  from tests.conftest import png_header
  for dtype, depth in ((np.uint8, 8), (np.uint16, 16)):
    for shape, colour_type in (((9, 11), 0), ((9, 11, 2), 4), ((9, 11, 3), 2), ((9, 11, 4), 6)):
      array = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
      path = str(tmp_path / f'{depth}_{len(shape)}_{shape[-1]}.png')
      images.save_png(path, array)
      assert png_header(path) == (depth, colour_type)
      samples = array.reshape(shape[:2] + (-1,))
      decoded = images.decode(path, keep_16_bits=True)
      np.testing.assert_array_equal(decoded.rgb, samples[..., :3] if samples.shape[2] >= 3
                                    else samples[..., :1].repeat(3, axis=2))
  with pytest.raises(ValueError, match='uint8 or uint16'):
    images.save_png(str(tmp_path / 'f.png'), np.zeros((2, 2), np.float32))
  assert not [f for f in os.listdir(tmp_path) if '.tmp-' in f]  # No temporary file is left.
