"""Writes a degraded LR set for any HR folder, to evaluate on the inputs people meet.

  python -m srgan_jax.degrade --data=../shared/data/sr_benchmarks/Set14 --seed=0 \
      --output=sets/Set14_realesrgan
  python -m srgan_jax.degrade --data=../shared/data/sr_benchmarks/Set14 --kind=jpeg \
      --quality=50 --output=sets/Set14_jpeg50
  python -m srgan_jax.degrade --data=../shared/data/sr_benchmarks/Set14 --kind=noise \
      --sigma=10 --output=sets/Set14_noise10

--kind=realesrgan (the default): each HR image goes through Real-ESRGAN's degradation
(`real_degradation`, the settings of `config.degradation`: `real_degradation.DEFAULTS`)
with draws that depend on (seed, image index) alone: the same command writes the same
files. HR is not sharpened unless --sharpen (it is the reference the SR is scored
against). All images share one compile: each sits at the top-left of one canvas, its size
traced.

--kind=jpeg and --kind=noise degrade the set's LR files (LR_bicubic/X<s>/, the official
ones; where a set has none, MATLAB bicubic of HR) once, as photos from phones and the web
are degraded: JPEG by Pillow's encoder at --quality with 4:2:0 chroma subsampling (as most
cameras and sites write it), or Gaussian noise of --sigma on 0..255, rounded (its draws
from (seed, image index)).

The output is a set folder that `python -m srgan_jax.evaluate --data=DIR` reads:
HR/NAME.png (HR cropped to a multiple of the scale), LR/X<s>/NAMEx<s>.png, and
degradation.json with what was done, the seed and each image's sizes.
"""

import argparse
import functools
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import PIL
from PIL import Image

from srgan_jax import (blur_kernels, data_sources, degradation, images as image_io,
                       real_degradation)

FORMAT = 'srgan_jax.degraded_set/1'


def parse_setting(text: str, settings: dict) -> tuple[str, object]:
  """'name=value' -> (name, value) with value parsed like the default's type."""
  name, sep, value = text.partition('=')
  if not sep or name not in settings:
    raise ValueError(f'--set {text!r}: expected NAME=VALUE with NAME one of '
                     f'{", ".join(sorted(settings))}')
  default = settings[name]
  try:
    if isinstance(default, bool):
      if value.lower() not in ('true', 'false'):
        raise ValueError(value)
      return name, value.lower() == 'true'
    if isinstance(default, tuple):
      parsed = tuple(float(v) for v in value.strip('()').split(',') if v.strip())
      if len(parsed) != len(default):
        raise ValueError(value)
      return name, parsed
    return name, float(value)
  except ValueError:
    raise ValueError(f'--set {text!r}: {value!r} is not a value like {default!r}') from None


@functools.lru_cache(maxsize=4)
def _compiled(settings_json: str, scale: int):
  """(canvas [1, H, W, 3], kernels [1, 3, 21, 21], key, height, width) -> LR uint8 canvas;
  jitted once per settings (a later set of the same canvas reuses the compile)."""
  settings = json.loads(settings_json)

  @jax.jit
  def one(canvas, kernels, key, height, width):
    choices = real_degradation.draw_choices(key, settings, 1)
    lr, _ = real_degradation.degrade(canvas, kernels, choices, settings, scale, (height, width))
    return jnp.round(lr[0] * 255).astype(jnp.uint8)

  return one


