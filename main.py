"""Trains SRResNet / SRGAN: `python main.py --config=configs/srgan.py --workdir=runs/srgan`.

Override any config field on the command line, e.g. `--config.train.batch_size=32`; a
misspelt field stops the run with its name. Rerunning with the same workdir resumes.

Multi-process (GPU clusters, TPU pods): run the same command on every process. On TPU
pods and SLURM, `jax.distributed.initialize()` finds its peers by itself
(--multiprocess=auto); elsewhere pass --coordinator_address, --num_processes and
--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file.', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run folder (checkpoints, metrics, config): a path every process sees.')
_MULTIPROCESS = flags.DEFINE_enum(
    'multiprocess', 'auto', ['auto', 'on', 'off'],
    'auto: initialise jax.distributed when a coordinator is given or a cluster is detected.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', os.environ.get('JAX_COORDINATOR_ADDRESS'), 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', int(os.environ.get('JAX_NUM_PROCESSES', 0)) or None, 'Process count.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', int(os.environ['JAX_PROCESS_ID']) if 'JAX_PROCESS_ID' in os.environ else None,
    'This process index.')
flags.mark_flags_as_required(['config', 'workdir'])


def _cluster_detected() -> bool:
  """True on environments jax.distributed.initialize() configures itself (TPU pods, SLURM, MPI)."""
  return any(v in os.environ for v in ('TPU_WORKER_HOSTNAMES', 'SLURM_JOB_ID',
                                       'OMPI_COMM_WORLD_SIZE', 'MEGASCALE_COORDINATOR_ADDRESS'))


class _QuietLibraries:
  """Drops INFO records of Orbax (it logs every save step by step); warnings pass."""

  def filter(self, record):
    return record.levelno > logging.converter.STANDARD_INFO or '/orbax/' not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  import jax  # After flags: XLA_FLAGS and platform choices come from the environment.

  multi = _MULTIPROCESS.value == 'on' or (
      _MULTIPROCESS.value == 'auto' and (_COORDINATOR.value or _cluster_detected()))
  if multi:
    kwargs = {}
    if _COORDINATOR.value:
      kwargs = dict(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                    process_id=_PROCESS_ID.value)
    jax.distributed.initialize(**kwargs)
  logging.info('JAX process %d of %d, %d local / %d global devices (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(),
               jax.default_backend())

  from srgan_jax import train
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
