"""Shared by the benchmarks: analytic FLOPs (benchmarks/README.md), timing, machine facts."""

import json
import os
import platform
import sys
import time

import jax

# Analytic FLOPs (2 x MACs) per image at 96x96 HR crops, x4, the paper's G/D/VGG19.
SRGAN_STEP_FLOP_PER_IMAGE = 0.693e12 / 16  # G fwd+bwd, VGG54 on SR and HR + input-grad, D x3
SRRESNET_STEP_FLOP_PER_IMAGE = 0.123e12 / 16
G_FORWARD_FLOP_PER_LR_PIXEL = 4.44e6  # 1.163 TFLOP for a 512x512 LR image

# The public images beside the repository (../shared/data/README.md says what each is).
SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'shared', 'data')


def time_calls(fn, warmup: int, iters: int, wait=jax.block_until_ready) -> float:
  """Seconds per call of fn(), after warm-up; `wait(output)` blocks until it is computed.

  The default waits on JAX arrays; the PyTorch reference passes a device synchronise.
  """
  for _ in range(warmup):
    wait(fn())
  start = time.perf_counter()
  for _ in range(iters):
    out = fn()
  wait(out)
  return (time.perf_counter() - start) / iters


def machine() -> str:
  device = jax.devices()[0]
  kind = getattr(device, 'device_kind', device.platform)
  flags = os.environ.get('XLA_FLAGS', '')  # Compiler flags change the figures: name them.
  return (f'{kind} x{jax.device_count()} ({jax.default_backend()}), jax {jax.__version__}, '
          f'{platform.processor() or platform.machine()}'
          + (f', XLA_FLAGS={flags}' if flags else ''))


def parse_args(parser):
  """Parses the command line and prints the machine and command the figures belong to."""
  args = parser.parse_args()
  print(f'machine: {machine()}')
  print(f'command: {" ".join(sys.argv)}')
  return args


def emit(row: dict, json_path: str = '', **json_only):
  """Prints a figure's row as key=value pairs; with json_path, appends it there as one
  JSON line, with the `json_only` fields and the machine."""
  print(' '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                 for k, v in row.items()), flush=True)
  if json_path:
    with open(json_path, 'a') as f:
      f.write(json.dumps({**row, **json_only, 'machine': machine()}) + '\n')


def prepare_div2k_locally(root: str, splits: dict) -> str:
  """TFDS's DIV2K (bicubic_x4) prepared as ArrayRecord from local images, by its own builder.

  Args:
    root: a folder to write into.
    splits: {'train': {name: HR [H, W, 3] uint8}, 'valid': {...}}; LR files are the HR
      subsampled by 4 (only their presence matters here).
  Returns:
    The TFDS data_dir. Only the download is replaced: the files are laid out as DIV2K's
    zips extract, and TFDS encodes and writes the records as for a real download.
  """
  import unittest.mock
  import tensorflow_datasets as tfds
  from PIL import Image
  local = {}
  for split, images in splits.items():
    hr_dir = os.path.join(root, f'{split}_hr', f'DIV2K_{split}_HR')
    lr_dir = os.path.join(root, f'{split}_lr', f'DIV2K_{split}_LR_bicubic', 'X4')
    os.makedirs(hr_dir, exist_ok=True)
    os.makedirs(lr_dir, exist_ok=True)
    for name, hr in images.items():
      Image.fromarray(hr).save(os.path.join(hr_dir, f'{name}.png'))
      Image.fromarray(hr[::4, ::4]).save(os.path.join(lr_dir, f'{name}x4.png'))
    local[f'{split}_hr_url'] = os.path.dirname(hr_dir)
    local[f'{split}_lr_url'] = os.path.dirname(os.path.dirname(lr_dir))
  data_dir = os.path.join(root, 'tfds')
  builder = tfds.builder('div2k/bicubic_x4', data_dir=data_dir)
  with unittest.mock.patch.object(tfds.download.DownloadManager, 'download_and_extract',
                                  lambda self, urls: {key: local[key] for key in urls}):
    builder.download_and_prepare(file_format='array_record')  # What tfds.data_source reads.
  return data_dir
