"""Shared fixtures: the tiny test config, the shared benchmark data, subprocess runs."""

import os
import subprocess
import sys

import pytest

# Keras (the VGG19 reference) must use JAX, whatever else is installed; set before any import.
os.environ.setdefault("KERAS_BACKEND", "jax")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), 'shared', 'data')

# JAX's persistent compilation cache for the test session (and the processes its tests
# start, which inherit these variables): the tiny models' programs recur across tests and
# CLIs, and compiling is most of a tiny step's time on a CPU. The folder is emptied when a
# session starts (`pytest_configure`), so no result depends on an earlier run.
COMPILATION_CACHE = os.path.join(REPO, '.jax_cache')
if os.environ.get('SRGAN_JAX_TEST_COMPILATION_CACHE', '1') == '1':
  os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', COMPILATION_CACHE)
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


def pytest_collection_modifyitems(config, items):
  """The slow tests first: the last test a worker runs should be a short one, or the other
  worker waits for it at the end."""
  items.sort(key=lambda item: item.get_closest_marker('slow') is None)


def pytest_configure(config):
  if not hasattr(config, 'workerinput'):  # The controller, before any worker starts.
    import shutil
    shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)


def require_shared_data(*parts) -> str:
  """Path under ../shared/data; skips when it is absent, but fails under CI=true."""
  path = os.path.join(SHARED_DATA, *parts)
  if not os.path.exists(path):
    message = f'{path} is absent (the public benchmark images live beside the repository)'
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(message)
    pytest.skip(message)
  return path


# The reference implementations some tests compare against, and the line that installs each
# (.ci/run installs them all; the README's test command does not).
REFERENCE_INSTALLS = {
    'torch': 'pip install torch==2.13.0',
    'lpips': 'pip install torch==2.13.0 && pip install --no-deps lpips==0.1.4',
    'basicsr': 'pip install torch==2.13.0 && pip install --no-deps --no-build-isolation basicsr==1.4.2',
    'cv2': 'pip install opencv-python-headless',
}


def reference_missing(package: str, detail: str = ''):
  """Skips the test, naming `package`'s install line; fails instead under CI=true."""
  reason = f'{package} (a reference) is not installed: {REFERENCE_INSTALLS[package]}'
  if os.environ.get('CI', '').lower() == 'true':
    pytest.fail(f'{reason} {detail}; .ci/run installs it')
  pytest.skip(reason)


def import_reference(module: str):
  """Imports a reference package or one of its modules (`REFERENCE_INSTALLS`, e.g.
  'torch.nn.functional') through `pytest.importorskip`: skips, naming its install line,
  where it is absent, but fails under CI=true, where .ci/run installs it."""
  package = module.split('.')[0]
  try:
    return pytest.importorskip(module, reason='')
  except pytest.skip.Exception:
    reference_missing(package, f'(import {module} failed)')


def fetched_weights_if_any(*names):
  """The folder of real weights `names` fetched for the tests (`$SRGAN_JAX_TEST_WEIGHTS`,
  where .ci/run fetches them through `python -m srgan_jax.weights fetch`), or None where
  they are absent; fails instead under CI=true."""
  folder = os.environ.get('SRGAN_JAX_TEST_WEIGHTS', '')
  missing = [n for n in names if not os.path.exists(os.path.join(folder, f'{n}.npz'))]
  if not missing:
    return folder
  if os.environ.get('CI', '').lower() == 'true':
    pytest.fail(f'real weights {missing} are not in $SRGAN_JAX_TEST_WEIGHTS ({folder or "unset"}); '
                '.ci/run fetches them')
  return None


def fetched_weights(*names) -> str:
  """`fetched_weights_if_any`, skipping (with the commands that fetch them) where absent."""
  folder = fetched_weights_if_any(*names)
  if folder is None:
    pytest.skip(f'real weights {list(names)} are not in $SRGAN_JAX_TEST_WEIGHTS: python -m '
                'srgan_jax.weights fetch NAME --cache_dir=DIR, then set it to DIR')
  return folder


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


def descendants(pid: int) -> dict:
  """Every living process below `pid` (children, theirs, ...), from /proc: {pid: start
  time in clock ticks} (the start time tells a pid reused later from the process seen)."""
  children = {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:  # Ended while we looked.
        continue
      children.setdefault(int(fields[1]), []).append((int(entry), int(fields[19])))
  found, todo = {}, [pid]
  while todo:
    for child, start in children.get(todo.pop(), []):
      found[child] = start
      todo.append(child)
  return found


def still_running(processes: dict) -> list:
  """The pids of `descendants()`' result that still run (a zombie has ended: it holds no
  memory and runs nothing, and only waits for a parent that may no longer reap)."""
  running = []
  for pid, start in processes.items():
    try:
      with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    if fields[0] != 'Z' and int(fields[19]) == start:
      running.append(pid)
  return running


def assert_all_end_within(processes: dict, seconds: float):
  """Fails naming the processes of `processes` still running after `seconds`."""
  import time
  deadline = time.monotonic() + seconds
  while still_running(processes) and time.monotonic() < deadline:
    time.sleep(0.1)
  left = still_running(processes)
  assert not left, 'still running: ' + '; '.join(
      f'{pid}: {open(f"/proc/{pid}/cmdline").read().replace(chr(0), " ")[:200]}' for pid in left)


def killed_training_run(workdir, extra_args=(), log_lines: int = 6, timeout: float = 300,
                        children: dict = None) -> list:
  """Starts main.py on configs/test.py (checkpoints every step) in `workdir`, SIGKILLs it
  (no chance to clean up) once metrics.jsonl has `log_lines` lines, and returns the
  arguments that continue it (add --config.train.num_steps). `children`, if given, is
  filled with the run's `descendants` as they were just before the kill."""
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
    if children is not None:
      children.update(descendants(process.pid))
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


def phase_means_by_scipy(image, period=4):
  """The definition, in float64 with scipy's box filter ('reflect': mirrored about the
  half-pixel), on a crop to a multiple of the period."""
  import numpy as np
  from scipy import ndimage
  h, w = image.shape[0] // period * period, image.shape[1] // period * period
  x = image.astype(np.float64)
  luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  detail = (luma - ndimage.uniform_filter(luma, size=5, mode='reflect'))[:h, :w]
  return np.array([[detail[i::period, j::period].mean() for j in range(period)]
                   for i in range(period)])
