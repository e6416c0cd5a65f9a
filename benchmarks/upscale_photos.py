"""Upscaling photos: peak host memory and seconds per image, JAX against the exported
ONNX model under ONNX Runtime and against the PyTorch reference, side by side.

  python benchmarks/upscale_photos.py [--sizes=500,1000,2000] [--runtimes=jax,onnx,torch]
      [--tile=256] [--tile_overlap=48] [--png]

Each (runtime, size) runs in a fresh process: the paper's G (16 blocks, 64 channels,
x4) with random weights and BN statistics (memory and speed do not depend on them),
then one random LR image of size x size upscaled in tiles into a preallocated uint8
output by `upscale.upscale_in_tiles`, the upscaler's own tiling, so every runtime gets
the same windows (the command line's default tile and overlap unless told).

- start-up: the process's peak resident memory (VmHWM, /proc/self/status) after the
  imports, the weights, the runtime's session or compiled program and two warm-up
  windows (ONNX Runtime allocates its memory plan on the second run);
- peak: the same high-water mark after the image;
- bytes/LR px: (peak - start-up) / size^2. The uint8 input and output alone are
  3 + 3 * 16 = 51 bytes per LR pixel at x4;
- s/image: the one image, after the warm-up.

`--png` also times writing a 4x bicubic upscale of three Set14 images as PNG: Pillow
at its default level against imagecodecs at the level the upscaler writes
(`images.PNG_LEVEL`) and at 1 and 6.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RUNTIMES = ('jax', 'onnx', 'torch')


def _peak_mib() -> float:
  """This process's high-water mark of resident memory: VmHWM is per address space, so
  it starts afresh in a new process (ru_maxrss keeps the forking parent's)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError('no VmHWM in /proc/self/status (Linux only)')


def _generator_and_variables():
  import jax
  import jax.numpy as jnp
  from srgan_jax.models import Generator
  generator = Generator()  # The paper's: 16 blocks, 64 channels, x4.
  variables = jax.jit(generator.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))
  # BN statistics as after training, so that no layer is an identity.
  return generator, jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 if 'mean' in str(p[-1]) else x, variables)


def _window_runner(runtime: str, workdir: str):
  """(run_window): uint8 [h, w, 3] -> uint8 [4h, 4w, 3] on `runtime`."""
  import numpy as np
  from srgan_jax import images, upscale
  generator, variables = _generator_and_variables()
  if runtime == 'jax':
    upscaler = upscale.Upscaler(generator, variables)
    return lambda window: upscaler(window, tile=0)
  if runtime == 'onnx':
    import onnxruntime
    from srgan_jax import export
    path = os.path.join(workdir, 'g.onnx')
    g_config = {'num_blocks': 16, 'features': 64, 'scale': 4}
    export.export_program(export.serving_function(g_config, variables), path, 'onnx')
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    return lambda window: images.to_uint8(2.0 * session.run(  # [0, 1] -> G's [-1, 1]
        None, {'lr': window[None].astype(np.float32) / 255.0})[0][0] - 1.0)
  if runtime == 'torch':
    import torch
    from benchmarks import torch_reference
    model = torch_reference.generator_from_flax(variables).to(memory_format=torch.channels_last)

    def run_window(window):
      lr = torch.from_numpy(window).permute(2, 0, 1)[None].float().div_(255.0)
      with torch.inference_mode():
        sr = model(lr.contiguous(memory_format=torch.channels_last))
      return images.to_uint8(sr[0].permute(1, 2, 0).numpy())
    return run_window
  raise ValueError(f'runtime must be one of {RUNTIMES}, got {runtime!r}')


