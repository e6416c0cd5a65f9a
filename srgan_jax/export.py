"""Exports a trained generator: as a model file, or as a program that runs without JAX.

  python -m srgan_jax.export (--workdir=RUN [--step=N] | --model=FILE) --output=PATH \
      [--format=model|stablehlo|savedmodel|onnx] [--dtype=float32|bfloat16]

RUN is a run folder (its latest checkpoint), RUN/best (the best evaluation's generator)
or one step's folder; FILE a model file.

- `model` (the default; from a run): the model file (`srgan_jax.model_file`), G alone:
  its EMA params and BatchNorm statistics, its config, the step and the training data's
  name, and a checksum. `load_upscaler`, `python -m srgan_jax.upscale --model=FILE` and
  `python -m srgan_jax.evaluate --model=FILE` take it as they take a run folder.
- `stablehlo`: the serialised `jax.export` of G (`jax.export.deserialize(bytes).call(x)`).
- `savedmodel`: a TensorFlow SavedModel folder with one function, `upscale`, through
  `jax2tf` with native serialisation (TensorFlow runs the StableHLO).
- `onnx`: an ONNX model through jax2onnx (`pip install jax2onnx onnxruntime`), for ONNX
  Runtime, TensorRT and the converters that read ONNX.

The programs take LR images float32 [N, H, W, 3] in [0, 1] and return SR float32
[N, sH, sW, 3] in [0, 1]; N, H and W are symbolic, so one file serves any size. The
weights are constants inside. `--dtype=bfloat16` computes the convolutions in bfloat16.
"""

import argparse
import os
import sys
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
from jax import export as jax_export  # Imported by name: older jax has no jax.export attribute.

from srgan_jax import model_file, run_folder
from srgan_jax.models import build

FORMATS = ('model', 'stablehlo', 'savedmodel', 'onnx')


def export_run(path: str, output: str, step: Optional[int] = None) -> dict:
  """Writes the model file of a run's checkpoint; returns {'step', 'data', 'bytes'}."""
  config = run_folder.load_config(run_folder.find_run_dir(path))
  tree, restored = run_folder.restore_generator(path, step)
  variables = {'params': tree['g_ema_params'], 'batch_stats': tree['g_batch_stats']}
  model_file.write(output, config.generator, variables, restored, config.data.source)
  return {'step': restored, 'data': config.data.source, 'bytes': os.path.getsize(output)}


def load_generator(path: str, step: Optional[int] = None) -> tuple:
  """(generator config, variables, step) of a model file or a run folder."""
  if os.path.isfile(path):
    g_config, variables, info = model_file.read(path)
    return g_config, variables, info['step']
  g_config = run_folder.load_config(run_folder.find_run_dir(path)).generator
  tree, restored = run_folder.restore_generator(path, step)
  return g_config, {'params': tree['g_ema_params'], 'batch_stats': tree['g_batch_stats']}, restored


def serving_function(g_config, variables, dtype: str = 'float32'):
  """LR float32 [N, H, W, 3] in [0, 1] -> SR float32 [N, sH, sW, 3] in [0, 1].

  G's output conv runs in its direct form (the same params and results as the others),
  which needs no divisibility of H and W: every size stays valid for symbolic shapes.
  """
  g_config = dict(g_config)
  g_config['output_conv'] = 'direct'
  generator = build.generator_from_config(ml_collections.ConfigDict(g_config),
                                          build.DTYPES[dtype])
  variables = jax.tree.map(jnp.asarray, variables)
  return lambda lr: (generator.apply(variables, lr, train=False) + 1.0) * 0.5


class UnsupportedOpError(ValueError):
  """A format cannot express an operation of the generator; the message names it."""


def export_program(function, output: str, fmt: str):
  """Writes `function` (see `serving_function`) in `fmt` with symbolic N, H, W."""
  if fmt == 'stablehlo':
    n, h, w = jax_export.symbolic_shape('n, h, w')
    exported = jax_export.export(jax.jit(function))(
        jax.ShapeDtypeStruct((n, h, w, 3), jnp.float32))
    with open(output, 'wb') as f:
      f.write(exported.serialize())
  elif fmt == 'savedmodel':
    try:
      import tensorflow as tf
      from jax.experimental import jax2tf
    except ImportError as e:
      raise ImportError(f'--format=savedmodel needs TensorFlow ({e}): pip install -e ".[tfds]"') from e
    module = tf.Module()
    module.upscale = tf.function(
        jax2tf.convert(function, polymorphic_shapes=['(n, h, w, 3)'], with_gradient=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False)
    tf.saved_model.save(module, output)
  elif fmt == 'onnx':
    try:
      import jax2onnx
    except ImportError as e:
      raise ImportError(f'--format=onnx needs jax2onnx ({e}): pip install -e ".[export]"') from e
    try:
      jax2onnx.to_onnx(function, [('N', 'H', 'W', 3)], model_name='srgan_jax_generator',
                       return_mode='file', output_path=output, input_names=['lr'],
                       output_names=['sr'])
    except NotImplementedError as e:  # jax2onnx names the primitive it has no rule for.
      raise UnsupportedOpError(f'ONNX export cannot express an operation of the generator: '
                               f'{e}') from e
  else:
    raise ValueError(f'--format must be one of {FORMATS}, got {fmt!r}')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='run folder, RUN/best or a step folder')
  source.add_argument('--model', help='model file (for the program formats)')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step; default latest')
  parser.add_argument('--output', required=True, help='the file (or SavedModel folder) to write')
  parser.add_argument('--format', choices=FORMATS, default='model')
  parser.add_argument('--dtype', choices=sorted(build.DTYPES), default='float32',
                      help='compute dtype of the exported program')
  args = parser.parse_args(argv)
  if args.format != 'savedmodel' and os.path.isdir(args.output):
    parser.error(f'--output={args.output} is a folder; name the file to write')
  if args.format == 'model' and args.model:
    parser.error('--model is a model file already; --format=model exports a --workdir')
  if args.model and not os.path.isfile(args.model):
    parser.error(f'--model={args.model}: no such file (a run folder goes in --workdir)')
  try:
    if args.format == 'model':
      written = export_run(args.workdir, args.output, args.step)
      print(f'{args.output}: generator at step {written["step"]}, trained on '
            f'{written["data"]}, {written["bytes"] / 2**20:.2f} MiB')
      return 0
    g_config, variables, step = load_generator(args.model or args.workdir, args.step)
  except (FileNotFoundError, ValueError) as e:  # Bad run folder, file or step: exit 2.
    parser.error(str(e))
  try:
    export_program(serving_function(g_config, variables, args.dtype), args.output, args.format)
  except (ImportError, UnsupportedOpError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'{args.output}: {args.format} program of the generator at step {step} '
        f'(LR float32 [N, H, W, 3] in [0, 1] -> SR in [0, 1], {args.dtype})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
