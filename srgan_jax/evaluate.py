"""Evaluation as the super-resolution literature reports it, and its command line.

Protocol (x4 tables of SRGAN, EDSR, RCAN, ...):
1. HR cropped to a multiple of the scale (top-left); LR is the set's official
   `LR_bicubic/X<s>/<name>x<s>.png` if present, else MATLAB bicubic of that HR.
2. SR quantised to uint8.
3. Y of YCbCr as MATLAB's `rgb2ycbcr` gives it for uint8 images (BT.601,
   Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B in 0..255), rounded to
   uint8. A gray image is its own R = G = B.
4. `scale` pixels shaved at every border.
5. PSNR on 0..255 Y; SSIM as Wang et al.'s `ssim_index`: 11x11 Gaussian window,
   sigma 1.5, 'valid' filtering, K1 = 0.01, K2 = 0.03, L = 255. Averaged over images.
   The perceptual metrics (LPIPS, NIQE) and their directions: `srgan_jax.quality`.

Command line:
  python -m srgan_jax.evaluate --data=DIR [--data=DIR2 ...] [--workdir=RUN ...] [--step=N]
      [--model=FILE ...] [--method=bicubic] [--metrics=psnr_y,ssim_y,lpips_alex,niqe]
      [--table=markdown] [--scale=4] [--compare=DIR [--compare_crop=TOP,LEFT,SIZE]
      [--compare_images=NAME,...]]
Prints a table (--table=markdown: one paper-style table, bicubic and the paper's rows
included), then one JSON line per dataset and method. --compare writes, for each image,
DIR/<set>_<image>.png: every method's SR side by side in the order of the table, then HR
(the README's figure is one, cropped).
"""

import argparse
import dataclasses
import json
import os
import sys
from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

from srgan_jax import (data_sources, degradation, images as image_io, model_file, quality,
                       run_folder, upscale)
from srgan_jax.models import build


@dataclasses.dataclass
class EvalImage:
  name: str
  hr: Optional[np.ndarray]  # [H, W, 3] uint8, cropped to a multiple of the scale; None: LR only
  lr: np.ndarray  # [H/s, W/s, 3] uint8


# Where a set folder keeps its given LR: the benchmarks' official bicubic files, or any other
# degradation (`python -m srgan_jax.degrade` writes LR/).
LR_FOLDERS = ('LR_bicubic', 'LR')


def dataset_name(spec: str) -> str:
  if spec.startswith('skimage:'):
    return 'skimage_' + '_'.join(n.strip() for n in spec[len('skimage:'):].split(','))
  return os.path.basename(os.path.normpath(spec[len('folder:'):] if spec.startswith('folder:') else spec))


def load_eval_set(spec: str, scale: int, max_images: int = 0) -> list[EvalImage]:
  """A set folder (HR/ and optional LR_bicubic/X<s>/ or LR/X<s>/; LR alone is scored by
  the no-reference metrics only), an image folder or 'skimage:...'."""
  root = spec[len('folder:'):] if spec.startswith('folder:') else spec
  hr_dir = os.path.join(root, 'HR')
  lr_dir = next((d for d in (os.path.join(root, f, f'X{scale}') for f in LR_FOLDERS)
                 if os.path.isdir(d)), '')
  if lr_dir and not os.path.isdir(hr_dir):
    lr_paths = data_sources.list_source(lr_dir)[:max_images or None]
    if not lr_paths:
      raise ValueError(f'no images in {lr_dir}')
    return [EvalImage(os.path.splitext(os.path.basename(p))[0], None, image_io.read_rgb(p))
            for p in lr_paths]
  paths = data_sources.list_source(hr_dir if os.path.isdir(hr_dir) else spec)
  if not paths:
    raise ValueError(f'no images in evaluation set {spec}')
  out = []
  for path in paths[:max_images or None]:
    name = os.path.splitext(os.path.basename(path))[0]
    hr = image_io.read_rgb(path)
    height, width = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
    window = quality.SSIM_WINDOW
    if min(height, width) < 2 * scale + window:
      raise ValueError(f'{path}: {hr.shape[1]}x{hr.shape[0]} is too small to score at x{scale}: '
                       f'the protocol crops to a multiple of {scale}, shaves {scale} pixels per '
                       f'side, and SSIM needs {window}x{window} after that')
    hr = hr[:height, :width]
    lr_path = os.path.join(lr_dir, f'{name}x{scale}.png')
    if os.path.exists(lr_path):
      lr = image_io.read_rgb(lr_path)
      if lr.shape[0] * scale != hr.shape[0] or lr.shape[1] * scale != hr.shape[1]:
        raise ValueError(f'{lr_path}: {lr.shape[:2]} x{scale} does not match HR {hr.shape[:2]}')
    else:
      lr = degradation.resize_numpy(hr, 1.0 / scale)
    out.append(EvalImage(name, hr, lr))
  return out


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
  return degradation.resize_numpy(lr, scale)