def measure(runtime: str, size: int, tile: int, overlap: int) -> dict:
  """One (runtime, size) in this process; see the module docstring."""
  import numpy as np
  from srgan_jax import upscale
  with tempfile.TemporaryDirectory() as workdir:
    run_window = _window_runner(runtime, workdir)
    window = min(size, tile + 2 * overlap)
    for _ in range(2):  # Warm-up: compile and allocate. ONNX Runtime plans its memory on
      run_window(np.zeros((window, window, 3), np.uint8))  # the first run, uses it next.
    start_mib = _peak_mib()
    lr = np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8)
    start = time.perf_counter()
    sr = upscale.upscale_in_tiles(run_window, lr, 4, tile, overlap)
    seconds = time.perf_counter() - start
    assert sr.shape == (4 * size, 4 * size, 3) and sr.dtype == np.uint8
    peak_mib = _peak_mib()
  return {'runtime': runtime, 'lr': f'{size}x{size}', 'start_mib': round(start_mib, 1),
          'peak_mib': round(peak_mib, 1),
          'bytes_per_lr_px': round((peak_mib - start_mib) * 2**20 / size**2, 1),
          's_per_image': round(seconds, 2), 'sample': sr[::61, ::59].tolist()}


def png_writing():
  """Seconds and size of writing three 4x bicubic Set14 upscales, per writer."""
  import io
  import imagecodecs
  from PIL import Image
  from srgan_jax import degradation, images
  from benchmarks import common
  root = os.path.join(common.SHARED_DATA, 'sr_benchmarks', 'Set14', 'HR')
  if not os.path.isdir(root):
    raise SystemExit(f'--png needs the Set14 images in {root}')
  for name in ('baboon.png', 'barbara.png', 'bridge.png'):
    big = degradation.resize_numpy(images.read_rgb(os.path.join(root, name)), 4)
    start = time.perf_counter()
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, 'PNG')
    pillow_s, pillow_bytes = time.perf_counter() - start, len(buffer.getvalue())
    line = f'{name} {big.shape[1]}x{big.shape[0]}: pillow {pillow_s:.2f} s'
    for level in sorted({1, images.PNG_LEVEL, 6}):
      start = time.perf_counter()
      encoded = imagecodecs.png_encode(big, level=level)
      seconds = time.perf_counter() - start
      line += (f' | imagecodecs level {level} {seconds:.2f} s (x{pillow_s / seconds:.1f} '
               f'faster), {len(encoded) / pillow_bytes:.3f} x the bytes')
    print(line, flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default='500,1000,2000', help='LR sides, comma-separated')
  parser.add_argument('--runtimes', default=','.join(RUNTIMES))
  parser.add_argument('--tile', type=int, default=256)
  parser.add_argument('--tile_overlap', type=int, default=48)
  parser.add_argument('--png', action='store_true', help='also time PNG writing')
  parser.add_argument('--child', default='', help=argparse.SUPPRESS)  # runtime,size
  args = parser.parse_args()
  if args.child:
    runtime, size = args.child.split(',')
    print(json.dumps(measure(runtime, int(size), args.tile, args.tile_overlap)))
    return
  import numpy as np
  from benchmarks import common
  print(f'machine: {common.machine()}, {os.cpu_count()} CPUs')
  print(f'command: {" ".join(sys.argv)}')
  rows = {}
  for size in [int(s) for s in args.sizes.split(',')]:
    for runtime in args.runtimes.split(','):
      result = subprocess.run(
          [sys.executable, os.path.abspath(__file__), f'--child={runtime},{size}',
           f'--tile={args.tile}', f'--tile_overlap={args.tile_overlap}'],
          capture_output=True, text=True)
      if result.returncode:
        print(f'{runtime} {size}: failed\n{result.stderr[-3000:]}', flush=True)
        continue
      row = json.loads(result.stdout.strip().splitlines()[-1])
      rows[runtime, size] = row
      jax_row = rows.get(('jax', size))
      against_jax = ''
      if jax_row and runtime != 'jax':  # Same weights: the outputs must agree too.
        levels = np.abs(np.array(row['sample']) - np.array(jax_row['sample'])).max()
        against_jax = (f' | jax speed-up x{row["s_per_image"] / jax_row["s_per_image"]:.2f}, '
                       f'max difference from jax {levels} levels (sampled pixels)')
      print(' '.join(f'{k}={v}' for k, v in row.items() if k != 'sample') + against_jax,
            flush=True)
  if args.png:
    png_writing()


if __name__ == '__main__':
  main()
