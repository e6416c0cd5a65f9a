import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srgan_jax import upscale
from srgan_jax.models import Generator


def _random_upscaler(**kwargs):
  generator = Generator(num_blocks=2, features=8, scale=4)
  variables = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  # Non-trivial BN statistics, as after training.
  variables = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.3 if 'mean' in str(p[-1]) else x, variables)
  return upscale.Upscaler(generator, variables, **kwargs)


def test_tiled_equals_untiled_when_overlap_covers_receptive_field():
  radius = upscale.receptive_field_radius(2, 4)
  image = np.random.default_rng(0).integers(0, 256, (37, 50, 3)).astype(np.uint8)
  whole = _random_upscaler()(image)
  tiled = _random_upscaler(tile=16, tile_overlap=radius)(image)
  assert tiled.shape == whole.shape == (148, 200, 3)
  assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1


def test_tiles_without_enough_overlap_differ():
  """The check above can fail: too little context changes the output."""
  image = np.random.default_rng(0).integers(0, 256, (37, 50, 3)).astype(np.uint8)
  whole = _random_upscaler()(image)
  tiled = _random_upscaler(tile=16, tile_overlap=1)(image)
  assert np.abs(tiled.astype(int) - whole.astype(int)).max() > 1


def test_negative_tile_settings_are_refused():
  # A negative tile once skipped every tile and returned uninitialised memory.
  for kwargs, name in (({'tile': -3}, 'tile'), ({'tile': 16, 'tile_overlap': -1}, 'tile_overlap'),
                       ({'bucket': -16}, 'bucket')):
    with pytest.raises(ValueError, match=f'^{name} must be at least 0'):
      _random_upscaler(**kwargs)


def test_bucketed_padding_keeps_shape():
  image = np.random.default_rng(1).integers(0, 256, (21, 30, 3)).astype(np.uint8)
  out = _random_upscaler(bucket=16)(image)
  assert out.shape == (84, 120, 3)


def test_receptive_field_of_paper_generator():
  # conv_in 4 + 16 blocks * 2 + conv_body 1 = 37 LR px; upsampling convs 1 + 0.5;
  # conv_out 4 HR px = 1 LR px: 39.5, rounded up.
  assert upscale.receptive_field_radius(16, 4) == 40


def test_bucket_padding_only_touches_the_far_border():
  """Padding to a bucket changes only pixels within the receptive field of the padded edge."""
  image = np.random.default_rng(2).integers(0, 256, (40, 45, 3)).astype(np.uint8)
  exact = _random_upscaler()(image).astype(int)
  padded = _random_upscaler(bucket=32)(image).astype(int)
  r, s = upscale.receptive_field_radius(2, 4), 4
  assert np.abs(padded - exact)[:(40 - r) * s, :(45 - r) * s].max() <= 1
  assert np.abs(padded - exact).max() > 1  # and it does touch the border (the check can fail)


def test_training_evaluator_compiles_each_bucket_once(tiny_config, tmp_path):
  from srgan_jax import evaluate
  from srgan_jax.models import build
  tiny_config.eval.sets = ('skimage:astronaut,coffee',)
  generator = build.build_models(tiny_config).generator
  evaluator = evaluate.TrainingEvaluator(tiny_config.eval, generator, str(tmp_path))
  variables = generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  first = evaluator.run(variables, 1)
  variables = {**variables, 'params': jax.tree.map(lambda p: p * 0.5, variables['params'])}
  second = evaluator.run(variables, 2)
  # Measured and reported, nothing kept: the loop decides what goes in best/.
  assert sorted(os.listdir(tmp_path)) == ['eval']
  # astronaut 128x128 and coffee 100x150 LR: two buckets, compiled in the first run only.
  assert evaluator.upscaler._apply._cache_size() == 2
  assert first['eval/skimage_astronaut_coffee/psnr_y'] != second['eval/skimage_astronaut_coffee/psnr_y']


