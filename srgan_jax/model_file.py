"""A trained generator in one small file that anyone can run: `python -m srgan_jax.export`.

The file is a numpy `.npz` archive:
  __model__           JSON: {"format": "srgan_jax.generator", "version": 1, "generator":
                      the run's config.generator, "step", "data" (the training source),
                      "sha256": the checksum of the arrays below}
  params/<path>       G's EMA parameters (the ones inference uses), float32
  batch_stats/<path>  BatchNorm running statistics

No pickles (`np.load(..., allow_pickle=False)` reads it), no optimiser or discriminator
state. `read` checks the format, the version and the checksum, and names what a damaged
or foreign file is instead.
"""

import hashlib
import json
import os
import tempfile
import zipfile
from typing import Any

import ml_collections
import numpy as np

FORMAT = 'srgan_jax.generator'
VERSION = 1
_META = '__model__'

# Models trained by the project, in the repository's pretrained/ folder, by name.
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              'pretrained')
PRETRAINED = {'srresnet': 'srresnet_x4.npz', 'srgan': 'srgan_x4.npz',
              'srgan_mse': 'srgan_mse_x4.npz', 'real_srresnet': 'real_srresnet_x4.npz',
              'real': 'real_x4.npz'}
# What each is for, where a user picks one (the demo's list).
PRETRAINED_HINTS = {'srgan': "the paper's SRGAN: texture on clean images",
                    'real_srresnet': 'JPEGs and noisy photos, faithful',
                    'real': 'for JPEGs, phone and web photos'}
DEFAULT_PRETRAINED = 'srresnet'


def resolve(model: str) -> str:
  """A model file's path as given, or a pretrained model's name ('srresnet') -> its file."""
  if model not in PRETRAINED:
    return model
  path = os.path.join(PRETRAINED_DIR, PRETRAINED[model])
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'the pretrained model {model!r} is not at {path} (pretrained/README.md says how it '
        f'is trained); name a model file or a run folder (--workdir) instead')
  return path


def _flatten(tree: dict, prefix: str) -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}/{key}'))
    else:
      out[f'{prefix}/{key}'] = np.asarray(value)
  return out


def _unflatten(arrays: dict, prefix: str) -> dict:
  tree = {}
  for key, value in arrays.items():
    parts = key.split('/')
    if parts[0] != prefix:
      continue
    node = tree
    for part in parts[1:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree


def checksum(arrays: dict) -> str:
  """sha256 over every array's name, dtype, shape and bytes, in name order."""
  digest = hashlib.sha256()
  for name in sorted(arrays):
    array = np.ascontiguousarray(arrays[name])
    digest.update(f'{name}|{array.dtype.str}|{array.shape}|'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def write(path: str, generator_config, variables: dict, step: int, data: str):
  """Writes G (variables {'params', 'batch_stats'}) and what built it, atomically."""
  arrays = {**_flatten(variables['params'], 'params'),
            **_flatten(variables['batch_stats'], 'batch_stats')}
  meta = {'format': FORMAT, 'version': VERSION,
          'generator': dict(ml_collections.ConfigDict(generator_config).to_dict()),
          'step': int(step), 'data': data, 'sha256': checksum(arrays)}
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=folder, suffix='.npz', delete=False) as f:
    np.savez(f, **{_META: np.array(json.dumps(meta))}, **arrays)
  os.replace(f.name, path)


def _what_it_is(path: str) -> str:
  with open(path, 'rb') as f:
    head = f.read(8)
  kinds = {b'\x89PNG': 'a PNG image', b'\xff\xd8\xff': 'a JPEG image', b'\x89HDF': 'an HDF5 file',
           b'{': 'a JSON or text file', b'\x93NUMPY': 'a single numpy array (.npy)'}
  for magic, kind in kinds.items():
    if head.startswith(magic):
      return kind
  return 'a zip archive' if head.startswith(b'PK') else f'a file starting {head!r}'


def read(path: str) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """(generator config, variables {'params', 'batch_stats'}, info {'step', 'data'}).

  Raises FileNotFoundError if `path` is missing, ValueError saying what is wrong with a
  damaged (truncated, altered) or foreign file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'no model file at {path}')
  try:
    with np.load(path, allow_pickle=False) as data:
      meta_text = str(data[_META]) if _META in data.files else None
      arrays = {k: data[k] for k in data.files if k != _META}
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    kind = _what_it_is(path)
    if kind == 'a zip archive':
      raise ValueError(f'{path} is damaged: a zip archive that cannot be read, truncated or '
                       f'altered ({type(e).__name__}: {e}); export it again') from e
    raise ValueError(f'{path} is not a srgan_jax model file: it is {kind}') from e
  if meta_text is None:
    raise ValueError(f'{path} is not a srgan_jax model file: a numpy archive of '
                     f'{len(arrays)} arrays without {_META!r}')
  try:
    meta = json.loads(meta_text)
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is damaged: its description cannot be read ({e}); export it '
                     f'again') from e
  if meta.get('format') != FORMAT:
    raise ValueError(f'{path} is not a srgan_jax model file (format {meta.get("format")!r})')
  if meta.get('version') != VERSION:
    raise ValueError(f'{path} is a srgan_jax model file of version {meta.get("version")}; '
                     f'this srgan_jax reads version {VERSION}')
  if checksum(arrays) != meta.get('sha256'):
    raise ValueError(f'{path} is damaged: its arrays do not match the checksum it was '
                     f'written with; export it again')
  variables = {'params': _unflatten(arrays, 'params'),
               'batch_stats': _unflatten(arrays, 'batch_stats')}
  info: dict[str, Any] = {'step': meta['step'], 'data': meta.get('data', '')}
  return ml_collections.ConfigDict(meta['generator']), variables, info
