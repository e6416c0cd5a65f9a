"""Real-ESRGAN's degradation against BasicSR 1.4.2's own functions (tests/basicsr_reference.py).

Each part given the same parameters (and, for noise, the same random draws) as BasicSR's
function; the whole pipeline against `RealESRGANModel.feed_data` with its draws scripted.
"""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import blur_kernels, real_degradation as rd
from tests import basicsr_reference
from tests.conftest import import_reference


def _torch(x):
  """[B, H, W, C] numpy -> [B, C, H, W] float32 torch."""
  torch = import_reference('torch')
  return torch.from_numpy(np.ascontiguousarray(np.transpose(np.asarray(x, np.float32), (0, 3, 1, 2))))


def _numpy(t):
  return np.transpose(t.numpy(), (0, 2, 3, 1))


def test_kernels_equal_basicsr_within_1e7():
  deg = basicsr_reference.load('data/degradations.py')
  rng = np.random.default_rng(0)
  worst = {}
  for _ in range(200):
    size = int(rng.choice(blur_kernels.SIZES))
    pad = (21 - size) // 2
    sx, sy = rng.uniform(0.2, 3, 2)
    theta, beta, cutoff = rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 4), rng.uniform(np.pi / 5, np.pi)
    cases = {
        'iso': (deg.bivariate_Gaussian(size, sx, sx, 0, isotropic=True),
                blur_kernels.gaussian(size, sx, sx, 0.0)),
        'aniso': (deg.bivariate_Gaussian(size, sx, sy, theta, isotropic=False),
                  blur_kernels.gaussian(size, sx, sy, theta)),
        'generalized': (deg.bivariate_generalized_Gaussian(size, sx, sy, theta, beta, isotropic=False),
                        blur_kernels.generalized_gaussian(size, sx, sy, theta, beta)),
        'plateau': (deg.bivariate_plateau(size, sx, sy, theta, beta, isotropic=False),
                    blur_kernels.plateau(size, sx, sy, theta, beta)),
        'sinc': (deg.circular_lowpass_kernel(cutoff, size), blur_kernels.sinc(size, cutoff)),
    }
    for name, (reference, ours) in cases.items():
      reference = np.pad(reference, pad)
      # The float32 the step receives, as BasicSR's torch.FloatTensor(kernel).
      worst[name] = max(worst.get(name, 0.0), np.abs(ours.astype(np.float32) - reference).max())
  print('largest |ours - BasicSR| per kernel type:', worst)
  assert max(worst.values()) < 1e-7, worst


def test_row_kernels_are_a_function_of_seed_step_row(tiny_config):
  config = tiny_config.degradation
  a = blur_kernels.batch_kernels(config, 0, 5, range(4))
  assert a.shape == (4, 3, 21, 21) and a.dtype == np.float32
  np.testing.assert_array_equal(a[2:], blur_kernels.batch_kernels(config, 0, 5, [2, 3]))
  assert not np.array_equal(a, blur_kernels.batch_kernels(config, 0, 6, range(4)))
  np.testing.assert_allclose(a.sum(axis=(2, 3)), 1.0, atol=1e-5)


@pytest.mark.parametrize('height,width', [(23, 31), (32, 32), (57, 40)])
def test_filter2d_equals_basicsr(height, width):
  img_process = basicsr_reference.load('utils/img_process_util.py')
  torch = import_reference('torch')
  rng = np.random.default_rng(height)
  images = rng.uniform(size=(3, height, width, 3)).astype(np.float32)
  kernels = np.stack([blur_kernels.gaussian(21, 2.0, 0.7, 0.3), blur_kernels.sinc(9, 1.5),
                      blur_kernels.delta()]).astype(np.float32)
  reference = _numpy(img_process.filter2D(_torch(images), torch.from_numpy(kernels)))
  # On a larger canvas holding garbage outside the image: the border reflects at the image.
  canvas = np.full((3, height + 13, width + 7, 3), 7.0, np.float32)
  canvas[:, :height, :width] = images
  ours = np.asarray(rd.filter2d(jnp.asarray(canvas), jnp.asarray(kernels), height, width))
  np.testing.assert_allclose(ours[:, :height, :width], reference, atol=1e-5)


def _resize_reference(images, mode, size=None, scale_factor=None):
  F = import_reference('torch.nn.functional')
  return _numpy(F.interpolate(_torch(images), size=size, scale_factor=scale_factor, mode=mode))