def _read_hr(data: str, scale: int) -> tuple[str, list, list]:
  """(root, [(name, HR cropped to a multiple of `scale`)], skipped) of `data` (a folder,
  or a set folder holding HR/). Unreadable and too small images are skipped, named."""
  root = data[len('folder:'):] if data.startswith('folder:') else data
  hr_dir = os.path.join(root, 'HR')
  paths = data_sources.list_source(hr_dir if os.path.isdir(hr_dir) else root)
  if not paths:
    raise ValueError(f'no images in {data}')
  images, skipped = [], []
  for path in paths:
    try:
      image = image_io.read_rgb(path)
    except (OSError, ValueError) as e:
      skipped.append({'image': os.path.basename(path), 'reason': str(e)})
      continue
    height, width = image.shape[0] // scale * scale, image.shape[1] // scale * scale
    if min(height, width) < 4 * scale:
      skipped.append({'image': os.path.basename(path), 'reason': f'smaller than {4 * scale} px'})
      continue
    images.append((os.path.splitext(os.path.basename(path))[0], image[:height, :width]))
  if not images:
    raise ValueError(f'no usable image in {data}: {skipped}')
  return root, images, skipped


def _write_set(output: str, scale: int, pairs, manifest: dict) -> dict:
  """Writes HR/, LR/X<s>/ and degradation.json (`manifest` plus each image's sizes) from
  (name, index, HR, LR) tuples; returns the manifest."""
  lr_dir = os.path.join(output, 'LR', f'X{scale}')
  hr_dir = os.path.join(output, 'HR')
  os.makedirs(lr_dir, exist_ok=True)
  os.makedirs(hr_dir, exist_ok=True)
  written = []
  for name, index, hr, lr in pairs:
    image_io.save_png(os.path.join(lr_dir, f'{name}x{scale}.png'), lr)
    image_io.save_png(os.path.join(hr_dir, f'{name}.png'), hr)
    written.append({'image': name, 'index': index, 'hr': list(hr.shape[:2]),
                    'lr': list(lr.shape[:2])})
  manifest = {'format': FORMAT, **manifest, 'images': written}
  with open(os.path.join(output, 'degradation.json'), 'w') as f:
    json.dump(manifest, f, indent=1)
  return manifest


