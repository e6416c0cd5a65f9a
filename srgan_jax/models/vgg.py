"""VGG19 features (Simonyan & Zisserman 2015) for the perceptual loss, and its weights.

The port keeps the public layer names (conv1_1 ... conv5_4) and stops after the
deepest layer asked for, so VGG54 never computes the classifier or the last pool.
Params live in the project's own `.npz` format beside the preprocessing that belongs
to the network they came from:

- 'keras':       `vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5`, Caffe-style input:
                 BGR, 0-255, minus the mean [103.939, 116.779, 123.68] (B, G, R).
- 'torchvision': `vgg19-dcbb9e9d.pth`, RGB in [0, 1], ImageNet mean and std.
- 'random':      fresh init (mechanics tests only), Keras preprocessing.

Command line:
  python -m srgan_jax.models.vgg fetch --source=keras|torchvision [--cache_dir=DIR]
  python -m srgan_jax.models.vgg convert --input=FILE [--source=...] [--cache_dir=DIR]
"""

import argparse
import hashlib
import os
import pickle
import re
import sys
import tempfile
import urllib.request
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax.models.layers import max_pool

# (block, convolutions in the block); pools follow each block.
_BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
LAYER_NAMES = tuple(f'conv{b}_{j}' for b, n in _BLOCKS for j in range(1, n + 1))
_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)

SOURCES = {
    'keras': dict(
        url='https://storage.googleapis.com/tensorflow/keras-applications/vgg19/'
            'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5',
        filename='vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5',
        size=80_134_624,
        # Keras publishes an md5 for this file (keras.applications.vgg19).
        md5='253f8cb515780f3b799900260a226db6'),
    'torchvision': dict(
        url='https://download.pytorch.org/models/vgg19-dcbb9e9d.pth',
        filename='vgg19-dcbb9e9d.pth',
        size=None,
        # torchvision names files by the first 8 hex digits of their sha256.
        sha256_prefix='dcbb9e9d'),
}
# Index of each conv layer in torchvision's `vgg19().features`.
_TORCHVISION_INDEX = dict(zip(
    LAYER_NAMES, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)))


class VGG19Features(nn.Module):
  """VGG19 up to one layer's output.

  Attributes:
    output_layer: 'convI_J', the phi_i,j to return.
    after_activation: return phi_i,j after its ReLU (the paper) or before it.
    dtype: compute dtype.
  """

  output_layer: str = 'conv5_4'
  after_activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """Maps preprocessed images [N, H, W, 3] to features [N, H/2^(i-1), W/2^(i-1), C] (float32)."""
    if self.output_layer not in LAYER_NAMES:
      raise ValueError(f'unknown VGG19 layer {self.output_layer!r}; one of {LAYER_NAMES}')
    x = x.astype(self.dtype)
    for block, count in _BLOCKS:
      if block > 1:
        x = max_pool(x, 2)  # nn.max_pool's values and gradients, computed faster.
      for j in range(1, count + 1):
        name = f'conv{block}_{j}'
        x = nn.Conv(_CHANNELS[block], (3, 3), dtype=self.dtype, name=name)(x)
        if name == self.output_layer and not self.after_activation:
          return x.astype(jnp.float32)
        x = nn.relu(x)
        if name == self.output_layer:
          return x.astype(jnp.float32)
    raise AssertionError('unreachable')


def layer_for_loss(content: str) -> str:
  """'vgg22' -> 'conv2_2', 'vgg54' -> 'conv5_4'."""
  if len(content) != 5 or not content.startswith('vgg') or not content[3:].isdigit():
    raise ValueError(f'VGG content loss must look like vgg22 or vgg54, got {content!r}')
  return f'conv{content[3]}_{content[4]}'