def evaluate_set(images: list[EvalImage], upscale: Callable[[np.ndarray], np.ndarray],
                 scorer: quality.Scorer,
                 on_image: Optional[Callable[[int, EvalImage, np.ndarray], None]] = None
                 ) -> tuple[dict, list[dict]]:
  """Scores `upscale` (uint8 LR -> uint8 SR) on a set; returns (means, per-image rows).

  `on_image(index, image, sr)`, if given, sees each SR image once it is scored.
  """
  rows = []
  for index, item in enumerate(images):
    sr = upscale(item.lr)
    rows.append({'image': item.name, **(scorer(sr, item.hr) if item.hr is not None
                                         else scorer.without_reference(sr))})
    if on_image:
      on_image(index, item, sr)
  keys = [k for k in rows[0] if k != 'image']
  return {k: float(np.mean([r[k] for r in rows])) for k in keys}, rows


class TrainingEvaluator:
  """`config.eval.metrics` of a generator on `config.eval.sets` during training: it
  measures, the loop decides what to keep.

  Full images, not crops; LR is padded (by reflection) to a multiple of 16 pixels so
  that images of similar size share one compiled program. Process 0 prints each set's
  line and writes `workdir/eval/<set>_<step>.json` and bicubic | SR | HR comparisons.

  Args:
    eval_config: `config.eval`.
    generator: the run's generator module.
    workdir: the run folder.
  """

  BUCKET = 16
  COMPARISONS_PER_SET = 2

  def __init__(self, eval_config, generator, workdir: str):
    self.workdir, self.scale = workdir, generator.scale
    # Weights first: a missing file stops the run before any set is read.
    self.scorer = quality.Scorer(eval_config.metrics, self.scale, eval_config.weights_dir)
    self.sets = {dataset_name(s): load_eval_set(s, self.scale, eval_config.max_images)
                 for s in eval_config.sets}
    # The bicubic baseline never changes during a run: scored once, and the images of
    # the comparisons kept.
    self.bicubic = {}
    for name, images in self.sets.items():
      kept = []

      def keep(index, item, sr):
        if index < self.COMPARISONS_PER_SET:
          kept.append(sr)

      means, _ = evaluate_set(images, lambda lr: bicubic_upscale(lr, self.scale), self.scorer,
                              on_image=keep)
      self.bicubic[name] = (means, kept)
    self.generator = generator
    self.upscaler = None  # Built once, so each bucket shape compiles once per run.

  def run(self, variables, step: int) -> dict:
    """Scores G with `variables` ({'params', 'batch_stats'}); returns {'eval/<set>/<metric>'}."""
    variables = jax.device_get(variables)
    if self.upscaler is None:
      self.upscaler = upscale.Upscaler(self.generator, variables, bucket=self.BUCKET)
    self.upscaler.set_variables(variables, step)
    results = {}
    is_writer = jax.process_index() == 0
    if is_writer:
      os.makedirs(os.path.join(self.workdir, 'eval'), exist_ok=True)
    for name, images in self.sets.items():
      bicubic, bicubic_images = self.bicubic[name]

      def save_comparison(index, item, sr):  # Called within this iteration.
        if is_writer and index < self.COMPARISONS_PER_SET:
          path = os.path.join(self.workdir, 'eval', f'{name}_{item.name}_{step}.png')
          image_io.save_png(path, np.concatenate([bicubic_images[index], sr, item.hr], axis=1))
          print(f'  bicubic | SR | HR: {path}', flush=True)

      means, rows = evaluate_set(images, self.upscaler, self.scorer, on_image=save_comparison)
      for k, v in means.items():
        results[f'eval/{name}/{k}'] = v
        results[f'eval/{name}/bicubic_{k}'] = bicubic[k]
      if is_writer:
        shown = lambda values: ' '.join(f'{k} {v:.4f}' for k, v in values.items())
        print(f'eval step {step} {name}: SR {shown(means)} | bicubic {shown(bicubic)} '
              f'({len(images)} images)', flush=True)
        run_folder.write_json(os.path.join(self.workdir, 'eval', f'{name}_{step}.json'),
                              {'dataset': name, 'step': step, **means, 'images': rows})
    return results


