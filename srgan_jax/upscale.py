"""Upscaling with a trained generator: a Python API and a command line.

API (needs only the run folder: its config.json and checkpoints/):

  from srgan_jax.upscale import load_upscaler
  upscaler = load_upscaler('runs/srgan')          # latest checkpoint, EMA params
  sr = upscaler(image)                             # [H, W, 3] uint8 -> [4H, 4W, 3] uint8
                                                   # (uint16 -> uint16 likewise)

Command line:

  python -m srgan_jax.upscale photo.jpg          # the pretrained SRResNet, into upscaled/
  python -m srgan_jax.upscale (--workdir=runs/srgan | --model=srgan.npz | --model=srgan_mse) \
      photos/ a.png --output=out/ [--tile=256 --tile_overlap=48] [--dtype=bfloat16] [--overwrite]

Tiling: the image is cut into tiles of `tile` LR pixels; each is upscaled with
`tile_overlap` LR pixels of context on every side (windows are shifted to stay inside
the image, so every window has one shape and compiles once) and only its centre is
kept, written as uint8 into the output at once. An image that runs out of memory is
retried with tiles half as large, down to MIN_TILE; the command line then reports it
and goes on with the others. With an overlap of at least the generator's receptive-field radius (about
40 LR pixels for 16 blocks: see `receptive_field_radius`) the result equals the
untiled one up to float rounding.
"""

import argparse
import math
import os
import sys
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from srgan_jax import degradation, images as image_io, model_file, run_folder
from srgan_jax.models import Generator, build
from srgan_jax.models.generator import OUTPUT_CONVS


def receptive_field_radius(num_blocks: int, scale: int) -> int:
  """LR pixels on each side that influence one output pixel (rounded up)."""
  lr_radius = 4 + 2 * num_blocks + 1  # conv_in 9x9, 2 conv3x3 per block, conv_body
  hr_radius = 0.0
  size = 1
  for _ in range(int(round(math.log2(scale)))):
    hr_radius += 1.0 / size  # a 3x3 conv at the current resolution
    size *= 2
  hr_radius += 4.0 / size  # conv_out 9x9 at the output resolution
  return int(math.ceil(lr_radius + hr_radius))


def upscale_in_tiles(run_window: Callable[[np.ndarray], np.ndarray], lr: np.ndarray,
                     scale: int, tile: int, overlap: int,
                     out: Optional[np.ndarray] = None) -> np.ndarray:
  """[H, W, C] -> [sH, sW, C] of lr's type, a window at a time (the tiling of the docstring).

  `run_window` maps one [h, w, C] window to [sh, sw, C]; every window has one shape
  (min(H, tile + 2 overlap) by min(W, ...)), so a compiled program serves them all, and
  any runtime can be plugged in (the benchmarks run ONNX Runtime and PyTorch through it).
  `out`, if given, is the [sH, sW, C] array to fill (see `upscale_within_memory`).
  """
  h, w = lr.shape[:2]
  s = scale
  win_h, win_w = min(h, tile + 2 * overlap), min(w, tile + 2 * overlap)
  if out is None:
    out = np.empty((h * s, w * s) + lr.shape[2:], lr.dtype)
  for y0 in range(0, h, tile):
    for x0 in range(0, w, tile):
      y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
      wy = min(max(y0 - overlap, 0), h - win_h)  # window start, kept inside the image
      wx = min(max(x0 - overlap, 0), w - win_w)
      sr = run_window(lr[wy:wy + win_h, wx:wx + win_w])
      out[y0 * s:y1 * s, x0 * s:x1 * s] = sr[(y0 - wy) * s:(y1 - wy) * s,
                                             (x0 - wx) * s:(x1 - wx) * s]
  return out


