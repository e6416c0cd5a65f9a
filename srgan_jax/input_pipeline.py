"""Training batches: this process's rows of each step, through Grain, onto the devices.

The rows come from `data_sources` (which images, crops, rotations: a pure function of
(seed, step, data shard), so there is no iterator state: a run resumed at step t sees
exactly the batches an uninterrupted run sees). Grain runs that function over the steps
ahead of the loop: `MapDataset.range(start, stop).map(ProcessRows)`, in threads, and for
sources that decode per use (records, TFDS) in `config.data.num_workers` worker processes.
The host cuts the crops and draws each one's rotation and flip; the device applies them
(`dihedral`), since rotating 3-byte pixels in numpy cost the host six times the crop.

Sharding: the data is cut into `num_shards` shards (image or record i goes to shard
i mod S); rows [k*B/S, (k+1)*B/S) of the global batch B are drawn from shard k. Process p
owns a contiguous block of rows and reads only the shards those rows use. Because the data
stream depends on S and not on the process count, 1 process and 2 processes with the same
S train on identical batches.
"""

import contextlib
from typing import Iterator, NamedTuple, Optional

import grain
import jax
import jax.numpy as jnp
from absl import flags, logging

from srgan_jax import data_sources, records


def dihedral(crops: jax.Array, transforms: jax.Array) -> jax.Array:
  """Rotates and flips each crop: [N, S, S, C], [N] int in [0, 8) -> [N, S, S, C].

  Transform t is (t mod 4) quarter turns counter-clockwise (`np.rot90`), then, for
  t >= 4, a left-right flip. One elementwise pass that picks among the 8 variants.
  """
  out = crops
  for t in range(1, data_sources.NUM_TRANSFORMS):
    variant = jnp.rot90(crops, t % 4, axes=(1, 2))
    if t >= 4:
      variant = variant[:, :, ::-1]
    out = jnp.where((transforms == t)[:, None, None, None], variant, out)
  return out


class Batch(NamedTuple):
  """One step's global batch, sharded along its first axis."""
  hr: jax.Array  # [B, crop, crop, 3] uint8 (crop: config.degradation.crop_pad_size if set)
  kernels: Optional[jax.Array] = None  # [B, 3, 21, 21] float32 (real-world degradation)