def test_output_paths_keep_sub_folders_and_refuse_clashes(tmp_path):
  for name in ('photos/2019/a.jpg', 'photos/2020/a.jpg', 'photos/b.png', 'clash/c.png',
               'clash/c.jpg'):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).touch()
  photos, b = str(tmp_path / 'photos'), str(tmp_path / 'photos' / 'b.png')
  pairs = upscale.output_paths([photos, b, b], 'out', 4)  # b.png named three times.
  assert sorted(pairs) == sorted([(b, 'out/b_x4.png'),
                                  (f'{photos}/2019/a.jpg', 'out/2019/a_x4.png'),
                                  (f'{photos}/2020/a.jpg', 'out/2020/a_x4.png')])
  with pytest.raises(ValueError, match=r'same output file: .*clash/c\.(jpg|png) and .*clash/c\.'):
    upscale.output_paths([str(tmp_path / 'clash')], 'out', 4)
  # Results written inside the input folder are not read back as inputs on a rerun.
  (tmp_path / 'photos' / 'out').mkdir()
  (tmp_path / 'photos' / 'out' / 'b_x4.png').touch()
  again = upscale.output_paths([photos], f'{photos}/out', 4)
  assert sorted(again) == sorted([(b, f'{photos}/out/b_x4.png'),
                                  (f'{photos}/2019/a.jpg', f'{photos}/out/2019/a_x4.png'),
                                  (f'{photos}/2020/a.jpg', f'{photos}/out/2020/a_x4.png')])