def test_resize_equals_torch_interpolate_with_sizes_traced():
  """Every mode, by factor (the first order) and by size (the second and final), over sizes
  and scales; one compiled function serves them all (sizes, mode and factor are traced)."""
  canvas = 160

  @jax.jit
  def resize(images, in_h, in_w, out_h, out_w, mode, inverse_h, inverse_w):
    return rd.resize(images, (in_h, in_w), (out_h, out_w), (canvas, canvas), mode,
                     (inverse_h, inverse_w))

  rng = np.random.default_rng(1)
  worst = {}
  for height, width in [(24, 24), (37, 50), (96, 64)]:
    images = rng.uniform(size=(2, height, width, 3)).astype(np.float32)
    padded = np.full((2, canvas, canvas, 3), -3.0, np.float32)  # Garbage outside the image.
    padded[:, :height, :width] = images
    for mode_index, mode in enumerate(rd.RESIZE_MODES):
      cases = [(None, f) for f in (0.15, 0.3, 0.5, 0.77, 1.0, 1.2, 1.5)]
      cases += [(size, None) for size in [(7, 9), (height // 4, width // 4), (int(height * 1.3), width)]]
      for size, factor in cases:
        reference = _resize_reference(images, mode, size=size, scale_factor=factor)
        out_h, out_w = reference.shape[1:3]
        if factor is None:  # By size: PyTorch maps coordinates by in / out.
          inverse = (np.float32(height) / np.float32(out_h), np.float32(width) / np.float32(out_w))
        else:  # By factor: by the factor it was given.
          inverse = (np.float32(1) / np.float32(factor),) * 2
        ours = np.asarray(resize(padded, height, width, out_h, out_w, mode_index, *inverse))
        worst[mode] = max(worst.get(mode, 0.0), np.abs(ours[:, :out_h, :out_w] - reference).max())
        assert not ours[:, out_h:].any() and not ours[:, :, out_w:].any()
  assert resize._cache_size() == 1
  print('largest |ours - F.interpolate| per mode:', worst)
  assert max(worst.values()) < 1e-5


def test_gaussian_noise_equals_basicsr_with_the_same_draws():
  deg = basicsr_reference.load('data/degradations.py')
  torch = import_reference('torch')
  rng = np.random.default_rng(2)
  images = rng.uniform(size=(4, 19, 26, 3)).astype(np.float32)
  sigma = np.array([1.0, 7.5, 25.0, 30.0], np.float32)
  gray = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
  torch.manual_seed(0)
  reference = deg.add_gaussian_noise_pt(_torch(images), sigma=torch.from_numpy(sigma),
                                        gray_noise=torch.from_numpy(gray), clip=True, rounds=False)
  torch.manual_seed(0)  # The same draws, in BasicSR's order: the gray field, then the colour.
  gray_field = torch.randn(19, 26).numpy()
  color_field = _numpy(torch.randn(4, 3, 19, 26))
  ours = rd.gaussian_noise(jnp.asarray(images), jnp.asarray(sigma), jnp.asarray(gray),
                           jnp.asarray(color_field), jnp.asarray(gray_field))
  np.testing.assert_array_equal(np.asarray(ours), _numpy(reference))


def test_poisson_noise_equals_basicsr_with_the_same_draws(monkeypatch):
  deg = basicsr_reference.load('data/degradations.py')
  torch = import_reference('torch')
  rng = np.random.default_rng(3)
  # Few distinct levels in one sample, all 256 in another: the rate scale differs.
  images = rng.uniform(size=(3, 20, 24, 3)).astype(np.float32)
  images[0] = np.round(images[0] * 5) / 5
  scale = np.array([0.05, 1.0, 3.0], np.float32)
  gray = np.array([1.0, 0.0, 1.0], np.float32)
  draws = []

  def poisson(rates):
    counts = torch.from_numpy(np.random.default_rng(len(draws)).poisson(rates.numpy()).astype(np.float32))
    draws.append((rates.numpy().copy(), counts.numpy()))
    return counts

  monkeypatch.setattr(torch, 'poisson', poisson)
  reference = deg.add_poisson_noise_pt(_torch(images), scale=torch.from_numpy(scale),
                                       gray_noise=torch.from_numpy(gray), clip=True, rounds=False)
  (gray_rates, gray_counts), (color_rates, color_counts) = draws  # BasicSR: gray first.
  seen = []

  def draw(levels, exponent):
    # The rates the CDF table holds (rd.poisson_cdf_table) must be BasicSR's.
    rates = (np.asarray(levels).astype(np.float32) / np.float32(255)) * (
        2.0 ** np.asarray(exponent, np.float32))[:, None, None, None]
    expected, counts = (gray_rates, gray_counts) if rates.shape[-1] == 1 else (color_rates, color_counts)
    seen.append((rates, np.transpose(expected, (0, 2, 3, 1))))
    return jnp.asarray(np.transpose(counts, (0, 2, 3, 1)))

  ours = rd.poisson_noise(jnp.asarray(images), jnp.asarray(scale), jnp.asarray(gray),
                          jnp.ones((1, 20, 24, 1), bool), draw)
  for rates, expected in seen:  # The same rates (levels x power of two of distinct levels).
    np.testing.assert_array_equal(rates, expected)
  np.testing.assert_array_equal(np.asarray(ours), _numpy(reference))


def test_poisson_counts_are_scipys_inverse_cdf():
  from scipy import stats
  rng = np.random.default_rng(4)
  levels = rng.integers(0, 256, size=(9, 40, 40, 1)).astype(np.int32)
  levels[:, 0, :4, 0] = (0, 1, 254, 255)
  exponent = np.arange(9, dtype=np.int32)  # Every power of two, 1..256.
  uniform = rng.uniform(size=levels.shape).astype(np.float32)
  uniform[:, 1, :2, 0] = (0.0, 1 - 2 ** -24)  # The ends a float32 draw reaches.
  ours = np.asarray(rd.poisson_counts(jnp.asarray(uniform), jnp.asarray(levels),
                                      jnp.asarray(exponent)))
  rates = (levels / np.float32(255)).astype(np.float32) * 2.0 ** exponent[:, None, None, None]
  expected = stats.poisson.ppf(uniform.astype(np.float64), rates.astype(np.float64))
  # min{n: cdf(n) >= u} against min{n: u < float32(cdf(n))}: they differ only where u
  # lies within float32 rounding of a cdf value.
  inner = np.ones(levels.shape, bool)
  inner[:, 1, :2] = False
  assert np.mean(ours[inner] == expected[inner]) > 0.9999
  assert np.max(np.abs(ours - expected)[inner]) <= 1
  assert ours[levels == 0].max() == 0
  # At the ends float32 resolves (2^-24 from 1, the smallest cdf above 0) both stay in
  # the far tails scipy puts there.
  lowest, highest = ours[:, 1, 0, 0], ours[:, 1, 1, 0]
  assert np.all(lowest <= stats.poisson.ppf(1e-7, rates[:, 1, 0, 0]))
  np.testing.assert_allclose(highest, expected[:, 1, 1, 0], atol=2)
  # And as a sampler: mean and variance equal the rate (Poisson's), 2.6M draws.
  big = jnp.full((10, 512, 512, 1), 200, jnp.int32)
  draws = np.asarray(rd.poisson_counts(jax.random.uniform(jax.random.PRNGKey(0), big.shape),
                                       big, jnp.full((10,), 6, jnp.int32)))
  rate = np.float32(200 / 255) * 64
  assert abs(draws.mean() - rate) < 0.01 and abs(draws.var() / rate - 1) < 0.005


def test_jpeg_equals_diffjpeg_and_reports_libjpeg():
  diffjpeg = basicsr_reference.load('utils/diffjpeg.py')
  cv2 = import_reference('cv2')
  torch = import_reference('torch')
  from skimage import data
  photo = data.astronaut()[100:164, 150:218].astype(np.float32) / 255.0  # 64 x 68: padded
  noisy = np.random.default_rng(4).uniform(size=(64, 68, 3)).astype(np.float32)
  images = np.stack([photo, photo, noisy, photo])
  quality = np.array([30.0, 50.0, 72.5, 95.0], np.float32)
  jpeger = diffjpeg.DiffJPEG(differentiable=False)
  with torch.no_grad():
    reference = _numpy(jpeger(_torch(images), quality=torch.from_numpy(quality.copy())))
  ours = np.asarray(rd.jpeg(jnp.asarray(images), jnp.asarray(quality)))
  difference = np.abs(ours - reference)
  within = np.mean(difference <= 1 / 255 + 1e-6)
  print(f'JPEG vs DiffJPEG: {within:.5f} of values within 1/255, largest {difference.max() * 255:.2f}/255')
  assert within >= 0.999
  # DiffJPEG is not libjpeg (float DCT, no table rounding, 2x2 chroma averages): how far.
  for q in (30, 50, 95):
    bgr = np.round(photo[..., ::-1] * 255).astype(np.uint8)
    _, encoded = cv2.imencode('.jpg', bgr, [int(cv2.IMWRITE_JPEG_QUALITY), q])
    libjpeg = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    ours_q = np.asarray(rd.jpeg(jnp.asarray(photo[None]), jnp.asarray([float(q)])))[0]
    print(f'quality {q}: mean |DiffJPEG - libjpeg| {np.abs(ours_q - libjpeg).mean() * 255:.2f}/255, '
          f'PSNR between them {10 * np.log10(1 / np.mean((ours_q - libjpeg) ** 2)):.1f} dB')


def test_usm_sharpen_equals_basicsr():
  img_process = basicsr_reference.load('utils/img_process_util.py')
  from skimage import data
  images = np.stack([data.astronaut()[:64, :80], data.coffee()[100:164, 200:280]]).astype(np.float32) / 255
  sharpener = img_process.USMSharp()
  np.testing.assert_allclose(rd.usm_kernel(), sharpener.kernel[0].numpy(), atol=1e-9)
  reference = _numpy(sharpener(_torch(images)))
  np.testing.assert_allclose(np.asarray(rd.usm_sharpen(jnp.asarray(images))), reference, atol=1e-5)


def _feed_data(basicsr_modules):
  """BasicSR's `RealESRGANModel.feed_data`, compiled from its own source, with its globals."""
  import ast
  import importlib.util
  import os
  torch = import_reference('torch')
  F = import_reference('torch.nn.functional')
  deg, img_process, transforms = basicsr_modules
  root = list(importlib.util.find_spec('basicsr').submodule_search_locations)[0]
  source = open(os.path.join(root, 'models', 'realesrgan_model.py')).read()
  model_class = next(node for node in ast.parse(source).body
                     if isinstance(node, ast.ClassDef) and node.name == 'RealESRGANModel')
  function = next(node for node in model_class.body
                  if isinstance(node, ast.FunctionDef) and node.name == 'feed_data')
  # filter2D views its padded input as [1, B*C, H, W]; with torch 2.13, F.pad keeps the
  # channels-last strides DiffJPEG's output has and the view fails: make it contiguous
  # (the same values) before BasicSR's filter2D.
  namespace = dict(torch=torch, F=F,
                   filter2D=lambda img, kernel: img_process.filter2D(img.contiguous(), kernel),
                   random_add_gaussian_noise_pt=deg.random_add_gaussian_noise_pt,
                   random_add_poisson_noise_pt=deg.random_add_poisson_noise_pt,
                   paired_random_crop=transforms.paired_random_crop)
  exec(compile(ast.Module([function], []), 'realesrgan_model.py', 'exec'), namespace)
  return namespace


class _Scripted:
  """Stands in for feed_data's `random` and `np` modules: returns the scripted draws."""

  def __init__(self, draws):
    self.draws = list(draws)
    self.random = self

  def _next(self):
    return self.draws.pop(0)

  def choices(self, population, weights):
    return [self._next()]

  def choice(self, population):
    return self._next()

  def uniform(self, *bounds):
    return self._next()


@pytest.mark.parametrize('resize_first', [True, False])
@pytest.mark.slow
def test_pipeline_equals_basicsr_feed_data(tiny_config, resize_first):
  """The whole second-order pipeline (noise zeroed: its draws are tested above) against
  feed_data's own code, every per-batch draw scripted, both final orders."""
  torch = import_reference('torch')
  from skimage import data
  modules = basicsr_reference.load('data/degradations.py', 'utils/img_process_util.py',
                                   'data/transforms.py')
  diffjpeg = basicsr_reference.load('utils/diffjpeg.py')
  namespace = _feed_data(modules)
  photo = data.astronaut()
  hr = np.stack([photo[r:r + 96, c:c + 96] for r, c in [(40, 200), (200, 180), (300, 60)]])
  hr = hr.astype(np.float32) / 255.0
  config = tiny_config.degradation
  kernels = blur_kernels.batch_kernels(config, 0, 1, range(3))
  kernels[0, 2] = blur_kernels.sinc(13, 1.3)  # A final sinc on one sample at least.
  scale1, mode1, scale2, mode2, final_mode = 0.62, 'bicubic', 1.13, 'bilinear', 'area'
  draws = ['down', scale1, mode1, 0.9,  # first: resize, then Poisson (uniform() >= 0.5)
           0.1, 'up', scale2, mode2, 0.1,  # second: blur, resize, Gaussian
           0.1 if resize_first else 0.9, final_mode]
  scripted = _Scripted(draws)
  namespace.update(np=scripted, random=scripted)
  opt = dict(resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5], gray_noise_prob=0.4,
             gaussian_noise_prob=0.5, noise_range=[0, 0], poisson_scale_range=[0, 0],
             jpeg_range=[62, 62], second_blur_prob=0.8, resize_prob2=[0.3, 0.4, 0.3],
             resize_range2=[0.3, 1.2], gray_noise_prob2=0.4, gaussian_noise_prob2=0.5,
             noise_range2=[0, 0], poisson_scale_range2=[0, 0], jpeg_range2=[45, 45],
             scale=4, gt_size=96)
  model = type('Model', (), {})()
  model.is_train, model.opt, model.device = True, opt, 'cpu'
  model.jpeger = diffjpeg.DiffJPEG(differentiable=False)
  model.usm_sharpener = modules[1].USMSharp()
  model._dequeue_and_enqueue = lambda: None
  kernel = lambda i: torch.from_numpy(np.ascontiguousarray(kernels[:, i]))
  namespace['feed_data'](model, {'gt': _torch(hr), 'kernel1': kernel(0), 'kernel2': kernel(1),
                                 'sinc_kernel': kernel(2)})
  assert not scripted.draws
  reference = _numpy(model.lq)

  zeros = jnp.zeros(3, jnp.float32)
  stage = lambda scale, mode, gaussian, quality: rd.Stage(
      blur=jnp.bool_(True), resize_scale=jnp.float32(scale),
      resize_mode=jnp.int32(rd.RESIZE_MODES.index(mode)), gaussian=jnp.bool_(gaussian),
      noise_sigma=zeros, poisson_scale=zeros, gray_noise=zeros,
      noise_key=jax.random.PRNGKey(0), jpeg_quality=jnp.full(3, quality, jnp.float32))
  choices = rd.Choices(
      first=stage(scale1, mode1, False, 62.0), second=stage(scale2, mode2, True, 45.0),
      final_resize_first=jnp.bool_(resize_first),
      final_mode=jnp.int32(rd.RESIZE_MODES.index(final_mode)),
      final_jpeg_quality=jnp.full(3, 45.0, jnp.float32))
  lr, target = jax.jit(lambda *args: rd.degrade(*args, config, 4))(
      jnp.asarray(hr), jnp.asarray(kernels), choices)
  assert lr.shape == reference.shape == (3, 24, 24, 3)
  np.testing.assert_allclose(np.asarray(target), _numpy(model.gt_usm), atol=1e-5)
  difference = np.abs(np.asarray(lr) - reference)
  within = np.mean(difference <= 1 / 255 + 1e-6)
  print(f'resize_first={resize_first}: {within:.5f} of LR values within 1/255 of feed_data, '
        f'largest {difference.max() * 255:.0f}/255')
  assert within >= 0.999
  # The same images at the top-left of a larger canvas, their size traced (how a set of
  # photos of many sizes is degraded under one compile): the same LR.
  canvas = np.zeros((3, 128, 112, 3), np.float32)
  canvas[:, :96, :96] = hr
  on_canvas, _ = jax.jit(lambda hr, kernels, choices, size: rd.degrade(
      hr, kernels, choices, config, 4, size))(jnp.asarray(canvas), jnp.asarray(kernels), choices,
                                              (jnp.int32(96), jnp.int32(96)))
  assert on_canvas.shape == (3, 32, 28, 3)
  np.testing.assert_allclose(np.asarray(on_canvas)[:, :24, :24], np.asarray(lr), atol=1.01 / 255)
  assert np.mean(np.asarray(on_canvas)[:, :24, :24] == np.asarray(lr)) > 0.999


@pytest.mark.slow
def test_realesrgan_step_compiles_once_over_50_steps_of_random_scales(tiny_config):
  from jax.sharding import NamedSharding, PartitionSpec as P
  from srgan_jax import input_pipeline, train_step
  from srgan_jax.models import build
  tiny_config.degradation.kind = 'realesrgan'
  tiny_config.degradation.crop_pad_size = 48  # Degraded at 48, trained on 32x32 windows.
  mesh = train_step.make_mesh()
  batches = input_pipeline.TrainBatches(tiny_config.data, 8, 0, NamedSharding(mesh, P('data')),
                                        tiny_config.degradation)
  compiled = train_step.CompiledStep(tiny_config, build.build_models(tiny_config), mesh)
  compiled.init(jax.random.PRNGKey(0))
  rng = compiled.state.rng
  sizes = set()
  for step, batch in batches.iterate(0, 50):
    assert batch.kernels.shape == (8, 3, 21, 21) and batch.hr.shape == (8, 48, 48, 3)
    metrics = compiled(batch.hr, kernels=batch.kernels)
    choices = rd.draw_choices(jax.random.fold_in(rng, step), tiny_config.degradation, 8)
    sizes.add((int(math.floor(48 * float(choices.first.resize_scale))),
               int(12 * float(choices.second.resize_scale))))
  assert np.isfinite(float(metrics['g_loss']))
  assert len(sizes) >= 20, sizes  # Many intermediate sizes...
  assert compiled._steps[False]._cache_size() == 1  # ...one compiled step.


def test_random_pair_crops_keep_lr_and_target_aligned():
  """Each sample's window is its own, inside the image, and the target's window is the one
  over the LR's: on a target that is the LR repeated s x s, the cut target is the cut LR
  repeated."""
  from srgan_jax import train_step
  lr = jax.random.uniform(jax.random.PRNGKey(0), (64, 12, 10, 3))
  target = jnp.repeat(jnp.repeat(lr, 4, axis=1), 4, axis=2)
  cut_lr, cut_target = jax.jit(train_step.random_pair_crops, static_argnums=3)(
      jax.random.PRNGKey(1), lr, target, 8)
  assert cut_lr.shape == (64, 8, 8, 3) and cut_target.shape == (64, 32, 32, 3)
  np.testing.assert_array_equal(np.repeat(np.repeat(np.asarray(cut_lr), 4, 1), 4, 2),
                                np.asarray(cut_target))
  lr, cut_lr = np.asarray(lr), np.asarray(cut_lr)
  offsets = set()
  for i in range(64):
    found = [(t, l) for t in range(5) for l in range(3)
             if np.array_equal(lr[i, t:t + 8, l:l + 8], cut_lr[i])]
    assert len(found) == 1
    offsets.add(found[0])
  assert len(offsets) >= 10  # Drawn per sample, over the whole range.
  same = train_step.random_pair_crops(jax.random.PRNGKey(1), cut_lr, cut_target, 8)
  assert same[0] is cut_lr  # Already the crop: nothing cut.


@pytest.mark.slow
def test_clean_prob_leaves_that_share_of_samples_at_bicubic_lr(tiny_config):
  """With clean_prob p, a sample's LR is the paper's bicubic of its target with probability
  p (drawn from the step's key), else Real-ESRGAN's; the target is the same either way."""
  from srgan_jax import degradation, train_step
  tiny_config.degradation.kind, tiny_config.degradation.sharpen = 'realesrgan', False
  hr = jnp.asarray(np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3)).astype(np.uint8))
  kernels = jnp.asarray(blur_kernels.batch_kernels(tiny_config.degradation, 0, 0, range(64)))
  bicubic = np.asarray(degradation.downscale_uint8_batch(hr, 4))
  key = jax.random.PRNGKey(3)
  shares = {}
  for p in (0.0, 0.3, 1.0):
    tiny_config.degradation.clean_prob = p
    lr, target = jax.jit(functools.partial(train_step.degrade, tiny_config))(key, hr, kernels)
    np.testing.assert_allclose(np.asarray(target), np.asarray(hr) / 127.5 - 1.0, atol=1e-6)
    clean = (np.asarray(lr) == bicubic).all(axis=(1, 2, 3))
    shares[p] = clean.mean()
    if p == 0.3:
      degraded = np.asarray(lr)[~clean]
      tiny_config.degradation.clean_prob = 0.0
      real = jax.jit(functools.partial(train_step.degrade, tiny_config))(key, hr, kernels)[0]
      np.testing.assert_array_equal(np.asarray(real)[~clean], degraded)
  assert shares[0.0] == 0.0 and shares[1.0] == 1.0 and 0.15 < shares[0.3] < 0.45, shares


