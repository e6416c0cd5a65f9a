"""Two local processes (2 CPU devices each) on 127.0.0.1 against one process with 4 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, run_python

# The packed state, as multi-host runs on GPUs and TPUs pass it (the CPU passes the pytree).
MAIN = 'tests/packed_main.py'
COMMON = ['--config=configs/test.py', '--config.eval.sets=()', '--config.data.num_shards=2']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _metrics(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]


@pytest.mark.slow
def test_two_processes_match_one_process_and_restore_on_one_device(tmp_path):
  """On prepared records, read at random by Grain workers in each process."""
  from PIL import Image
  from srgan_jax import prepare
  rng = np.random.default_rng(0)
  (tmp_path / 'photos').mkdir()
  for i in range(5):
    Image.fromarray(rng.integers(0, 256, (60 + 8 * i, 90, 3)).astype(np.uint8)).save(
        tmp_path / 'photos' / f'{i}.png')
  assert prepare.main([f'--source=folder:{tmp_path / "photos"}', f'--output={tmp_path / "rec"}',
                       '--crop=48', '--step=24', '--min_size=32', '--processes=1']) == 0
  common = [*COMMON, f'--config.data.source=records:{tmp_path / "rec"}',
            '--config.data.num_workers=1']
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=REPO,
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  procs = [subprocess.Popen(
      [sys.executable, MAIN, *common, f'--workdir={tmp_path}/multi',
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  try:
    outputs = [p.communicate(timeout=300)[0] for p in procs]
  finally:
    for p in procs:
      p.kill()
  assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
  assert all('the state travels packed' in output for output in outputs)
  # Each process loaded its own shard of the data.
  assert 'for shards [0] of 2' in outputs[0] and 'for shards [1] of 2' in outputs[1]

  single = run_python([MAIN, *common, f'--workdir={tmp_path}/single'],
                      {'XLA_FLAGS': '--xla_force_host_platform_device_count=4'})
  assert single.returncode == 0, single.stderr[-3000:]
  multi, one = _metrics(tmp_path / 'multi'), _metrics(tmp_path / 'single')
  assert [m['step'] for m in multi] == [m['step'] for m in one] == [2, 4, 6]
  for a, b in zip(multi, one):
    for key in ('g_loss', 'content_loss', 'd_loss', 'd_real', 'd_fake'):
      if key in b:
        assert a[key] == pytest.approx(b[key], rel=1e-5), (a['step'], key)

  # Written once (one set of step folders), restored on a single device.
  assert sorted(os.listdir(tmp_path / 'multi' / 'checkpoints')) == ['3', '6']
  resumed = run_python([MAIN, *common, f'--workdir={tmp_path}/multi',
                        '--config.train.num_steps=8'])
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'at step 6' in resumed.stderr
  assert _metrics(tmp_path / 'multi')[-1]['step'] == 8