class Upscaler:
  """Maps [H, W, 3] uint8 (or uint16) images to [sH, sW, 3] of the same type.

  The compiled program takes an integer window and returns it upscaled in the same
  type, so the only image-sized arrays on the host are the input and the output: each
  tile goes into the preallocated output as soon as it is computed. A 16-bit image is
  read and written at its full range (the generator sees value / 65535).

  Args:
    generator: the Flax module.
    variables: {'params', 'batch_stats'} (EMA params when the run kept them).
    tile: LR tile side; 0 = the whole image at once.
    tile_overlap: LR context pixels on each side of a tile.
    bucket: pad LR (by edge reflection) up to a multiple of this before running, so
      that images of similar size share one compiled program; 0 = exact shapes.
    step: the checkpoint's step (for reports).
  """

  def __init__(self, generator: Generator, variables, tile: int = 0, tile_overlap: int = 48,
               bucket: int = 0, step: Optional[int] = None):
    for name, value in (('tile', tile), ('tile_overlap', tile_overlap), ('bucket', bucket)):
      if value < 0:
        raise ValueError(f'{name} must be at least 0, got {value}')
    self.generator, self.scale, self.step = generator, generator.scale, step
    self.variables = jax.device_put(variables)
    self.tile, self.tile_overlap, self.bucket = tile, tile_overlap, bucket

    def upscale_integers(variables, lr):  # [1, h, w, 3] uint8|uint16 -> [1, sh, sw, 3] same
      top = float(jnp.iinfo(lr.dtype).max)  # Compiled once per input type.
      sr = generator.apply(variables, lr.astype(jnp.float32) / top, train=False)
      return jnp.clip(jnp.round((sr + 1.0) * (top / 2)), 0, top).astype(lr.dtype)

    self._apply = jax.jit(upscale_integers)

  def set_variables(self, variables, step: Optional[int] = None):
    """Swaps in new weights of the same shapes; compiled programs are kept."""
    self.variables, self.step = jax.device_put(variables), step

  def _run(self, lr: np.ndarray) -> np.ndarray:
    """[h, w, 3] -> [sh, sw, 3] of lr's type in one call, padded to the bucket if asked."""
    h, w = lr.shape[:2]
    if self.bucket:
      ph, pw = -h % self.bucket, -w % self.bucket
      mode = 'reflect' if ph < h and pw < w else 'edge'
      lr = np.pad(lr, ((0, ph), (0, pw), (0, 0)), mode=mode)
    return np.asarray(self._apply(self.variables, lr[None])[0])[:h * self.scale, :w * self.scale]

  def __call__(self, image: np.ndarray, tile: Optional[int] = None,
               out: Optional[np.ndarray] = None) -> np.ndarray:
    """[H, W, 3] uint8|uint16 -> [sH, sW, 3] of the same type; `tile` overrides the
    upscaler's own; `out`, if given, receives the result."""
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16) or image.ndim != 3 or image.shape[2] != 3:
      raise ValueError(f'expected an [H, W, 3] uint8 or uint16 image, got {image.shape} '
                       f'{image.dtype}')
    tile = self.tile if tile is None else tile
    if tile and (image.shape[0] > tile or image.shape[1] > tile):
      return upscale_in_tiles(self._run, image, self.scale, tile, self.tile_overlap, out)
    if out is None:
      return self._run(image)
    out[...] = self._run(image)
    return out


def inference_output_conv(trained: str, scale: int) -> str:
  """The form of G's output conv that the upscaler uses unless told.

  On a GPU, the coarsest grid the scale allows, which was the fastest there by a wide
  margin (benchmarks/README.md); elsewhere no form won clearly, so the run's own form
  is kept. Forms share params, so any run can use any form (scale permitting).
  """
  if jax.default_backend() == 'gpu':
    return 'subpixel4' if scale >= 4 else 'subpixel2'
  return trained


def load_upscaler(path: str, step: Optional[int] = None, dtype: str = 'float32',
                  tile: int = 0, tile_overlap: int = 48, bucket: int = 0,
                  output_conv: str = '') -> Upscaler:
  """Builds an Upscaler from a model file (`python -m srgan_jax.export`) or a run folder.

  A run folder (or RUN/best, or one step's folder) gives its latest (or `step`'s)
  checkpoint; it needs only the files in the run folder. Either way the EMA params (equal
  to the params when the run kept no EMA) and BN running statistics are used.
  `output_conv` ('direct', 'subpixel2' or 'subpixel4') picks how G's output conv is
  computed: same params and results, only speed differs. Empty: `inference_output_conv`
  (subpixel4 on a GPU).
  """
  if dtype not in build.DTYPES:
    raise ValueError(f'dtype must be one of {tuple(build.DTYPES)}, got {dtype!r}')
  if os.path.isfile(path):
    if step is not None:
      raise ValueError(f'{path} is a model file: it holds one step, so there is no step to pick')
    g_config, variables, info = model_file.read(path)
    restored_step = info['step']
  else:
    g_config = run_folder.load_config(run_folder.find_run_dir(path)).generator
    tree, restored_step = run_folder.restore_generator(path, step)
    variables = {'params': tree['g_ema_params'], 'batch_stats': tree['g_batch_stats']}
  g_config.output_conv = output_conv or inference_output_conv(
      g_config.get('output_conv', 'direct'), g_config.scale)
  generator = build.generator_from_config(g_config, build.DTYPES[dtype])
  return Upscaler(generator, variables, tile=tile, tile_overlap=tile_overlap, bucket=bucket,
                  step=restored_step)