def test_crop_pad_size_and_clean_prob_are_checked(tiny_config, tmp_path):
  from srgan_jax import train
  tiny_config.degradation.kind = 'realesrgan'
  for bad in (30, 34):  # Smaller than the crop (32); not a multiple of the scale.
    tiny_config.degradation.crop_pad_size = bad
    with pytest.raises(ValueError, match=f'crop_pad_size \\({bad}\\) must be 0 or a multiple'):
      train.train_and_evaluate(tiny_config, str(tmp_path / str(bad)))
  tiny_config.degradation.crop_pad_size = 0
  tiny_config.degradation.clean_prob = 1.5
  with pytest.raises(ValueError, match=r'clean_prob must be in \[0, 1\], got 1.5'):
    train.train_and_evaluate(tiny_config, str(tmp_path / 'clean'))


def test_training_pair_pool_fills_then_swaps():
  from srgan_jax import train_step
  pool = {'lr': jnp.zeros((4, 1)), 'target': jnp.zeros((4, 2)), 'filled': jnp.int32(0)}
  batch = lambda v: (jnp.full((2, 1), v), jnp.full((2, 2), v))
  exchange = jax.jit(train_step.exchange_with_pool)
  for value in (1.0, 2.0):  # Filling: the batch trains as drawn and enters in order.
    pool, lr, target = exchange(pool, *batch(value), jax.random.PRNGKey(0))
    assert (np.asarray(lr) == value).all() and (np.asarray(target) == value).all()
  np.testing.assert_array_equal(np.asarray(pool['lr'])[:, 0], [1, 1, 2, 2])
  pool, lr, target = exchange(pool, *batch(3.0), jax.random.PRNGKey(5))  # Full: swap.
  assert int(pool['filled']) == 4
  trained = sorted(np.asarray(lr)[:, 0])
  assert set(trained) <= {1.0, 2.0}
  np.testing.assert_array_equal(np.asarray(target)[:, 0], np.asarray(lr)[:, 0])
  held = sorted(np.asarray(pool['lr'])[:, 0])
  assert sorted(held + trained) == [1, 1, 2, 2, 3, 3]  # Nothing lost, nothing doubled.
  config = __import__('configs.test', fromlist=['get_config']).get_config()
  config.degradation.kind, config.degradation.pool_size = 'realesrgan', 12
  with pytest.raises(ValueError, match='pool_size=12 must be a multiple of .*batch_size=8'):
    train_step.empty_pool(config)