def degrade_folder(data: str, output: str, seed: int, scale: int, settings: dict) -> dict:
  """Real-ESRGAN's degradation of every HR image of `data` (see the module's docstring);
  returns the manifest written to output/degradation.json."""
  root, images, skipped = _read_hr(data, scale)
  # One canvas for all (a multiple of 16 LR pixels): one compile for the whole set.
  block = 16 * scale
  canvas_h = -(-max(i.shape[0] for _, i in images) // block) * block
  canvas_w = -(-max(i.shape[1] for _, i in images) // block) * block

  one = _compiled(json.dumps(settings, sort_keys=True), scale)

  def pairs():
    for index, (name, hr) in enumerate(images):
      canvas = np.zeros((1, canvas_h, canvas_w, 3), np.float32)
      canvas[0, :hr.shape[0], :hr.shape[1]] = hr / 255.0
      kernels = blur_kernels.batch_kernels(settings, seed, index, [0])
      key = jax.random.fold_in(jax.random.PRNGKey(seed), index)
      lr = np.asarray(one(canvas, kernels, key, hr.shape[0], hr.shape[1]))
      yield name, index, hr, lr[:hr.shape[0] // scale, :hr.shape[1] // scale]

  return _write_set(output, scale, pairs(), {
      'kind': 'realesrgan', 'source': os.path.abspath(root), 'seed': seed, 'scale': scale,
      'settings': settings, 'skipped': skipped})


SIMPLE_KINDS = ('jpeg', 'noise')


def degrade_lr(lr: np.ndarray, kind: str, amount: float, seed: int, index: int) -> np.ndarray:
  """[h, w, 3] uint8 LR -> the same, degraded once: kind 'jpeg' (`amount`: Pillow's
  quality, 4:2:0 chroma), or 'noise' (`amount`: Gaussian sigma on 0..255, rounded and
  clipped; its draws from (seed, index))."""
  if kind == 'jpeg':
    buffer = io.BytesIO()
    Image.fromarray(lr).save(buffer, format='JPEG', quality=int(amount), subsampling='4:2:0')
    return np.asarray(Image.open(buffer).convert('RGB'))
  if kind == 'noise':
    noise = np.random.default_rng([seed, index]).normal(0.0, amount, lr.shape)
    return np.clip(np.round(lr + noise), 0, 255).astype(np.uint8)
  raise ValueError(f'unknown kind {kind!r}; one of {SIMPLE_KINDS}')


def degrade_lr_files(data: str, output: str, kind: str, amount: float, seed: int,
                     scale: int) -> dict:
  """`degrade_lr` of each LR file of `data` (LR_bicubic/X<s>/NAMEx<s>.png; MATLAB bicubic
  of HR where a set has none); returns the manifest written to output/degradation.json."""
  root, images, skipped = _read_hr(data, scale)
  official = os.path.join(root, 'LR_bicubic', f'X{scale}')

  def pairs():
    for index, (name, hr) in enumerate(images):
      path = os.path.join(official, f'{name}x{scale}.png')
      lr = image_io.read_rgb(path) if os.path.exists(path) else degradation.resize_numpy(
          hr, 1.0 / scale)
      if lr.shape[:2] != (hr.shape[0] // scale, hr.shape[1] // scale):
        raise ValueError(f'{path}: {lr.shape[:2]} x{scale} does not match HR {hr.shape[:2]}')
      yield name, index, hr, degrade_lr(lr, kind, amount, seed, index)

  what = ({'quality': int(amount), 'subsampling': '4:2:0',
           'encoder': f'Pillow {PIL.__version__}'} if kind == 'jpeg' else {'sigma': amount})
  lr_source = (f'{official} (MATLAB bicubic of HR for images without a file there)'
               if os.path.isdir(official) else 'MATLAB bicubic of HR')
  return _write_set(output, scale, pairs(), {
      'kind': kind, **what, 'lr_source': lr_source, 'source': os.path.abspath(root),
      'seed': seed, 'scale': scale, 'skipped': skipped})


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.degrade', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data', required=True, help='HR folder, or a set folder holding HR/')
  parser.add_argument('--output', required=True, help='the set folder to write')
  parser.add_argument('--kind', choices=('realesrgan',) + SIMPLE_KINDS, default='realesrgan',
                      help="realesrgan: Real-ESRGAN's degradation of HR; jpeg, noise: once, "
                           "of the set's LR files")
  parser.add_argument('--quality', type=int, default=50, help='--kind=jpeg: 1..100')
  parser.add_argument('--sigma', type=float, default=10.0, help='--kind=noise: on 0..255')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--scale', type=int, default=4)
  parser.add_argument('--sharpen', action='store_true',
                      help='USM-sharpen HR before degrading, as training does (off: HR is '
                           'the reference the SR is scored against)')
  parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                      help='change a setting of real_degradation.DEFAULTS, e.g. '
                           'jpeg_range=50,60; repeatable')
  args = parser.parse_args(argv)
  settings = dict(real_degradation.DEFAULTS, sharpen=args.sharpen)
  try:
    settings.update(parse_setting(text, settings) for text in args.set)
  except ValueError as e:
    parser.error(str(e))
  if not os.path.exists(args.data[len('folder:'):] if args.data.startswith('folder:') else args.data):
    parser.error(f'--data={args.data}: no such folder')
  if args.kind == 'jpeg' and not 1 <= args.quality <= 100:
    parser.error(f'--quality={args.quality}: Pillow takes 1 to 100')
  if args.kind == 'noise' and args.sigma < 0:
    parser.error(f'--sigma={args.sigma}: must be at least 0')
  try:
    if args.kind == 'realesrgan':
      manifest = degrade_folder(args.data, args.output, args.seed, args.scale, settings)
    else:
      manifest = degrade_lr_files(args.data, args.output, args.kind,
                                  args.quality if args.kind == 'jpeg' else args.sigma,
                                  args.seed, args.scale)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  for item in manifest['skipped']:
    print(f'skipped {item["image"]}: {item["reason"]}', file=sys.stderr)
  print(f'{len(manifest["images"])} images degraded ({args.kind}, seed {args.seed}) into '
        f'{args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
