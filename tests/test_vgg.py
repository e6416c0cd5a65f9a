"""The VGG19 port against Keras's own VGG19, the public-weights module and its failure messages."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import train, weights
from srgan_jax.models import vgg
from tests.conftest import fetched_weights, import_reference, require_shared_data, run_python

KERAS_LAYER = lambda name: f'block{name[4]}_conv{name[6]}'


def _write_public_keras_notop(path, params):
  """The layout of vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 (Keras 2 era)."""
  h5py = pytest.importorskip('h5py')
  layer_names = ['input_1']
  for block, count in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)):
    layer_names += [f'block{block}_conv{j}' for j in range(1, count + 1)] + [f'block{block}_pool']
  with h5py.File(path, 'w') as f:
    f.attrs['layer_names'] = [n.encode() for n in layer_names]
    for name in layer_names:
      group = f.create_group(name)
      ours = next((n for n in vgg.LAYER_NAMES if KERAS_LAYER(n) == name), None)
      if ours is None:
        group.attrs['weight_names'] = np.array([], dtype='S1')
        continue
      weight_names = [f'{name}_W_1:0', f'{name}_b_1:0']
      group.attrs['weight_names'] = [w.encode() for w in weight_names]
      group.create_dataset(weight_names[0], data=params[ours]['kernel'])
      group.create_dataset(weight_names[1], data=params[ours]['bias'])


def _keras_vgg19(params):
  os.environ['KERAS_BACKEND'] = 'jax'
  keras = pytest.importorskip('keras')
  if keras.backend.backend() != 'jax':
    pytest.skip(f'keras was imported with the {keras.backend.backend()} backend')
  model = keras.applications.VGG19(weights=None, include_top=False, input_shape=(None, None, 3))
  for name in vgg.LAYER_NAMES:
    model.get_layer(KERAS_LAYER(name)).set_weights([params[name]['kernel'], params[name]['bias']])
  return keras, model


def test_port_equals_keras_vgg19_on_random_weights():
  params = vgg.random_params(seed=3)
  keras, model = _keras_vgg19(params)
  images = np.random.default_rng(0).uniform(-1, 1, (2, 80, 48, 3)).astype(np.float32)
  x = np.asarray(vgg.preprocess(jnp.asarray(images), 'keras'))
  for layer in ('conv2_2', 'conv5_4'):
    reference = keras.Model(model.inputs, model.get_layer(KERAS_LAYER(layer)).output)
    expected = np.asarray(reference(x))
    (ours,) = vgg.VGG19Features((layer,)).apply({'params': params}, x)
    ours = np.asarray(ours)
    diff = np.abs(ours - expected).max()
    print(f'phi {layer}: max |ours - keras| = {diff:.3e} (values up to {np.abs(expected).max():.3e})')
    assert ours.shape == expected.shape
    assert diff < 1e-4


@pytest.mark.slow
def test_fetched_vgg19_equals_keras_vgg19_loading_the_published_file():
  """conv5_4 (the paper's VGG54) of a Set5 image: our port with the converted weights
  against Keras's own VGG19 reading the h5 file that `weights fetch vgg19_keras` keeps."""
  cache = fetched_weights('vgg19_keras')
  h5 = os.path.join(cache, weights.REGISTRY['vgg19_keras'].filename)
  if not os.path.exists(h5):
    pytest.fail(f'{h5} is missing: `weights fetch` keeps it beside the converted file')
  os.environ['KERAS_BACKEND'] = 'jax'
  keras = pytest.importorskip('keras')
  if keras.backend.backend() != 'jax':
    pytest.skip(f'keras was imported with the {keras.backend.backend()} backend')
  from srgan_jax import images
  image = images.read_rgb(os.path.join(require_shared_data('sr_benchmarks', 'Set5', 'HR'),
                                       'baby.png'))[:160, :224]
  x = np.asarray(vgg.preprocess(jnp.asarray(image[None] / 127.5 - 1, jnp.float32), 'keras'))
  model = keras.applications.VGG19(weights=h5, include_top=False, input_shape=(None, None, 3))
  expected = np.asarray(keras.Model(model.inputs, model.get_layer('block5_conv4').output)(x))
  params = weights.nested(weights.load('vgg19_keras', cache))
  (ours,) = vgg.VGG19Features().apply({'params': params}, x)
  ours = np.asarray(ours)
  diff = np.abs(ours - expected).max()
  print(f'conv5_4: max |ours - keras| = {diff:.3e} (values up to {np.abs(expected).max():.3e})')
  assert ours.shape == expected.shape == (1, 10, 14, 512)
  assert np.abs(expected).max() > 1  # The real weights: features, not zeros.
  assert diff < 1e-4


def test_keras_preprocessing_matches_keras_preprocess_input():
  keras = pytest.importorskip('keras')
  rgb255 = np.random.default_rng(0).uniform(0, 255, (1, 4, 4, 3)).astype(np.float32)
  expected = keras.applications.vgg19.preprocess_input(rgb255.copy())
  ours = vgg.preprocess(jnp.asarray(rgb255 / 127.5 - 1), 'keras')
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-3)