@pytest.mark.slow
def test_a_12_megapixel_input_upscales_in_tiles_under_a_memory_cap():
  """4000x3000 LR to 16000x12000 under a 3 GiB address-space cap: the input and the uint8
  output (0.6 GB) are the only image-sized arrays. An image-sized float32 SR with one
  float temporary beside it, as the upscaler once kept, would not fit. Tiles of 128: XLA's
  CPU convolution asks for a workspace that grows with the window (7.9 GB at 536x536,
  refused under the cap on some machines), which no tile-streaming design avoids."""
  from tests.conftest import run_python
  cap_gib, (h, w) = 3.0, (3000, 4000)
  assert 2 * (h * 4) * (w * 4) * 3 * 4 > cap_gib * 2**30
  script = f'''
import resource
resource.setrlimit(resource.RLIMIT_AS, ({int(cap_gib * 2**30)}, {int(cap_gib * 2**30)}))
import jax, jax.numpy as jnp, numpy as np
from srgan_jax.models import Generator
from srgan_jax.upscale import Upscaler
g = Generator(num_blocks=2, features=8)
v = g.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
image = np.random.default_rng(0).integers(0, 256, ({h}, {w}, 3), np.uint8)
out = Upscaler(g, v, tile=128, tile_overlap=12)(image)
window = Upscaler(g, v)(image[1000:1040, 2000:2040])  # The same pixels, untiled.
inner = np.abs(out[4000 + 64:4160 - 64, 8000 + 64:8160 - 64].astype(int)
               - window[64:-64, 64:-64].astype(int)).max()
import json
print(json.dumps({{'shape': out.shape, 'dtype': str(out.dtype), 'inner': int(inner),
                  'maxrss_kib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
'''
  result = run_python(['-c', script], timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  print(report)
  assert report['shape'] == [12000, 16000, 3] and report['dtype'] == 'uint8'
  assert report['inner'] <= 1  # Tiles keep the untiled result away from the window's edges.
  # The cap is the bound (the process dies past it). Peak RSS is printed for the record
  # only: Linux counts the forking parent's pages in a child's ru_maxrss, so under
  # pytest's workers it reads their size (3 GiB and more), not this run's (1.44 GB alone).
  print(f'peak RSS {report["maxrss_kib"] / 2**20:.2f} GiB under a {cap_gib} GiB cap')


def test_memory_errors_retry_with_smaller_tiles_then_fail_that_image_only(tmp_path, monkeypatch):
  """The first of three images runs out of memory at every tile size: it is named, the
  other two are written, the run ends with status 1 and the list of failures."""
  from PIL import Image
  tiles = []
  call = upscale.Upscaler.__call__

  def tight_memory(self, image, tile=None, out=None):
    if image.shape[0] == 300:  # The tall first image fails at every tile size.
      tiles.append(tile)
      raise MemoryError('cannot allocate')
    return call(self, image, tile, out)

  monkeypatch.setattr(upscale.Upscaler, '__call__', tight_memory)
  monkeypatch.setattr(upscale, 'load_upscaler', lambda *a, **k: _random_upscaler(tile=256))
  (tmp_path / 'in').mkdir()
  rng = np.random.default_rng(0)
  for name, shape in (('a_tall.png', (300, 40, 3)), ('b.png', (20, 24, 3)), ('c.png', (16, 16, 3))):
    Image.fromarray(rng.integers(0, 256, shape).astype(np.uint8)).save(tmp_path / 'in' / name)
  status = upscale.main(['--workdir=unused', str(tmp_path / 'in'), f'--output={tmp_path / "out"}'])
  assert status == 1
  assert sorted(os.listdir(tmp_path / 'out')) == ['b_x4.png', 'c_x4.png']
  assert tiles == [256, 128, 64, 32]  # Halved down to the floor, then given up.
  assert len([p for p in os.listdir(tmp_path / 'in')]) == 3  # Inputs untouched.


def test_an_output_too_large_to_allocate_fails_at_once_naming_its_bytes():
  """10000x10000 LR under a 3 GiB address-space cap: the 40000x40000 output (4.8 GB) can
  never be allocated, so no tile size is tried; the error names the bytes it needs."""
  from tests.conftest import run_python
  script = '''
import resource
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
import jax, jax.numpy as jnp, numpy as np
from srgan_jax import upscale
from srgan_jax.models import Generator
g = Generator(num_blocks=2, features=8)
upscaler = upscale.Upscaler(g, g.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))), tile=256)
calls = []
upscaler._run = lambda window: calls.append(window.shape)
try:
  upscale.upscale_within_memory(upscaler, np.zeros((10000, 10000, 3), np.uint8), 'huge.png')
except upscale.OutOfMemoryError as e:
  print('windows run:', len(calls))
  print(e)
'''
  result = run_python(['-c', script], timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'windows run: 0' in result.stdout
  assert ('huge.png: the 40000x40000 output needs 4,800,000,000 bytes (4.47 GiB), which '
          'cannot be allocated; smaller tiles do not change that') in result.stdout


def test_error_messages_name_the_path_once_and_an_empty_folder_is_an_error(tmp_path, capsys,
                                                                          monkeypatch):
  monkeypatch.setattr(upscale, 'load_upscaler', lambda *a, **k: _random_upscaler())
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'broken.png').write_bytes(b'\x89PNG not really')
  assert upscale.main(['--workdir=unused', str(tmp_path / 'in'),
                       f'--output={tmp_path / "out"}']) == 1
  err = capsys.readouterr().err
  assert err.count(str(tmp_path / 'in' / 'broken.png')) == 2  # Its error line, then the list.
  assert f'failed: {tmp_path / "in" / "broken.png"}: cannot decode' in err
  (tmp_path / 'empty').mkdir()
  with pytest.raises(SystemExit) as stop:
    upscale.main(['--workdir=unused', str(tmp_path / 'empty'), f'--output={tmp_path / "o2"}'])
  assert stop.value.code == 2
  assert f'no images in {tmp_path / "empty"}' in capsys.readouterr().err


def test_sixteen_bit_inputs_are_upscaled_and_written_at_16_bits(tmp_path, monkeypatch):
  """A 16-bit RGB PNG is upscaled from all 16 bits and written as a 16-bit PNG; 16-bit
  gray + alpha stays 16-bit gray + alpha; 8-bit files stay 8-bit."""
  from srgan_jax import images
  from tests.conftest import png_header, write_png16
  monkeypatch.setattr(upscale, 'load_upscaler', lambda *a, **k: _random_upscaler(tile=16))
  rng = np.random.default_rng(0)
  deep = rng.integers(0, 65536, (20, 24, 3)).astype(np.uint16)
  (tmp_path / 'in').mkdir()
  write_png16(tmp_path / 'in' / 'deep.png', deep)
  write_png16(tmp_path / 'in' / 'la.png', np.dstack([deep[..., 0], np.full((20, 24), 40000)]))
  from PIL import Image
  shallow = np.round(deep / 257.0).astype(np.uint8)
  Image.fromarray(shallow).save(tmp_path / 'in' / 'shallow.png')
  assert upscale.main(['--workdir=unused', str(tmp_path / 'in'),
                       f'--output={tmp_path / "out"}', '--tile=16']) == 0
  out = tmp_path / 'out'
  assert png_header(out / 'deep_x4.png') == (16, 2)
  assert png_header(out / 'la_x4.png') == (16, 4)
  assert png_header(out / 'shallow_x4.png') == (8, 2)
  sr16 = images.decode(str(out / 'deep_x4.png'), keep_16_bits=True).rgb
  np.testing.assert_array_equal(sr16, _random_upscaler(tile=16)(deep))
  assert sr16.dtype == np.uint16 and sr16.shape == (80, 96, 3)
  assert np.mean(sr16 % 257 != 0) > 0.9  # Not 8-bit values widened: the low byte is used.
  # The same picture at 8 bits gives the same result to within input quantisation.
  sr8 = images.decode(str(out / 'shallow_x4.png')).rgb.astype(np.float64)
  assert np.abs(sr16 / 257.0 - sr8).max() <= 3
  la = images.decode(str(out / 'la_x4.png'), keep_16_bits=True)
  assert la.is_gray and la.rgb.dtype == np.uint16 and np.all(la.alpha == 40000)
