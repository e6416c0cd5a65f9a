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


def run_python(args, env_extra=None, timeout=600, cwd=REPO):
  """Runs `python args...` in a fresh interpreter (for XLA_FLAGS, multi-process, CLIs)."""
  env = dict(os.environ)
  env.pop('XLA_FLAGS', None)
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env.update(env_extra or {})
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)
