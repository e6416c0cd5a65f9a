"""Prepared records: prepare (cutting, resuming, parts), the checks at start-up, training."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from srgan_jax import data_sources, images, input_pipeline, prepare, records
from tests.conftest import (REPO, assert_all_end_within, descendants, killed_training_run,
                            run_python, train_straight_and_resumed)


def _photos(root, count=6, seed=0, sizes=((70, 90), (64, 64), (50, 130))):
  """A folder of PNG photos of several sizes, one too small and one unreadable."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(count):
    height, width = sizes[i % len(sizes)]
    Image.fromarray(rng.integers(0, 256, (height, width, 3)).astype(np.uint8)).save(
        root / f'{i:03d}.png')
  Image.fromarray(rng.integers(0, 256, (20, 40, 3)).astype(np.uint8)).save(root / 'small.png')
  (root / 'broken.png').write_bytes(b'\x89PNG not really')
  return root


def _settings(source, **overrides):
  settings = {'source': source, 'crop': 48, 'step': 24, 'min_size': 32, 'encoding': 'qoi',
              'images_per_shard': 2, 'num_parts': 1, 'tfds_split': 'train',
              'tfds_image_key': 'hr', 'tfds_data_dir': ''}
  settings.update(overrides)
  return settings


def _file_digests(folder):
  return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
          for name in sorted(os.listdir(folder))}


def test_subimages_follow_basicsr_extract_subimages():
  # BasicSR: starts every `step` up to size - crop, plus size - crop when the last one
  # does not reach the edge; a side shorter than the crop is kept whole.
  assert prepare.subimage_starts(1000, 480, 240) == [0, 240, 480, 520]
  assert prepare.subimage_starts(960, 480, 240) == [0, 240, 480]
  assert prepare.subimage_starts(481, 480, 240) == [0, 1]
  assert prepare.subimage_starts(300, 480, 240) == [0]
  image = np.arange(70 * 90 * 3, dtype=np.uint32).reshape(70, 90, 3).astype(np.uint8)
  subs = prepare.cut_subimages(image, 48, 24)
  assert len(subs) == 2 * 3  # Rows start at 0, 22; columns at 0, 24, 42.
  np.testing.assert_array_equal(subs[-1], image[22:70, 42:90])


@pytest.mark.parametrize('encoding', records.ENCODINGS)
def test_every_encoding_round_trips_exactly(encoding):
  image = np.random.default_rng(1).integers(0, 256, (37, 53, 3)).astype(np.uint8)
  np.testing.assert_array_equal(records.decode(records.encode(image, encoding), encoding), image)
  with pytest.raises(records.UndecodableRecordError):
    records.decode(b'\x00\x01garbage', encoding)


def test_prepare_writes_every_subimage_once_and_names_what_it_skipped(tmp_path):
  source = _photos(tmp_path / 'photos')
  manifest = prepare.prepare(_settings(f'folder:{source}'), str(tmp_path / 'rec'), progress=False)
  assert manifest['images'] == 8 and manifest['used_images'] == 6
  skipped = {os.path.basename(s['image']): s['reason'] for s in manifest['skipped']}
  assert set(skipped) == {'small.png', 'broken.png'}
  assert 'smaller than --min_size=32' in skipped['small.png']
  assert 'cannot decode' in skipped['broken.png']
  prepared = records.open_prepared(str(tmp_path / 'rec'), verify_checksums=True)
  expected = [sub for name in sorted(os.listdir(source)) if name[:3].isdigit()
              for sub in prepare.cut_subimages(images.read_rgb(str(source / name)), 48, 24)]
  assert prepared.num_records == manifest['records'] == len(expected)
  stored = data_sources.RecordImages(prepared, 0, 1)
  for got, want in zip(stored.read(range(len(stored))), expected):
    np.testing.assert_array_equal(got, want)
  # Shards are written with group_size:1, the option random reads need, uncompressed.
  from array_record.python import array_record_module
  reader = array_record_module.ArrayRecordReader(prepared.paths[0])
  assert 'group_size:1,' in reader.writer_options_string() and 'uncompressed' in reader.writer_options_string()
  reader.close()