@pytest.mark.slow
def test_realesrgan_run_killed_and_resumed_ends_bit_identical(tiny_config, tmp_path):
  """SIGKILL while checkpointing every step, resume, and compare with a run never stopped:
  the LR of every step (kernels from (seed, step, row), the rest from the step's key) and
  the training pair pool (two batches: swapping from step 3) are the same, hence the
  parameters."""
  import os
  from srgan_jax import run_folder, train
  from tests.conftest import killed_training_run, run_python
  killed = tmp_path / 'killed'
  args = killed_training_run(killed, ['--config.degradation.kind=realesrgan',
                                      '--config.degradation.pool_size=16'], log_lines=4)
  latest = max(int(s) for s in os.listdir(killed / 'checkpoints') if s.isdigit())
  final = latest + 2
  resumed = run_python([*args, f'--config.train.num_steps={final}'])
  assert resumed.returncode == 0, resumed.stderr[-3000:]

  tiny_config.eval.sets = ()
  tiny_config.degradation.kind = 'realesrgan'
  tiny_config.degradation.pool_size = 16
  tiny_config.train.num_steps = final
  tiny_config.train.image_every_steps = 0
  train.train_and_evaluate(tiny_config, str(tmp_path / 'straight'))
  (a, step_a), (b, step_b) = (run_folder.restore_raw(str(tmp_path / name)) for name in ('killed', 'straight'))
  assert step_a == step_b == final
  assert int(a['pool']['filled']) == 16 and a['pool']['target'].shape == (16, 32, 32, 3)
  for key in ('g_params', 'pool'):
    for x, y in zip(jax.tree.leaves(a[key]), jax.tree.leaves(b[key])):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_degrade_writes_the_same_set_for_a_seed_that_evaluate_scores(tmp_path, capsys):
  """`python -m srgan_jax.degrade` (in process): a set folder evaluate reads; the same seed
  gives the same files; a set of LR alone is scored by NIQE only."""
  import filecmp
  import os
  import shutil
  from skimage import data
  from srgan_jax import degrade, evaluate, images, weights
  from tests.conftest import require_shared_data
  hr = tmp_path / 'hr'
  hr.mkdir()
  images.save_png(str(hr / 'astronaut.png'), data.astronaut()[:240, :400])
  images.save_png(str(hr / 'coffee.png'), data.coffee()[:70, :83])  # Cropped to 68 x 80.
  (hr / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not an image')
  assert degrade.main([f'--data={hr}', f'--output={tmp_path}/a', '--seed=0']) == 0
  assert degrade.main([f'--data={hr}', f'--output={tmp_path}/b', '--seed=0']) == 0
  for name in ('HR/astronaut.png', 'HR/coffee.png', 'LR/X4/astronautx4.png', 'LR/X4/coffeex4.png'):
    assert filecmp.cmp(tmp_path / 'a' / name, tmp_path / 'b' / name, shallow=False), name
  manifest = json.loads((tmp_path / 'a' / 'degradation.json').read_text())
  assert manifest['seed'] == 0 and manifest['settings']['jpeg_range2'] == [30.0, 95.0]
  assert [i['lr'] for i in manifest['images']] == [[60, 100], [17, 20]]
  assert [s['image'] for s in manifest['skipped']] == ['broken.png']
  lr = images.read_rgb(str(tmp_path / 'a' / 'LR' / 'X4' / 'astronautx4.png'))
  bicubic = evaluate.degradation.resize_numpy(data.astronaut()[:240, :400], 0.25)
  assert lr.shape == bicubic.shape and np.abs(lr.astype(int) - bicubic).mean() > 2

  assert evaluate.main([f'--data={tmp_path}/a', '--method=bicubic']) == 0
  row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert row['n'] == 2 and 10 < row['psnr_y'] < 40

  lr_only = tmp_path / 'lr_only'
  (lr_only / 'LR' / 'X4').mkdir(parents=True)  # The image large enough for NIQE's blocks.
  shutil.copy(tmp_path / 'a' / 'LR' / 'X4' / 'astronautx4.png', lr_only / 'LR' / 'X4')
  assert evaluate.main([f'--data={lr_only}', '--method=bicubic']) == 1
  assert 'has LR images and no HR/' in capsys.readouterr().err
  folder = require_shared_data('metrics', 'niqe')
  cache = tmp_path / 'cache'
  weights.save(weights.converted_path('niqe_pristine', str(cache)),
               weights.read_niqe_pristine(os.path.join(folder, 'niqe_pris_params.npz')),
               'niqe_pristine')
  assert evaluate.main([f'--data={lr_only}', '--method=bicubic', '--metrics=psnr_y,niqe',
                        f'--cache_dir={cache}']) == 0
  row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert set(row) >= {'niqe'} and 'psnr_y' not in row and np.isfinite(row['niqe'])


def test_degrade_jpeg_and_noise_degrade_the_official_lr_once(tmp_path, capsys):
  """--kind=jpeg: each official LR file through Pillow's JPEG at the quality, 4:2:0;
  --kind=noise: LR + Gaussian noise of sigma, rounded, from (seed, index); HR as it was;
  a set evaluate scores; bad values stopped before anything is written."""
  import io
  from PIL import Image
  from skimage import data
  from srgan_jax import degradation, degrade, evaluate, images
  source = tmp_path / 'Set'
  (source / 'HR').mkdir(parents=True)
  (source / 'LR_bicubic' / 'X4').mkdir(parents=True)
  hr = data.astronaut()[:160, :200]
  images.save_png(str(source / 'HR' / 'astronaut.png'), hr)
  official = degradation.resize_numpy(hr, 0.25)
  official[0, 0] = (1, 2, 3)  # Tells the official file from a bicubic made here.
  images.save_png(str(source / 'LR_bicubic' / 'X4' / 'astronautx4.png'), official)
  images.save_png(str(source / 'HR' / 'coffee.png'), data.coffee()[:64, :80])  # No LR file.

  assert degrade.main([f'--data={source}', f'--output={tmp_path}/jpeg', '--kind=jpeg',
                       '--quality=30']) == 0
  buffer = io.BytesIO()
  Image.fromarray(official).save(buffer, format='JPEG', quality=30, subsampling='4:2:0')
  expected = np.asarray(Image.open(buffer).convert('RGB'))
  got = images.read_rgb(str(tmp_path / 'jpeg' / 'LR' / 'X4' / 'astronautx4.png'))
  np.testing.assert_array_equal(got, expected)
  assert np.abs(got.astype(int) - official).mean() > 1  # Blocks, not the file itself.
  np.testing.assert_array_equal(images.read_rgb(str(tmp_path / 'jpeg' / 'HR' / 'astronaut.png')), hr)
  manifest = json.loads((tmp_path / 'jpeg' / 'degradation.json').read_text())
  assert (manifest['kind'], manifest['quality'], manifest['subsampling']) == ('jpeg', 30, '4:2:0')
  assert [i['lr'] for i in manifest['images']] == [[40, 50], [16, 20]]
  coffee = images.read_rgb(str(tmp_path / 'jpeg' / 'LR' / 'X4' / 'coffeex4.png'))
  assert coffee.shape == (16, 20, 3)  # From MATLAB bicubic of HR, where no LR file is.

  for run in ('a', 'b'):
    assert degrade.main([f'--data={source}', f'--output={tmp_path}/noise_{run}', '--kind=noise',
                         '--sigma=10', '--seed=3']) == 0
  noisy = [images.read_rgb(str(tmp_path / f'noise_{run}' / 'LR' / 'X4' / 'astronautx4.png'))
           for run in ('a', 'b')]
  np.testing.assert_array_equal(noisy[0], noisy[1])  # The same seed, the same draws.
  residual = noisy[0].astype(float) - official
  inside = (official > 40) & (official < 215)  # Away from the clipping.
  assert abs(residual[inside].mean()) < 0.5 and 9 < residual[inside].std() < 11
  assert np.array_equal(residual, np.round(residual))
  assert json.loads((tmp_path / 'noise_a' / 'degradation.json').read_text())['sigma'] == 10

  capsys.readouterr()
  scores = {}
  for name in ('jpeg', 'noise_a'):
    assert evaluate.main([f'--data={tmp_path}/{name}', '--method=bicubic']) == 0
    scores[name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores[name]['n'] == 2
  for bad in (['--kind=jpeg', '--quality=0'], ['--kind=noise', '--sigma=-1']):
    with pytest.raises(SystemExit):
      degrade.main([f'--data={source}', f'--output={tmp_path}/bad', *bad])
  assert not (tmp_path / 'bad').exists()


def test_real_configs_and_a_wrong_kind():
  from configs import real_srgan_291, real_srresnet_291
  from srgan_jax import train, train_step
  for module in (real_srresnet_291, real_srgan_291):
    config = module.get_config()
    assert config.degradation.kind == 'realesrgan'
    assert config.degradation.crop_pad_size > config.data.hr_crop_size
    train.validate_config(config)  # crop_pad_size a multiple of the scale.
  # Stage 1 for photos: the shipped SRResNet fine-tuned on the milder, photo-like mix, with
  # the pixel loss; stage 2 goes on from it with Real-ESRGAN's losses, the same inputs.
  stage1, stage2 = real_srresnet_291.get_config(), real_srgan_291.get_config()
  assert (stage1.init_from, stage1.loss.content, stage1.loss.adversarial_weight) == (
      'srresnet', 'pixel', 0.0)
  assert stage1.degradation.clean_prob > 0
  assert stage1.degradation.resize_prob == stage1.degradation.resize_prob2 == (0.0, 0.0, 1.0)
  assert stage2.degradation == stage1.degradation
  assert (stage2.init_from, stage2.loss.content, stage2.loss.vgg_layer_weights) == (
      'real_srresnet', 'vgg12,vgg22,vgg34,vgg44,vgg54', (0.1, 0.1, 1.0, 1.0, 1.0))
  assert (stage2.loss.criterion, stage2.loss.vgg_after_activation, stage2.loss.pixel_weight,
          stage2.loss.adversarial_weight) == ('l1', False, 0.5, 0.1)
  assert stage2.loss.phase_weight > 0 and stage1.loss.phase_weight == 0
  config = real_srresnet_291.get_config()
  hr = jnp.zeros((2, 32, 32, 3), jnp.uint8)
  with pytest.raises(ValueError, match='needs each batch.s blur kernels'):
    train_step.degrade(config, jax.random.PRNGKey(0), hr, None)
  config.degradation.kind = 'jpeg'
  with pytest.raises(ValueError, match="kind must be 'bicubic' or 'realesrgan', got 'jpeg'"):
    train_step.degrade(config, jax.random.PRNGKey(0), hr, None)


@pytest.mark.slow
def test_both_stages_for_photos_resume_bit_identical(tiny_config, tmp_path):
  """configs/real_srresnet_291.py and configs/real_srgan_291.py at the tiny model's size:
  stopped at step 2 and resumed, each ends where a run never stopped does. Stage 2 starts
  from stage 1's run folder, as it starts from stage 1's model file at full size."""
  from configs import real_srgan_291, real_srresnet_291
  from srgan_jax import train
  from tests.conftest import train_straight_and_resumed
  start = ''
  for name, module in (('stage1', real_srresnet_291), ('stage2', real_srgan_291)):
    config = module.get_config()
    for group in ('generator', 'discriminator', 'data'):
      config[group] = tiny_config[group]
    config.degradation.crop_pad_size = 48
    config.vgg.allow_random_weights = True
    config.init_from = start
    config.eval.sets = ()
    config.train.update(batch_size=4, num_steps=4, checkpoint_every_steps=2,
                        log_every_steps=1, image_every_steps=0)
    straight, resumed = train_straight_and_resumed(config, str(tmp_path / name), stop_at=2)
    for a, b in zip(jax.tree.leaves(jax.device_get(straight)),
                    jax.tree.leaves(jax.device_get(resumed))):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert bool(straight.d_params) == (name == 'stage2')
    start = str(tmp_path / name / 'straight')
