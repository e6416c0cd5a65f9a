"""Exports a trained generator as a model file that anyone can run.

  python -m srgan_jax.export --workdir=RUN [--step=N] --output=FILE

RUN is a run folder (its latest checkpoint), RUN/best (the best evaluation's generator)
or one step's folder. The file (`srgan_jax.model_file`) holds G alone: its EMA params
and BatchNorm statistics, its config, the step and the training data's name, and a
checksum; `load_upscaler`, `python -m srgan_jax.upscale --model=FILE` and
`python -m srgan_jax.evaluate --model=FILE` take it as they take a run folder.
"""

import argparse
import os
import sys
from typing import Optional

from srgan_jax import model_file, run_folder


def export_run(path: str, output: str, step: Optional[int] = None) -> dict:
  """Writes the model file of a run's checkpoint; returns {'step', 'data', 'bytes'}."""
  config = run_folder.load_config(run_folder.find_run_dir(path))
  tree, restored = run_folder.restore_generator(path, step)
  variables = {'params': tree['g_ema_params'], 'batch_stats': tree['g_batch_stats']}
  model_file.write(output, config.generator, variables, restored, config.data.source)
  return {'step': restored, 'data': config.data.source, 'bytes': os.path.getsize(output)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m srgan_jax.export', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='run folder, RUN/best or a step folder')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step; default latest')
  parser.add_argument('--output', required=True, help='the model file to write (.npz)')
  args = parser.parse_args(argv)
  if os.path.isdir(args.output):
    parser.error(f'--output={args.output} is a folder; name the file to write')
  try:
    written = export_run(args.workdir, args.output, args.step)
  except (FileNotFoundError, ValueError) as e:  # Bad run folder or step: exit 2.
    parser.error(str(e))
  print(f'{args.output}: generator at step {written["step"]}, trained on {written["data"]}, '
        f'{written["bytes"] / 2**20:.2f} MiB')
  return 0


if __name__ == '__main__':
  sys.exit(main())