def parse_crop(text: str) -> Optional[tuple[int, int, int]]:
  """'TOP,LEFT,SIZE' (HR pixels) -> (top, left, size); '' -> None (whole images)."""
  if not text:
    return None
  try:
    top, left, size = (int(v) for v in text.split(','))
  except ValueError:
    raise ValueError(f'--compare_crop={text!r}: expected TOP,LEFT,SIZE in HR pixels, e.g. '
                     f'40,120,160') from None
  if top < 0 or left < 0 or size < 1:
    raise ValueError(f'--compare_crop={text!r}: TOP and LEFT must be >= 0 and SIZE >= 1')
  return top, left, size


def crop_window(height: int, width: int, crop: Optional[tuple[int, int, int]],
                name: str) -> tuple[slice, slice]:
  """The rows and columns of the square `crop` in a height x width image (all of it when
  None); a crop that does not fit is named."""
  if crop is None:
    return slice(None), slice(None)
  top, left, size = crop
  if top + size > height or left + size > width:
    raise ValueError(f'{name}: the crop {size}x{size} at ({top}, {left}) does not fit in '
                     f'its {width}x{height} HR')
  return slice(top, top + size), slice(left, left + size)


# The paper's own figures (Ledig et al. 2017, Table 2; x4, PSNR dB / SSIM by its own
# SSIM code), shown beside a table's measured rows for reference.
PAPER_ROWS = {
    'SRResNet-MSE (paper)': {'Set5': (32.05, 0.9019), 'Set14': (28.49, 0.8184),
                             'BSD100': (27.58, 0.7620)},
    'SRGAN-VGG54 (paper)': {'Set5': (29.40, 0.8472), 'Set14': (26.02, 0.7397),
                            'BSD100': (25.16, 0.6688)},
}


# How a table names and prints each metric.
_SHOWN = {'psnr_y': ('PSNR', '{:.2f}'), 'ssim_y': ('SSIM', '{:.4f}'),
          'psnr_rgb': ('PSNR (RGB)', '{:.2f}'), 'lpips_alex': ('LPIPS (Alex)', '{:.4f}'),
          'lpips_vgg': ('LPIPS (VGG)', '{:.4f}'), 'niqe': ('NIQE', '{:.3f}'),
          'grid': ('grid', '{:.2f}')}


def markdown_table(summaries: list[dict], datasets: list[str], metrics) -> str:
  """One paper-style table: a row per method, the metrics of each set in one cell (e.g.
  'PSNR / SSIM'), the paper's rows last ('-' where it gives no figure; none when it has no
  figure for any of the sets, as for a degraded set)."""
  methods = list(dict.fromkeys(s['method'] for s in summaries))
  cell = {(s['method'], s['dataset']): s for s in summaries}
  header = ' / '.join(_SHOWN[m][0] for m in metrics)
  lines = ['| method | ' + ' | '.join(f'{d} {header}' for d in datasets) + ' |',
           '|---|' + '---|' * len(datasets)]
  show = lambda values: ' / '.join(
      _SHOWN[m][1].format(values[m]) if values.get(m) is not None else '-' for m in metrics)
  for method in methods:
    lines.append(f'| {method} | ' + ' | '.join(show(cell.get((method, d), {}))
                                               for d in datasets) + ' |')
  for method, figures in PAPER_ROWS.items():
    if not any(d in figures for d in datasets):
      continue
    cells = [show(dict(zip(('psnr_y', 'ssim_y'), figures[d])) if d in figures else {})
             for d in datasets]
    lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