def test_convert_public_h5_layout(tmp_path):
  params = vgg.random_params(seed=1)
  _write_public_keras_notop(tmp_path / 'notop.h5', params)
  result = run_python(['-m', 'srgan_jax.weights', 'convert', f'--input={tmp_path}/notop.h5',
                       f'--cache_dir={tmp_path}/cache'])
  assert result.returncode == 0, result.stderr
  assert 'RuntimeWarning' not in result.stderr  # The module is not imported twice.
  loaded = weights.nested(weights.load('vgg19_keras', str(tmp_path / 'cache')))
  for name in vgg.LAYER_NAMES:
    np.testing.assert_array_equal(loaded[name]['kernel'], params[name]['kernel'])
    np.testing.assert_array_equal(loaded[name]['bias'], params[name]['bias'])
  with pytest.raises(ValueError, match="holds 'vgg19_keras' weights, not 'vgg19_torchvision'"):
    weights.load('vgg19_torchvision', path=str(tmp_path / 'cache' / 'vgg19_keras.npz'))


def test_read_keras3_saved_weights(tmp_path):
  params = vgg.random_params(seed=2)
  _, model = _keras_vgg19(params)
  model.save_weights(str(tmp_path / 'vgg19.weights.h5'))
  arrays = weights.read_vgg19_keras(str(tmp_path / 'vgg19.weights.h5'))
  for name in vgg.LAYER_NAMES:
    np.testing.assert_array_equal(arrays[f'{name}/kernel'], params[name]['kernel'])


@pytest.mark.parametrize('zip_format', [True, False])
def test_torchvision_state_dict_without_torch_at_read_time(tmp_path, zip_format):
  """Both of torch.save's formats: the zip archive, and the older one that torchvision's
  published files (vgg19-dcbb9e9d.pth among them) were written in."""
  torch = import_reference('torch')
  params = vgg.random_params(seed=4)
  state = {}
  for name, index in weights.TORCHVISION_VGG19_INDEX.items():
    state[f'features.{index}.weight'] = torch.from_numpy(
        np.ascontiguousarray(params[name]['kernel'].transpose(3, 2, 0, 1)))
    state[f'features.{index}.bias'] = torch.from_numpy(params[name]['bias'])
  state['classifier.0.weight'] = torch.zeros(3, 4, dtype=torch.float16)  # Other dtypes pass.
  torch.save(state, tmp_path / 'vgg19-test.pth', _use_new_zipfile_serialization=zip_format)
  arrays = weights.read_vgg19_torchvision(str(tmp_path / 'vgg19-test.pth'))
  for name in vgg.LAYER_NAMES:
    np.testing.assert_array_equal(arrays[f'{name}/kernel'], params[name]['kernel'])
    np.testing.assert_array_equal(arrays[f'{name}/bias'], params[name]['bias'])
  raw = weights.read_torch_state_dict(str(tmp_path / 'vgg19-test.pth'))
  assert raw['classifier.0.weight'].dtype == np.float16