def preprocess(images: jnp.ndarray, source: str) -> jnp.ndarray:
  """Maps images in [-1, 1], RGB, [N, H, W, 3] to the input convention of `source`'s weights."""
  if source in ('keras', 'random'):
    bgr = (images[..., ::-1] + 1.0) * 127.5
    return bgr - CAFFE_MEAN_BGR
  if source == 'torchvision':
    rgb = (images + 1.0) * 0.5
    return (rgb - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB
  raise ValueError(f'unknown VGG weights source {source!r}; one of keras, torchvision, random')


# ----------------------------------------------------------------------------- params files


def default_cache_dir() -> str:
  return os.environ.get('SRGAN_JAX_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'srgan_jax')


def params_path(source: str, cache_dir: str = '') -> str:
  return os.path.join(cache_dir or default_cache_dir(), f'vgg19_{source}.npz')


def _check_layers(layers: Mapping[str, tuple[np.ndarray, np.ndarray]], origin: str):
  """Raises ValueError naming the first missing or mis-shaped layer."""
  cin = 3
  for name in LAYER_NAMES:
    cout = _CHANNELS[int(name[4])]
    if name not in layers:
      raise ValueError(f'{origin}: layer {name} is missing')
    kernel, bias = layers[name]
    if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
      raise ValueError(
          f'{origin}: layer {name} has kernel {kernel.shape} and bias {bias.shape}; '
          f'expected (3, 3, {cin}, {cout}) and ({cout},)')
    cin = cout


def layers_to_params(layers: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict:
  """{'conv1_1': (kernel HWIO, bias)} -> Flax params {'conv1_1': {'kernel', 'bias'}}."""
  return {name: {'kernel': np.asarray(layers[name][0], np.float32),
                 'bias': np.asarray(layers[name][1], np.float32)} for name in LAYER_NAMES}


def save_params(path: str, params: Mapping, source: str):
  """Writes params and the name of their source (which decides preprocessing), atomically."""
  arrays = {f'{name}/{leaf}': np.asarray(params[name][leaf])
            for name in LAYER_NAMES for leaf in ('kernel', 'bias')}
  arrays['__source__'] = np.array(source)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(path)),
                                   suffix='.npz', delete=False) as f:
    np.savez(f, **arrays)
  os.replace(f.name, path)


def load_params(path: str) -> tuple[dict, str]:
  """Reads a params file; returns (params, source). Names the first bad layer on mismatch."""
  try:
    with np.load(path) as data:
      source = str(data['__source__'])
      layers = {name: (data[f'{name}/kernel'], data[f'{name}/bias'])
                for name in LAYER_NAMES if f'{name}/kernel' in data}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
    raise ValueError(f'{path} is not a VGG19 params file written by this project: {e}') from e
  _check_layers(layers, path)
  return layers_to_params(layers), source


def random_params(seed: int = 0) -> dict:
  """Fresh VGG19 params (He-style init from Flax defaults); for mechanics tests only."""
  variables = VGG19Features('conv5_4').init(
      jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3), jnp.float32))
  return jax.tree.map(np.asarray, variables['params'])


def missing_weights_message(path: str, source: str) -> str:
  return (f'VGG19 weights not found at {path}. The content loss needs ImageNet VGG19 weights '
          f'({source}). Fetch and convert them with\n'
          f'  python -m srgan_jax.models.vgg fetch --source={source} --cache_dir={os.path.dirname(path)}\n'
          f'or, with a file downloaded by hand ({SOURCES.get(source, {}).get("url", "")}),\n'
          f'  python -m srgan_jax.models.vgg convert --input=FILE --cache_dir={os.path.dirname(path)}\n'
          f'(set config.vgg.params_path to use another file).')


def resolve_params(vgg_config) -> tuple[dict, str]:
  """Loads the params a run asks for, or fails with the fetch command (no compile happens first)."""
  if vgg_config.allow_random_weights:
    return random_params(), 'random'
  path = vgg_config.params_path or params_path(vgg_config.source, vgg_config.cache_dir)
  if not os.path.exists(path):
    raise FileNotFoundError(missing_weights_message(path, vgg_config.source))
  return load_params(path)


