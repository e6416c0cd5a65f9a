"""A local page to try the models on your own photos: bicubic and SR side by side.

  pip install -e ".[demo]"
  python -m srgan_jax.demo                      # the pretrained models in pretrained/
  python -m srgan_jax.demo --model=runs/x.npz --workdir=runs/srgan --port=7860

Drop a photo, pick a model, and the page shows the bicubic x4 upscale and the model's on
one slider (full size: zoom in the page or full screen), the time the upscale took, and
the full-size PNG to download. The upscale is the command line's (`upscale.upscale_file`:
tiles, bounded memory, EXIF orientation, gray and alpha kept), so the download equals
`python -m srgan_jax.upscale --model=... photo`. A file that cannot be read, or one over
`--max_pixels`, gets a message on the page; the server goes on serving. The page binds
to 127.0.0.1 unless `--host` says otherwise.

This module sits above the library and nothing in the library imports it.
"""

import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

from srgan_jax import degradation, images as image_io, model_file, upscale


def model_choices(models: list[str], workdirs: list[str]) -> dict:
  """Label -> model file or run folder: those given first (the page opens on the first),
  then the pretrained models present that were not given."""
  choices = {}
  for path in [*models, *workdirs]:  # Labelled as given: two runs' best/ stay apart.
    choices[path] = model_file.resolve(path)
  for name, file in model_file.PRETRAINED.items():
    path = os.path.join(model_file.PRETRAINED_DIR, file)
    if os.path.isfile(path) and path not in choices.values():
      hint = model_file.PRETRAINED_HINTS.get(name)
      choices[f'{name} (pretrained{": " + hint if hint else ""})'] = path
  return choices


class Page:
  """What the page does, without Gradio: one upload, one model -> the results or a message."""

  def __init__(self, choices: dict, max_pixels: int, tile: int, output_dir: str):
    self.choices, self.max_pixels, self.tile = choices, max_pixels, tile
    self.output_dir = output_dir
    self._upscalers = {}  # label -> Upscaler, loaded on first use

  def upscaler(self, label: str) -> upscale.Upscaler:
    if label not in self._upscalers:
      self._upscalers[label] = upscale.load_upscaler(self.choices[label], tile=self.tile)
    return self._upscalers[label]

  def run(self, path: str, label: str) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(bicubic, SR) [4H, 4W, 3] uint8 for the slider, the full-size PNG's path, a status.

    Raises:
      ValueError: the message for the page (unreadable file, over the size limit, no model).
    """
    if label not in self.choices:
      raise ValueError(f'no model {label!r}; choose one of {sorted(self.choices)}')
    name = os.path.basename(path)
    try:
      decoded = image_io.decode(path)
    except (image_io.UnreadableImageError, OSError) as e:
      raise ValueError(f'cannot read {name}: {str(e).replace(path, "").lstrip(": ")}') from e
    height, width = decoded.rgb.shape[:2]
    if height * width > self.max_pixels:
      raise ValueError(f'{name} is {width}x{height} = {width * height:,} pixels, over this '
                       f'page\'s limit of {self.max_pixels:,} (--max_pixels); upscale it with '
                       f'python -m srgan_jax.upscale instead')
    upscaler = self.upscaler(label)
    output = os.path.join(tempfile.mkdtemp(dir=self.output_dir),
                          f'{os.path.splitext(name)[0]}_x{upscaler.scale}.png')
    started = time.perf_counter()
    try:
      upscale.upscale_file(upscaler, path, output)
    except (OSError, ValueError, MemoryError) as e:
      raise ValueError(f'{name}: {e}') from e
    seconds = time.perf_counter() - started
    sr = image_io.read_rgb(output)
    bicubic = degradation.resize_numpy(decoded.rgb, upscaler.scale, out_shape=sr.shape[:2])
    status = (f'{name}: {width}x{height} -> {sr.shape[1]}x{sr.shape[0]} with {label} in '
              f'{seconds:.2f} s')
    return bicubic, sr, output, status


def build_page(page: Page):
  """The Gradio Blocks of `page`."""
  import gradio as gr  # The optional [demo] extra.

  def run(file, label):
    if file is None:
      raise gr.Error('drop a photo first')
    try:
      bicubic, sr, output, status = page.run(file, label)
    except ValueError as e:
      raise gr.Error(str(e)) from e
    return (bicubic, sr), output, status

  labels = list(page.choices)
  with gr.Blocks(title='srgan_jax: try it on your photos') as blocks:
    gr.Markdown('## srgan_jax: x4 super-resolution\nDrop a photo (PNG, JPEG, WebP, TIFF, BMP), '
                'pick a model, and compare bicubic (left) with the model (right).')
    with gr.Row():
      photo = gr.File(label='photo', file_types=['image'], type='filepath', elem_id='photo')
      with gr.Column():
        model = gr.Dropdown(labels, value=labels[0] if labels else None, label='model')
        button = gr.Button('Upscale', variant='primary')
        status = gr.Markdown(elem_id='status')
    slider = gr.ImageSlider(label='bicubic | SR', type='numpy', format='png',
                            buttons=['fullscreen'])
    download = gr.File(label='full-size PNG', elem_id='download')
    button.click(run, [photo, model], [slider, download, status])
  return blocks


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.demo', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', action='append', default=[],
                      help='model file or pretrained name to offer; repeatable')
  parser.add_argument('--workdir', action='append', default=[],
                      help='run folder (or RUN/best) to offer; repeatable')
  parser.add_argument('--host', default='127.0.0.1',
                      help='address to bind; 0.0.0.0 serves other machines too')
  parser.add_argument('--port', type=int, default=7860)
  parser.add_argument('--max_pixels', type=int, default=4_000_000,
                      help='largest input (width x height) the page accepts')
  parser.add_argument('--tile', type=int, default=256, help='LR tile side of the upscaler')
  args = parser.parse_args(argv)
  if importlib.util.find_spec('gradio') is None:  # Said before any model loads.
    parser.error('the demo needs Gradio: pip install -e ".[demo]"')
  try:
    choices = model_choices(args.model, args.workdir)
  except FileNotFoundError as e:
    parser.error(str(e))
  if not choices:
    parser.error('no model to offer: pretrained/ holds none, and no --model or --workdir was '
                 'given')
  output_dir = tempfile.mkdtemp(prefix='srgan_jax_demo_')
  page = Page(choices, args.max_pixels, args.tile, output_dir)
  print(f'serving {", ".join(choices)} at http://{args.host}:{args.port}', flush=True)
  build_page(page).launch(server_name=args.host, server_port=args.port,
                          allowed_paths=[output_dir], show_error=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
