"""Upscale an image with a trained run from a plain JAX program.

  python examples/upscale_in_jax.py --workdir=runs/quickstart --input=photo.png --output=photo_x4.png
"""

import argparse

import numpy as np
from PIL import Image

from srgan_jax.upscale import load_upscaler


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--input', required=True)
  parser.add_argument('--output', required=True)
  args = parser.parse_args()

  upscaler = load_upscaler(args.workdir, tile=256)  # EMA generator of the latest checkpoint
  image = np.asarray(Image.open(args.input).convert('RGB'))  # [H, W, 3] uint8
  sr = upscaler(image)  # [4H, 4W, 3] uint8
  Image.fromarray(sr).save(args.output)
  print(f'{image.shape[1]}x{image.shape[0]} -> {sr.shape[1]}x{sr.shape[0]}: {args.output}')


if __name__ == '__main__':
  main()
