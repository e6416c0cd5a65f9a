"""Shared fixtures: the tiny test config, the shared benchmark data, subprocess runs."""

import os
import subprocess
import sys

import pytest

# Keras (the VGG19 reference) must use JAX, whatever else is installed; set before any import.
os.environ.setdefault("KERAS_BACKEND", "jax")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data')


def require_shared_data(*parts) -> str:
  """Path under ../shared/data; skips when it is absent, but fails under CI=true."""
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    message = f'{path} is absent (the public benchmark images live beside the repository)'
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message)
    pytest.skip(message)
  return path


@pytest.fixture
def tiny_config():
  from configs import test as test_config
  return test_config.get_config()


def train_straight_and_resumed(config, folder, stop_at: int):
  """Final states of a run to config.train.num_steps, and of one stopped at `stop_at` and
  resumed with the same command: (straight, resumed); their run folders are in `folder`."""
  from srgan_jax import train
  num_steps = config.train.num_steps
  straight = train.train_and_evaluate(config, os.path.join(folder, 'straight'))
  config.train.num_steps = stop_at
  train.train_and_evaluate(config, os.path.join(folder, 'resumed'))
  config.train.num_steps = num_steps
  resumed = train.train_and_evaluate(config, os.path.join(folder, 'resumed'))
  assert int(resumed.step) == num_steps
  return straight, resumed


def run_python(args, env_extra=None, timeout=600, cwd=REPO):
  """Runs `python args...` in a fresh interpreter (for XLA_FLAGS, multi-process, CLIs)."""
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env.update(env_extra or {})
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def killed_training_run(workdir, extra_args=(), log_lines: int = 6, timeout: float = 300) -> list:
  """Starts main.py on configs/test.py (checkpoints every step) in `workdir`, SIGKILLs it
  (no chance to clean up) once metrics.jsonl has `log_lines` lines, and returns the
  arguments that continue it (add --config.train.num_steps)."""
  import signal
  import time
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('XLA_FLAGS', None)
  args = ['main.py', '--config=configs/test.py', f'--workdir={workdir}', '--config.eval.sets=()',
          '--config.train.log_every_steps=1', '--config.train.checkpoint_every_steps=1',
          '--config.train.image_every_steps=0', '--config.train.keep_checkpoints=2',
          *extra_args]
  process = subprocess.Popen([sys.executable, *args, '--config.train.num_steps=100000'],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + timeout
    metrics = os.path.join(workdir, 'metrics.jsonl')
    while not (os.path.exists(metrics) and len(open(metrics).read().splitlines()) >= log_lines):
      assert process.poll() is None and time.monotonic() < deadline
      time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
  finally:
    process.kill()
  return args


def write_png16(path, array):
  """Writes [H, W, C] uint16 (C = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as a 16-bit PNG,
  byte by byte from the PNG specification (big-endian samples, filter 0 on every row), so
  that the readers under test are checked against a file no image library wrote."""
  import struct
  import zlib
  h, w, c = array.shape
  rows = array.astype('>u2').reshape(h, w * c)
  raw = b''.join(b'\x00' + row.tobytes() for row in rows)

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
  with open(path, 'wb') as f:
    f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, colour_type, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def png_header(path):
  """(bit depth, colour type) from a PNG file's IHDR chunk."""
  with open(path, 'rb') as f:
    header = f.read(26)
  assert header[:8] == b'\x89PNG\r\n\x1a\n' and header[12:16] == b'IHDR', path
  return header[24], header[25]