class Method(NamedTuple):
  """One row of the evaluation: a baseline, a run folder or a model file."""
  label: str
  workdir: Optional[str]  # Where to write its per-image JSON; None for files and baselines.
  upscale: Callable[[np.ndarray], np.ndarray]  # uint8 LR -> uint8 SR
  scale: int
  step: Optional[int]


def _methods(parser, args) -> list[Method]:
  """The methods the command line names, bicubic first when asked for."""
  methods = []
  upscalers = {}  # Generator module -> Upscaler: one compile per image shape for all runs.
  given = [(path, False) for path in args.workdir or []] + [(m, True) for m in args.model or []]
  for path, is_model_file in given:
    try:
      if is_model_file:
        path = model_file.resolve(path)  # A pretrained model's name, or a file.
        if not os.path.isfile(path):
          parser.error(f'--model={path}: no such file (a run folder goes in --workdir)')
      loaded = upscale.load_upscaler(path, args.step, args.dtype)
    except (FileNotFoundError, ValueError) as e:  # Bad run folder, step or setting: exit 2.
      parser.error(str(e))
    if args.scale and args.scale != loaded.scale:
      parser.error(f'--scale={args.scale} but {path} was trained for x{loaded.scale}')
    upscaler = upscalers.setdefault(loaded.generator, loaded)
    variables, step = loaded.variables, loaded.step
    name = os.path.basename(os.path.normpath(path))
    if name == run_folder.BEST or name.isdigit():  # RUN/best or RUN/checkpoints/N: name RUN.
      name = f'{os.path.basename(run_folder.find_run_dir(path))}/{name}'
    label = f'{name} (step {step})'

    def run(lr, upscaler=upscaler, variables=variables, step=step):
      if upscaler.step != step or upscaler.variables is not variables:
        upscaler.set_variables(variables, step)
      return upscaler(lr)

    methods.append(Method(label, None if is_model_file else path, run,
                          loaded.scale, step))
  scale = methods[0].scale if methods else args.scale or 4
  if args.method or args.table == 'markdown':
    methods.insert(0, Method('bicubic', None, lambda lr: bicubic_upscale(lr, scale), scale,
                             None))
  return methods


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.evaluate', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--data', action='append', required=True,
                      help='benchmark folder (HR/, optional LR_bicubic/X<s>/); repeatable')
  parser.add_argument('--workdir', action='append',
                      help='run folder to evaluate (or RUN/best); repeatable')
  parser.add_argument('--model', action='append',
                      help='model file to evaluate (python -m srgan_jax.export), or a '
                           'pretrained model by name (srresnet, srgan, srgan_mse); repeatable')
  parser.add_argument('--method', choices=['bicubic'], help='a baseline')
  parser.add_argument('--step', type=int, default=None,
                      help='checkpoint step of the run folders; default latest')
  parser.add_argument('--scale', type=int, default=None, help='default: the run\'s, or 4')
  parser.add_argument('--metrics', default=','.join(quality.DEFAULT),
                      help=f'comma list of {", ".join(quality.METRICS)}')
  parser.add_argument('--cache_dir', default='',
                      help='converted public weights (default: $SRGAN_JAX_CACHE or '
                           '~/.cache/srgan_jax); python -m srgan_jax.weights fetch NAME')
  parser.add_argument('--dtype', default='float32', choices=sorted(build.DTYPES))
  parser.add_argument('--table', choices=['text', 'markdown'], default='text',
                      help='markdown: one table, a row per method (bicubic included) and the '
                           'paper\'s rows beside them')
  parser.add_argument('--compare', default='',
                      help='folder for <set>_<image>.png: each method\'s SR side by side, '
                           'then HR')
  parser.add_argument('--compare_crop', default='',
                      help='TOP,LEFT,SIZE: only that square of each image (HR pixels)')
  parser.add_argument('--compare_images', default='',
                      help='comma list of image names to compare (default: all)')
  args = parser.parse_args(argv)
  if not (args.workdir or args.model or args.method):
    parser.error('name what to evaluate: --workdir=RUN, --model=FILE or --method=bicubic')
  try:
    crop = parse_crop(args.compare_crop)
  except ValueError as e:
    parser.error(str(e))
  compared = set(filter(None, args.compare_images.split(',')))
  try:
    metrics = quality.check_names(m for m in args.metrics.split(',') if m)
  except ValueError as e:
    parser.error(str(e))
  methods = _methods(parser, args)
  scale = methods[-1].scale
  if any(m.scale != scale for m in methods):
    parser.error('the runs were trained for different scales: evaluate them separately')
  try:  # Before any image: a metric whose weights are missing names the file.
    scorer = quality.Scorer(metrics, scale, args.cache_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2

  summaries, datasets = [], []
  for spec in args.data:
    name = dataset_name(spec)
    datasets.append(name)
    try:
      images = load_eval_set(spec, scale)
      if images[0].hr is None and not quality.NO_REFERENCE.intersection(metrics):
        raise ValueError(f'{spec} has LR images and no HR/: only a no-reference metric '
                         f'({", ".join(sorted(quality.NO_REFERENCE))}) can score it: add '
                         f'--metrics=niqe')
    except (OSError, ValueError) as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    missing = compared - {item.name for item in images}
    if missing:
      print(f'error: --compare_images: {spec} has no {", ".join(sorted(missing))}',
            file=sys.stderr)
      return 1
    try:  # Before any method runs: a crop outside an image is named at once.
      windows = {item.name: crop_window(item.lr.shape[0] * scale, item.lr.shape[1] * scale,
                                        crop, item.name)
                 for item in images if args.compare and (not compared or item.name in compared)}
    except ValueError as e:
      print(f'error: {e}', file=sys.stderr)
      return 1
    panels = {}  # Image name -> the (cropped) SR of each method so far.

    def keep(index, item, sr):
      if item.name in windows:
        panels.setdefault(item.name, []).append(sr[windows[item.name]])

    for method in methods:
      means, rows = evaluate_set(images, method.upscale, scorer, on_image=keep)
      step = method.step
      summaries.append({'dataset': name, 'method': method.label, 'step': step, 'n': len(rows),
                        **means})
      if method.workdir and jax.process_index() == 0:
        folder = os.path.join(run_folder.find_run_dir(method.workdir), 'eval')
        os.makedirs(folder, exist_ok=True)
        run_folder.write_json(os.path.join(folder, f'{name}_{step}.json'),
                              {'dataset': name, 'step': step, **means, 'images': rows})
    if args.compare and jax.process_index() == 0:
      os.makedirs(args.compare, exist_ok=True)
      for item in images:
        if item.name in panels:
          hr = [item.hr[windows[item.name]]] if item.hr is not None else []
          image_io.save_png(os.path.join(args.compare, f'{name}_{item.name}.png'),
                            np.concatenate(panels[item.name] + hr, axis=1))
  if args.table == 'markdown':
    print(markdown_table(summaries, datasets, metrics))
  else:
    metric_keys = list(metrics)
    width = max(10, *(len(s['method']) for s in summaries))
    print(f'{"dataset":<12} {"method":<{width}} {"n":>4} '
          + ' '.join(f'{k:>9}' for k in metric_keys))
    for s in summaries:
      print(f'{s["dataset"]:<12} {s["method"]:<{width}} {s["n"]:>4} '
            + ' '.join(f'{s[k]:>9.4f}' if k in s else f'{"-":>9}' for k in metric_keys))
  for s in summaries:
    print(json.dumps(s))
  return 0


if __name__ == '__main__':
  sys.exit(main())