def test_published_lpips_files_read_as_torch_reads_them():
  """The lpips package's v0.1 files, saved from CUDA in the older format, read without
  PyTorch give what torch.load gives."""
  torch = import_reference('torch')
  folder = require_shared_data('metrics', 'lpips', 'v0.1')
  for name in ('alex.pth', 'vgg.pth', 'squeeze.pth'):
    ours = weights.read_torch_state_dict(os.path.join(folder, name))
    theirs = torch.load(os.path.join(folder, name), map_location='cpu')
    assert sorted(ours) == sorted(theirs) and len(ours) >= 5
    for key, value in theirs.items():
      np.testing.assert_array_equal(ours[key], value.numpy(), err_msg=f'{name} {key}')


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
  import pickle
  payload = b'cos\nsystem\n(S"touch ' + str(tmp_path / 'ran').encode() + b'"\ntR.'
  for before in (0, 3):  # As the first pickle, or as the state dict itself.
    with open(tmp_path / 'evil.pth', 'wb') as f:
      for value in (weights._LEGACY_MAGIC, 1001, {})[:before]:
        pickle.dump(value, f)
      f.write(payload)
    with pytest.raises(ValueError, match='unsupported object os.system'):
      weights.read_torch_state_dict(str(tmp_path / 'evil.pth'))
  assert not (tmp_path / 'ran').exists()


def test_wrong_shape_names_the_first_bad_layer(tmp_path):
  params = vgg.random_params(seed=1)
  params['conv3_2'] = {'kernel': np.zeros((3, 3, 256, 128), np.float32),
                       'bias': np.zeros((128,), np.float32)}
  _write_public_keras_notop(tmp_path / 'bad.h5', params)
  with pytest.raises(ValueError, match='layer conv3_2 has kernel'):
    weights.read_vgg19_keras(str(tmp_path / 'bad.h5'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip')
  with pytest.raises(ValueError, match='not a weights file written by srgan_jax'):
    weights.load('vgg19_keras', path=str(tmp_path / 'junk.npz'))


def test_missing_weights_message_names_file_and_fetch_command(tmp_path):
  from configs import default
  config = default.get_config()
  config.vgg.cache_dir = str(tmp_path)
  with pytest.raises(weights.MissingWeightsError) as error:
    train.vgg_params_for(config)
  assert str(tmp_path / 'vgg19_keras.npz') in str(error.value)
  assert 'python -m srgan_jax.weights fetch vgg19_keras' in str(error.value)
  assert 'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5' in str(error.value)


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv('SRGAN_JAX_CACHE', str(tmp_path))
  assert weights.converted_path('vgg19_torchvision') == str(tmp_path / 'vgg19_torchvision.npz')
  assert weights.converted_path('vgg19_keras', '/elsewhere') == '/elsewhere/vgg19_keras.npz'


def test_a_cache_file_converted_before_weights_had_names_still_loads(tmp_path):
  params = vgg.random_params(seed=5)
  arrays = {f'{n}/{leaf}': params[n][leaf] for n in vgg.LAYER_NAMES for leaf in ('kernel', 'bias')}
  np.savez(tmp_path / 'vgg19_keras.npz', __source__=np.array('keras'), **arrays)
  loaded = weights.load('vgg19_keras', str(tmp_path))
  assert sorted(loaded) == sorted(arrays)


def test_srgan_291_is_the_papers_second_phase_and_never_downloads(tmp_path):
  from configs import srgan_291
  from srgan_jax import model_file
  config = srgan_291.get_config()
  train.validate_config(config)
  assert os.path.isfile(model_file.resolve(config.init_from))  # G from the shipped SRResNet.
  assert (config.loss.content, config.loss.adversarial_weight, config.vgg.source,
          config.optimizer.learning_rate) == ('vgg54', 1e-3, 'keras', 1e-4)
  assert config.eval.best_metric == 'lpips_alex' and 'grid' in config.eval.metrics
  assert config.loss.phase_weight > 0  # Beside the paper's loss: no pixel-shuffle grid.
  assert config.loss.pixel_weight > 0  # Holds colour, which VGG54 barely sees.
  assert 0 < config.train.ema_decay < 1
  assert os.path.basename(config.eval.sets[0]) == 'Set14'  # best/ follows the first set.
  config.vgg.cache_dir = str(tmp_path)
  with pytest.raises(weights.MissingWeightsError, match='python -m srgan_jax.weights fetch vgg19_keras'):
    train.vgg_params_for(config)
  assert os.listdir(tmp_path) == []