class TrainBatches:
  """This process's rows of each step's global batch, as globally sharded `jax.Array`s.

  Args:
    data_config: `config.data`.
    global_batch: `config.train.batch_size` (all processes together).
    seed: data seed.
    sharding: sharding of the global [B, crop, crop, 3] uint8 batch.
    degradation_config: `config.degradation`; with kind 'realesrgan' each row also carries
      its blur kernels (`Batch.kernels`), and the crops are its crop_pad_size when set.
  """

  def __init__(self, data_config, global_batch: int, seed: int, sharding,
               degradation_config=None):
    real_world = degradation_config is not None and degradation_config.kind == 'realesrgan'
    # The real-world degradation may work on larger crops (images between the two sizes
    # padded to it); the step then cuts the training crop.
    self.crop_size = ((real_world and degradation_config.crop_pad_size)
                      or data_config.hr_crop_size)
    self.seed = seed
    self.global_batch = global_batch
    self.sharding = sharding
    self.prefetch = max(1, data_config.prefetch_batches)
    process_count, process = jax.process_count(), jax.process_index()
    self.num_shards = data_sources.resolve_num_shards(data_config, global_batch, process_count)
    self.rows_per_shard = global_batch // self.num_shards
    per_process = self.num_shards // process_count
    self.shard_ids = list(range(process * per_process, (process + 1) * per_process))
    self._dihedral = jax.jit(dihedral, out_shardings=sharding)
    self.report = data_sources.LoadReport()
    self.shards = open_shards(data_config, self.shard_ids, self.num_shards, self.report)
    # In-memory images would be copied into every worker: threads share them instead.
    in_memory = isinstance(self.shards[self.shard_ids[0]], data_sources.InMemoryImages)
    self.num_workers = 0 if in_memory else data_config.num_workers
    self.rows = data_sources.ProcessRows(
        self.shards, seed, self.rows_per_shard, self.crop_size, data_config.hr_crop_size,
        degradation_config.to_dict() if real_world else None)
    self._substituted = []  # 'NAME: reason' of each image replaced since the last take.

  def take_substituted(self) -> list[str]:
    """'NAME: reason' of each image replaced since the last call, in step order (the loop
    logs them; kept only until then, so a long run's memory does not grow with them)."""
    taken, self._substituted = self._substituted, []
    return taken

  def local_batch(self, step: int) -> data_sources.HostRows:
    """This process's rows for `step` (see `data_sources.sample_rows`)."""
    return self.rows(step)

  def to_global(self, rows: data_sources.HostRows) -> Batch:
    """The global batch of `rows`' step, sharded; HR rotated and flipped."""
    crops, transforms = (jax.make_array_from_process_local_data(self.sharding, x)
                         for x in (rows.crops, rows.transforms))
    kernels = None if rows.kernels is None else jax.make_array_from_process_local_data(
        self.sharding, rows.kernels)
    return Batch(self._dihedral(crops, transforms), kernels)

  def host_rows(self, start_step: int, num_steps: int) -> Iterator[data_sources.HostRows]:
    """This process's `HostRows` for steps start_step .. num_steps - 1, in order.

    `config.data.prefetch_batches` steps are prepared ahead by as many threads (in each
    worker process, if any), so the input keeps up with a step that is faster than one
    thread's batches; host memory holds those batches, whatever the dataset's size. An
    error in preparing a batch is raised here, at that batch's step.
    """
    steps = grain.MapDataset.range(start_step, num_steps).map(self.rows)
    dataset = steps.to_iter_dataset(grain.ReadOptions(num_threads=self.prefetch,
                                                      prefetch_buffer_size=self.prefetch))
    if self.num_workers:
      if not flags.FLAGS.is_parsed():
        # Grain's worker start reads its absl flags (google/grain#1355), which only absl.app
        # parses: in a script or a notebook, their defaults stand.
        flags.FLAGS.mark_as_parsed()
      dataset = dataset.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=self.num_workers, per_worker_buffer_size=1),
          worker_init_fn=data_sources.init_worker)
    iterator = iter(dataset)
    try:
      yield from iterator
    finally:  # A stopped loop leaves no thread or worker process behind.
      iterator.close()

  def iterate(self, start_step: int, num_steps: int) -> Iterator[tuple[int, Batch]]:
    """Yields (step, global batch) for steps start_step .. num_steps - 1 (see `host_rows`)."""
    with contextlib.closing(self.host_rows(start_step, num_steps)) as host_rows:
      for rows in host_rows:
        for what in rows.substituted:
          logging.warning('step %d: replaced an unusable training image by the next usable '
                          'one of its shard: %s', rows.step, what)
        self._substituted.extend(rows.substituted)
        yield rows.step, self.to_global(rows)


def open_shards(data_config, shard_ids, num_shards: int,
                report: data_sources.LoadReport) -> dict:
  """data shard -> `data_sources.ImageSource` for each of `shard_ids`, checked.

  Everything that can be wrong with the data (a missing or truncated shard, a dataset
  that is not prepared, a folder too large for memory) is raised here, before the step
  compiles.
  """
  source = data_config.source
  if source.startswith('records:'):
    prepared = records.open_prepared(source[len('records:'):])
    if data_config.hr_crop_size > prepared.manifest['min_size']:
      raise records.RecordsError(
          f'{source} holds sub-images from {prepared.manifest["min_size"]} pixels up '
          f'(prepared with --min_size={prepared.manifest["min_size"]}); '
          f'config.data.hr_crop_size={data_config.hr_crop_size} needs larger ones: prepare '
          f'again with --min_size={data_config.hr_crop_size}')
    logging.info('data %s: %s; read at random for shards %s of %d', source,
                 records.describe(prepared.manifest), list(shard_ids), num_shards)
    return {k: data_sources.RecordImages(prepared, k, num_shards) for k in shard_ids}
  if source.startswith('tfds:'):
    name = source[len('tfds:'):]
    length = data_sources.prepare_tfds(name, data_config.tfds_split, data_config.tfds_data_dir)
    logging.info('data %s: %d examples in split %s, read through tfds.data_source for '
                 'shards %s of %d', source, length, data_config.tfds_split, list(shard_ids),
                 num_shards)
    return {k: data_sources.TfdsImages(name, data_config.tfds_split, data_config.tfds_data_dir,
                                       data_config.tfds_image_key, k, num_shards, length)
            for k in shard_ids}
  shards = {k: data_sources.InMemoryImages(
      data_sources.load_images(data_config, k, num_shards, report)) for k in shard_ids}
  logging.info(
      'data %s: %d images in memory (%.1f MiB) for shards %s of %d; skipped %d smaller '
      'than %d px, %d unreadable', source, report.used, report.bytes / 2**20, list(shard_ids),
      num_shards, len(report.too_small), data_config.hr_crop_size, len(report.unreadable))
  return shards
