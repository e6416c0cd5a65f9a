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