# ----------------------------------------------------------------------------- importers


def read_keras_h5(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads VGG19 conv layers from a Keras weights file.

  Two layouts: the public notop file (Keras 2: root attribute `layer_names`, a group per
  layer, datasets named by the group's `weight_names`) and Keras 3's `.weights.h5`
  (`layers/<name>/vars/0|1`, where <name> is the layer name or, in recent Keras 3,
  conv2d, conv2d_1, ... in creation order).
  """
  import h5py  # Optional dependency: only the importer needs it.

  layers = {}
  keras_name = lambda name: f'block{name[4]}_conv{name[6]}'
  with h5py.File(path, 'r') as f:
    if 'layer_names' in f.attrs:
      for name in LAYER_NAMES:
        if keras_name(name) in f:
          group = f[keras_name(name)]
          weight_names = [w.decode() if isinstance(w, bytes) else w
                          for w in group.attrs['weight_names']]
          kernel = [w for w in weight_names if '_W' in w or 'kernel' in w]
          bias = [w for w in weight_names if '_b' in w or 'bias' in w]
          if len(kernel) != 1 or len(bias) != 1:
            raise ValueError(f'{path}: layer {keras_name(name)} holds {weight_names}')
          layers[name] = (group[kernel[0]][()], group[bias[0]][()])
    elif 'layers' in f:
      groups = f['layers']
      if all(keras_name(name) in groups for name in LAYER_NAMES):
        ordered = [keras_name(name) for name in LAYER_NAMES]
      else:
        # Keras 3 names groups by class and creation order: conv2d, conv2d_1, ...
        convs = [g for g in groups if re.fullmatch(r'conv2d(_\d+)?', g)]
        ordered = sorted(convs, key=lambda g: int(g.rpartition('_')[2]) if '_' in g[6:] else 0)
        if len(ordered) != len(LAYER_NAMES):
          raise ValueError(f'{path}: {len(ordered)} conv layers under layers/, expected 16')
      for name, group in zip(LAYER_NAMES, ordered):
        variables = groups[group]['vars']
        layers[name] = (variables['0'][()], variables['1'][()])
    else:
      raise ValueError(f'{path}: neither a Keras 2 (layer_names) nor a Keras 3 (layers/) weights file')
  _check_layers(layers, path)
  return layers


class _TorchUnpickler(pickle.Unpickler):
  """Reads a `torch.save` zip archive's pickle into numpy arrays, without PyTorch.

  Only what a state dict of float tensors needs is allowed: tensors, float storages
  and OrderedDict. Any other class is refused, so a hostile pickle cannot run code.
  """

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
    super().__init__(file)
    self._archive, self._prefix = archive, prefix

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      import collections
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if module == 'torch' and name in ('FloatStorage', 'HalfStorage', 'DoubleStorage'):
      return name
    raise pickle.UnpicklingError(f'unsupported object {module}.{name} in a VGG19 state dict')

  def persistent_load(self, pid):
    _, storage_type, key, _, _ = pid
    dtype = {'FloatStorage': np.float32, 'HalfStorage': np.float16,
             'DoubleStorage': np.float64}[storage_type]
    return np.frombuffer(self._archive.read(f'{self._prefix}/data/{key}'), dtype)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  itemsize = storage.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], tuple(size), tuple(s * itemsize for s in stride)).copy()


def read_torchvision_pth(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads VGG19 conv layers from a torchvision state dict (`features.N.weight`, OIHW)."""
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise ValueError(f'{path}: not a torch.save zip archive ({e})') from e
  with archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path}: expected one data.pkl in the archive, found {pickles}')
    prefix = pickles[0][:-len('/data.pkl')]
    with archive.open(pickles[0]) as f:
      state = _TorchUnpickler(f, archive, prefix).load()
  layers = {}
  for name, index in _TORCHVISION_INDEX.items():
    w, b = state.get(f'features.{index}.weight'), state.get(f'features.{index}.bias')
    if w is not None and b is not None:
      layers[name] = (np.transpose(w, (2, 3, 1, 0)), b)  # OIHW -> HWIO
  _check_layers(layers, path)
  return layers


def guess_source(path: str) -> str:
  with open(path, 'rb') as f:
    magic = f.read(8)
  if magic.startswith(b'\x89HDF'):
    return 'keras'
  if magic.startswith(b'PK'):
    return 'torchvision'
  raise ValueError(f'{path}: neither an HDF5 (Keras) nor a zip (torchvision) file')


def convert(input_path: str, source: str = '', cache_dir: str = '', output: str = '') -> str:
  """Converts a public weights file into the project's params file; returns its path."""
  source = source or guess_source(input_path)
  reader = {'keras': read_keras_h5, 'torchvision': read_torchvision_pth}[source]
  params = layers_to_params(reader(input_path))
  output = output or params_path(source, cache_dir)
  save_params(output, params, source)
  return output


def _verify_download(path: str, spec: dict):
  size = os.path.getsize(path)
  if spec['size'] is not None and size != spec['size']:
    raise ValueError(f'{path}: {size} bytes, expected {spec["size"]}')
  with open(path, 'rb') as f:
    data = f.read()
  if 'md5' in spec and hashlib.md5(data).hexdigest() != spec['md5']:
    raise ValueError(f'{path}: md5 {hashlib.md5(data).hexdigest()}, expected {spec["md5"]}')
  sha = hashlib.sha256(data).hexdigest()
  if 'sha256_prefix' in spec and not sha.startswith(spec['sha256_prefix']):
    raise ValueError(f'{path}: sha256 {sha} does not start with {spec["sha256_prefix"]}')
  return sha


def fetch(source: str, cache_dir: str = '', timeout_s: float = 5.0) -> str:
  """Downloads, verifies and converts public weights; returns the params file path."""
  spec = SOURCES[source]
  cache_dir = cache_dir or default_cache_dir()
  os.makedirs(cache_dir, exist_ok=True)
  download = os.path.join(cache_dir, spec['filename'])
  if not os.path.exists(download):
    partial = download + '.part'
    try:
      with urllib.request.urlopen(spec['url'], timeout=timeout_s) as response, \
          open(partial, 'wb') as out:
        while chunk := response.read(1 << 20):
          out.write(chunk)
    except OSError as e:
      raise ConnectionError(
          f'could not download {spec["url"]} ({e}).\nDownload it by hand to {download} and run\n'
          f'  python -m srgan_jax.models.vgg convert --input={download} --cache_dir={cache_dir}'
      ) from e
    os.replace(partial, download)
  sha = _verify_download(download, spec)
  print(f'{download}: sha256 {sha}')
  return convert(download, source, cache_dir)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.models.vgg', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  p_fetch = sub.add_parser('fetch', help='download, verify and convert public weights')
  p_fetch.add_argument('--source', choices=sorted(SOURCES), default='keras')
  p_fetch.add_argument('--cache_dir', default='')
  p_fetch.add_argument('--timeout_s', type=float, default=5.0)
  p_conv = sub.add_parser('convert', help='convert a weights file downloaded by hand')
  p_conv.add_argument('--input', required=True)
  p_conv.add_argument('--source', choices=sorted(SOURCES), default='',
                      help='default: guessed from the file (HDF5: keras, zip: torchvision)')
  p_conv.add_argument('--cache_dir', default='')
  p_conv.add_argument('--output', default='', help='default: <cache_dir>/vgg19_<source>.npz')
  args = parser.parse_args(argv)
  try:
    if args.command == 'fetch':
      path = fetch(args.source, args.cache_dir, args.timeout_s)
    else:
      path = convert(args.input, args.source, args.cache_dir, args.output)
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'VGG19 params written to {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