MIN_TILE = 32  # LR pixels: a retry after running out of memory goes no smaller.


class OutOfMemoryError(MemoryError):
  """An image that did not fit even in the smallest tiles; the message names it."""


def _is_out_of_memory(error: Exception) -> bool:
  text = str(error)
  return isinstance(error, MemoryError) or (
      isinstance(error, jax.errors.JaxRuntimeError)
      and ('RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()))


def upscale_within_memory(upscaler: Upscaler, image: np.ndarray, name: str) -> np.ndarray:
  """`upscaler(image)`, retried with tiles half as large each time memory runs out.

  Starts from the upscaler's tile (the whole image when it has none) and stops at
  MIN_TILE LR pixels, raising OutOfMemoryError naming `name`. The output is allocated
  once, first: when it does not fit, no tile size would help, so that fails at once,
  naming the bytes it needs.
  """
  height, width = image.shape[0] * upscaler.scale, image.shape[1] * upscaler.scale
  try:
    out = np.empty((height, width) + image.shape[2:], image.dtype)
  except MemoryError as e:
    needed = height * width * int(np.prod(image.shape[2:])) * image.itemsize
    raise OutOfMemoryError(
        f'{name}: the {width}x{height} output needs {needed:,} bytes '
        f'({needed / 2**30:.2f} GiB), which cannot be allocated; smaller tiles do not change '
        f'that (upscale a crop of it, or on a machine with more memory)') from e
  tile = upscaler.tile or max(image.shape[:2])
  while True:
    try:
      return upscaler(image, tile=tile, out=out)
    except Exception as e:  # Only memory errors are retried; others go up as they are.
      if not _is_out_of_memory(e):
        raise
      if tile // 2 < MIN_TILE:
        raise OutOfMemoryError(f'{name}: out of memory even in {tile}-pixel tiles '
                               f'({type(e).__name__}: {str(e).splitlines()[0][:200]})') from e
      tile //= 2


def _gray(rgb: np.ndarray, rows: int = 256) -> np.ndarray:
  """The mean of R, G, B, rounded, a band of rows at a time (no image-sized float array)."""
  gray = np.empty(rgb.shape[:2], rgb.dtype)
  for r in range(0, rgb.shape[0], rows):
    gray[r:r + rows] = np.round(rgb[r:r + rows].sum(axis=2, dtype=np.uint32) / 3.0)
  return gray


def upscale_file(upscaler: Upscaler, path: str, output: str):
  """Upscales one file: gray stays gray, alpha is upscaled bicubic and kept, a 16-bit
  PNG or TIFF is written as a 16-bit PNG."""
  decoded = image_io.decode(path, keep_16_bits=True)
  sr = upscale_within_memory(upscaler, decoded.rgb, path)
  if decoded.is_gray:
    sr = _gray(sr)
  if decoded.alpha is not None:  # Gray + alpha stays LA, colour + alpha RGBA.
    alpha = degradation.resize_numpy(decoded.alpha, upscaler.scale, out_shape=sr.shape[:2])
    sr = np.dstack([sr, alpha])
  image_io.save_png(output, sr)


def output_paths(inputs: list[str], output_dir: str, scale: int) -> list[tuple[str, str]]:
  """(input file, output file) for each image the command line names.

  A file goes to `output_dir/<stem>_x<scale>.png`; a folder's images keep their path
  below that folder, so photos/2019/a.jpg and photos/2020/a.jpg do not meet; images
  already under `output_dir` are not taken from a folder. A file named twice is
  upscaled once. Raises ValueError naming the inputs if two different files
  would write one output (a.png and a.jpg).
  """
  pairs, clashes = [], []
  writer = {}  # absolute output path -> (absolute input path, input as given)
  output_root = os.path.join(os.path.abspath(output_dir), '')
  for path in inputs:
    if os.path.isdir(path):
      # An --output inside the folder: earlier results are not inputs.
      files = [(f, os.path.relpath(f, path)) for f in image_io.list_image_files(path)
               if not os.path.abspath(f).startswith(output_root)]
    else:  # A missing or bad file is reported when it is read.
      files = [(path, os.path.basename(path))]
    for file, relative in files:
      output = os.path.join(output_dir, f'{os.path.splitext(relative)[0]}_x{scale}.png')
      key, source = os.path.abspath(output), os.path.abspath(file)
      if key not in writer:
        writer[key] = (source, file)
        pairs.append((file, output))
      elif writer[key][0] != source:  # Another file for this output (the same one is skipped).
        clashes.append(f'{writer[key][1]} and {file}')
  if clashes:
    raise ValueError(f'these inputs would write the same output file: {"; ".join(clashes)}. '
                     f'Upscale them into separate --output folders')
  return pairs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.upscale', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('inputs', nargs='+', help='image files and folders')
  model = parser.add_mutually_exclusive_group()
  model.add_argument('--workdir', help='run folder (or RUN/best, or a checkpoint in it)')
  model.add_argument('--model', help=(
      'model file (python -m srgan_jax.export), or a pretrained model by name: '
      f'{", ".join(model_file.PRETRAINED)}. Neither --model nor --workdir: '
      f'{model_file.DEFAULT_PRETRAINED}, pretrained/{model_file.PRETRAINED[model_file.DEFAULT_PRETRAINED]} '
      '(the paper\'s SRResNet, pretrained/README.md)'))
  parser.add_argument('--step', type=int, default=None, help='checkpoint step; default latest')
  parser.add_argument('--output', default='upscaled',
                      help='folder for <name>_x<scale>.png (default: upscaled); a folder\'s '
                           'images keep their sub-folders')
  parser.add_argument('--tile', type=int, default=256, help='LR tile side; 0 = whole image')
  parser.add_argument('--tile_overlap', type=int, default=48, help='LR context per tile side')
  parser.add_argument('--dtype', choices=sorted(build.DTYPES), default='float32')
  parser.add_argument('--output_conv', choices=tuple(OUTPUT_CONVS), default='',
                      help="form of G's output conv (same results); default: subpixel4 "
                           "on a GPU, else the run's")
  parser.add_argument('--overwrite', action='store_true', help='replace existing outputs')
  args = parser.parse_args(argv)

  if os.path.exists(args.output) and not os.path.isdir(args.output):
    parser.error(f'--output={args.output} is a file, not a folder')

  from tqdm import tqdm
  try:
    model = args.workdir or model_file.resolve(args.model or model_file.DEFAULT_PRETRAINED)
    if not args.workdir and not os.path.isfile(model):
      raise FileNotFoundError(f'--model={args.model}: no such file (a run folder goes in --workdir)')
    upscaler = load_upscaler(model, args.step, args.dtype, args.tile, args.tile_overlap,
                             output_conv=args.output_conv)
  except (FileNotFoundError, ValueError) as e:  # Bad run folder, step or setting: exit 2.
    parser.error(str(e))
  try:
    pairs = output_paths(args.inputs, args.output, upscaler.scale)
  except (FileNotFoundError, ValueError) as e:
    parser.error(str(e))
  if not pairs:
    parser.error(f'no images in {", ".join(args.inputs)} (image files end in '
                 f'{", ".join(image_io.IMAGE_EXTENSIONS)})')
  failed, skipped = [], []
  for path, output in tqdm(pairs, unit='image', file=sys.stderr):
    if os.path.exists(output) and not args.overwrite:
      skipped.append(output)
      continue
    os.makedirs(os.path.dirname(output), exist_ok=True)
    try:
      upscale_file(upscaler, path, output)
    except (OSError, ValueError, MemoryError) as e:  # One image never stops the rest.
      message = str(e) if str(e).startswith(path) else f'{path}: {e}'
      failed.append(message)
      tqdm.write(f'error: {message}', file=sys.stderr)
  for output in skipped:
    print(f'exists, not overwritten (use --overwrite): {output}', file=sys.stderr)
  print(f'upscaled {len(pairs) - len(failed) - len(skipped)}, skipped '
        f'{len(skipped)}, failed {len(failed)}', file=sys.stderr)
  for message in failed:
    print(f'failed: {message}', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