@pytest.mark.slow
def test_a_killed_prepare_finishes_on_rerun_with_the_files_of_an_uninterrupted_one(tmp_path):
  source = _photos(tmp_path / 'photos', count=24, sizes=((200, 260), (180, 150)))
  args = ['-m', 'srgan_jax.prepare', f'--source=folder:{source}', '--crop=48', '--step=16',
          '--min_size=32', '--images_per_shard=1', '--processes=1']
  whole = run_python([*args, f'--output={tmp_path / "whole"}'])
  assert whole.returncode == 0, whole.stderr[-2000:]

  killed = tmp_path / 'killed'
  env = dict(os.environ, PYTHONPATH=REPO)
  # Two shard writers: a killed prepare must leave no process behind (`child_processes`).
  process = subprocess.Popen([sys.executable, *args, f'--output={killed}', '--processes=2'],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 120
  while time.monotonic() < deadline and len(list(killed.glob('part00000-*.json'))) < 4:
    time.sleep(0.02)
  children = descendants(process.pid)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not (killed / records.MANIFEST).exists(), 'the run finished before it was killed'
  assert len(children) >= 2, f'expected two shard writers below prepare, found {children}'
  assert_all_end_within(children, 10)
  # What a kill can leave: a shard cut short under its temporary name.
  (killed / 'part00000-00020.array_record.partial').write_bytes(b'half a shard')
  with pytest.raises(records.RecordsError, match='manifest.json is missing'):
    records.open_prepared(str(killed))

  rerun = run_python([*args, f'--output={killed}'])
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  # The cut shard was written again whole, under its own name: nothing partial is left.
  assert _file_digests(killed) == _file_digests(tmp_path / 'whole')


def test_other_arguments_on_a_prepared_folder_are_refused(tmp_path):
  source = _photos(tmp_path / 'photos', count=2)
  output = str(tmp_path / 'rec')
  prepare.prepare(_settings(f'folder:{source}'), output, progress=False)
  with pytest.raises(ValueError, match="encoding: 'qoi' then, 'png' now"):
    prepare.prepare(_settings(f'folder:{source}', encoding='png'), output, progress=False)


def test_parts_written_apart_merge_into_the_whole(tmp_path):
  source = _photos(tmp_path / 'photos', count=7)
  whole = prepare.prepare(_settings(f'folder:{source}'), str(tmp_path / 'whole'), progress=False)
  output = str(tmp_path / 'parts')
  settings = _settings(f'folder:{source}', num_parts=2)
  assert prepare.prepare(settings, output, part=1, progress=False) is None  # Part 0 not done.
  assert prepare.main(['--merge', f'--output={output}']) == 2  # Names the missing part.
  merged = prepare.prepare(settings, output, part=0, processes=2, progress=False)
  assert merged['records'] == whole['records'] and merged['images'] == whole['images']
  assert sorted(s['image'] for s in merged['skipped']) == sorted(s['image'] for s in whole['skipped'])

  def payloads(folder):
    prepared = records.open_prepared(folder, verify_checksums=True)
    stored = data_sources.RecordImages(prepared, 0, 1)
    return sorted(image.tobytes() for image in stored.read(range(len(stored))))

  assert payloads(output) == payloads(str(tmp_path / 'whole'))


@pytest.fixture
def prepared_folder(tmp_path):
  source = _photos(tmp_path / 'photos', count=6)
  output = tmp_path / 'rec'
  prepare.prepare(_settings(f'folder:{source}'), str(output), progress=False)
  return output


def _manifest(folder):
  return json.loads((folder / records.MANIFEST).read_text())


def test_damaged_shards_stop_the_run_at_start_up_naming_the_file(prepared_folder, tiny_config,
                                                                tmp_path):
  from srgan_jax import train
  first = _manifest(prepared_folder)['shards'][0]['file']
  path = prepared_folder / first
  whole = path.read_bytes()
  tiny_config.data.source = f'records:{prepared_folder}'
  tiny_config.eval.sets = ()
  for damage, message in (
      (lambda: path.write_bytes(whole[:len(whole) // 2]), 'truncated or replaced'),
      (lambda: path.unlink(), 'is missing'),
      (lambda: path.write_bytes(b'\x00' * len(whole)), 'not a readable ArrayRecord file')):
    damage()
    with pytest.raises(records.RecordsError, match=f'{first}.*{message}'):
      train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
    assert not (tmp_path / 'run' / 'checkpoints').exists() or not os.listdir(
        tmp_path / 'run' / 'checkpoints')
  # Another shard's bytes (same size): only the checksum tells, and names the shard.
  path.write_bytes(whole[:-1] + bytes([whole[-1] ^ 1]))
  assert prepare.main(['--verify', f'--output={prepared_folder}']) == 2
  with pytest.raises(records.RecordsError, match=f'{first}: sha256 .* does not match'):
    records.open_prepared(str(prepared_folder), verify_checksums=True)
  (prepared_folder / records.MANIFEST).write_text('{"format": "something else"}')
  with pytest.raises(records.RecordsError, match='not a manifest of srgan_jax records'):
    records.open_prepared(str(prepared_folder))


def _corrupt_record(folder, shard_position, record):
  """Rewrites one shard with record `record` replaced by bytes that do not decode."""
  manifest = _manifest(folder)
  entry = manifest['shards'][shard_position]
  path = str(folder / entry['file'])
  reader = records.array_record_module.ArrayRecordReader(path)
  payloads = list(reader.read_all())
  reader.close()
  payloads[record] = b'not an image'
  manifest['shards'][shard_position] = records.write_shard(path, payloads)
  records.write_json(str(folder / records.MANIFEST), manifest)


@pytest.mark.slow
def test_an_undecodable_record_is_replaced_the_same_way_on_every_run(prepared_folder, tiny_config,
                                                                     tmp_path):
  from srgan_jax import train
  _corrupt_record(prepared_folder, 0, 1)
  prepared = records.open_prepared(str(prepared_folder))
  shard = data_sources.RecordImages(prepared, 0, 1)
  bad_name = prepared.locate(1)
  # Every record is drawn by some step of a 6-step run: find one that draws record 1.
  tiny_config.data.source = f'records:{prepared_folder}'
  tiny_config.data.num_shards = 1
  tiny_config.eval.sets = ()
  drawn = [step for step in range(40) if data_sources.sample_rows(shard, 0, step, 0, 8, 32)[2]]
  assert drawn, 'no step drew the bad record'
  tiny_config.train.num_steps = drawn[0] + 1
  tiny_config.train.log_every_steps = 1
  tiny_config.data.num_workers = 1
  train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  lines = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  noted = [line for line in lines if line['substituted_images']]
  assert noted and noted[0]['step'] == drawn[0] + 1
  assert all(bad_name in name and 'does not decode' in name for name in noted[0]['substituted'])
  # The replacement is a function of the step: the same rows, however often it is read.
  again = data_sources.sample_rows(data_sources.RecordImages(prepared, 0, 1), 0, drawn[0], 0, 8, 32)
  first = data_sources.sample_rows(shard, 0, drawn[0], 0, 8, 32)
  np.testing.assert_array_equal(again[0], first[0])


def test_nothing_is_decoded_at_start_up(prepared_folder, tiny_config):
  """Start-up reads the manifest and the shards' footers only, whatever the data's size."""
  manifest = _manifest(prepared_folder)
  for position in range(len(manifest['shards'])):
    for record in range(manifest['shards'][position]['records']):
      _corrupt_record(prepared_folder, position, record)
  data = tiny_config.data
  data.source = f'records:{prepared_folder}'
  batches = input_pipeline.TrainBatches(data, 8, 0, jax.sharding.SingleDeviceSharding(
      jax.devices()[0]))
  with pytest.raises(records.RecordsError, match='no image of the shard .* is usable'):
    batches.local_batch(0)


def test_records_stream_depends_on_shards_not_processes(prepared_folder, tiny_config):
  data = tiny_config.data
  data.source = f'records:{prepared_folder}'
  data.num_shards = 2
  one = input_pipeline.TrainBatches(data, 8, 3, jax.sharding.SingleDeviceSharding(jax.devices()[0]))
  prepared = records.open_prepared(str(prepared_folder))
  # What process 1 of 2 would read: data shard 1 alone.
  second = data_sources.sample_rows(data_sources.RecordImages(prepared, 1, 2), 3, 7, 1, 4, 32)
  whole = one.local_batch(7)
  np.testing.assert_array_equal(whole.crops[4:], second[0])
  np.testing.assert_array_equal(whole.transforms[4:], second[1])


@pytest.mark.slow
def test_training_from_records_resumes_to_the_same_parameters(prepared_folder, tiny_config,
                                                              tmp_path):
  tiny_config.data.source = f'records:{prepared_folder}'
  tiny_config.eval.sets = ()
  straight, resumed = train_straight_and_resumed(tiny_config, str(tmp_path), stop_at=3)
  for a, b in zip(jax.tree.leaves(straight.g_params), jax.tree.leaves(resumed.g_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_a_killed_trainer_leaves_no_worker_or_tracker_running(prepared_folder, tmp_path):
  """SIGKILL runs no handler of the trainer's: its Grain workers (and multiprocessing's
  resource tracker they share) must end by themselves (`child_processes`)."""
  children = {}
  killed_training_run(tmp_path / 'run', [f'--config.data.source=records:{prepared_folder}',
                                         '--config.data.num_workers=2'],
                      log_lines=3, children=children)
  assert len(children) >= 2, f'expected two Grain workers below the trainer, found {children}'
  assert_all_end_within(children, 10)


def test_a_worker_reads_records_without_starting_an_accelerator_backend(prepared_folder,
                                                                        tiny_config, tmp_path):
  """Grain workers unpickle `ProcessRows` and call it: that must not bring JAX up on a device."""
  data = tiny_config.data
  data.source = f'records:{prepared_folder}'
  batches = input_pipeline.TrainBatches(data, 8, 0, jax.sharding.SingleDeviceSharding(
      jax.devices()[0]))
  (tmp_path / 'rows.pkl').write_bytes(pickle.dumps(batches.rows))
  expected = batches.local_batch(2)
  np.save(tmp_path / 'expected.npy', expected.crops)
  script = f'''
import pickle, sys
import numpy as np
from srgan_jax import data_sources
data_sources.init_worker(0, 1)
rows = pickle.load(open({str(tmp_path / 'rows.pkl')!r}, 'rb'))
got = rows(2)
from jax._src import xla_bridge
import jax
assert not xla_bridge.backends_are_initialized(), 'a backend started'
assert jax.config.jax_platforms == 'cpu', jax.config.jax_platforms
np.testing.assert_array_equal(got.crops, np.load({str(tmp_path / 'expected.npy')!r}))
print('ok')
'''
  result = run_python(['-c', script])
  assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-2000:]


def test_a_folder_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch,
                                                                  tiny_config):
  source = _photos(tmp_path / 'photos', count=3)
  data = tiny_config.data
  data.source = f'folder:{source}'
  data.cache_max_bytes = 10_000

  def no_decoding(path):
    raise AssertionError(f'{path} was decoded')

  monkeypatch.setattr(images, 'read_rgb', no_decoding)
  with pytest.raises(MemoryError, match='would take .* GiB decoded.*srgan_jax.prepare'):
    data_sources.load_images(data, 0, 1)


def test_a_source_with_no_usable_image_is_an_error(tmp_path, capsys):
  (tmp_path / 'photos').mkdir()
  Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / 'photos' / 'small.png')
  assert prepare.main([f'--source=folder:{tmp_path / "photos"}',
                       f'--output={tmp_path / "rec"}', '--processes=1']) == 2
  assert 'no usable image' in capsys.readouterr().err
  assert prepare.main(['--source=tfd:x', f'--output={tmp_path / "rec2"}']) == 2


def test_a_damaged_chunk_is_replaced_not_fatal(prepared_folder):
  """A shard altered in place keeps its size and passes start-up; the reader's hash check
  catches the damaged record when it is read, and that record alone is replaced."""
  first = _manifest(prepared_folder)['shards'][0]['file']
  damaged = bytearray((prepared_folder / first).read_bytes())
  damaged[len(damaged) // 3] ^= 0xFF
  (prepared_folder / first).write_bytes(bytes(damaged))
  prepared = records.open_prepared(str(prepared_folder))
  shard = data_sources.RecordImages(prepared, 0, 1)
  read = shard.read(list(range(len(shard))))
  unreadable = [i for i, image in enumerate(read) if isinstance(image, str)]
  assert len(unreadable) == 1 and 'cannot be read' in read[unreadable[0]]
  steps = [data_sources.sample_rows(shard, 0, step, 0, 8, 32) for step in range(60)]
  named = [name for _, _, substituted in steps for name in substituted]
  assert named and all(prepared.locate(unreadable[0]) in name for name in named)
  assert prepare.main(['--verify', f'--output={prepared_folder}']) == 2
