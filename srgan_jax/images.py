"""Reading image files into uint8 arrays, with one documented set of rules.

Rules (used by training, evaluation and the upscaler alike):
- EXIF orientation is applied first.
- Gray (L, 1, I, I;16, F) becomes RGB by repeating the channel; `is_gray` says so.
- 16-bit and 32-bit integer images are scaled to 8 bits by value * 255 / max-of-type,
  rounded; float images ('F') are read as 0..1 if their maximum is <= 1, else 0..255.
- Alpha (RGBA, LA, PA, palette with transparency) is split off as its own uint8
  channel; the colour is the stored colour, not composited on any background.
- Palette (P) and CMYK / YCbCr / LAB are converted to RGB by Pillow.
"""

import dataclasses
import os
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')


class UnreadableImageError(ValueError):
  """A file that is not a readable image; the message names the file and why."""


@dataclasses.dataclass
class DecodedImage:
  rgb: np.ndarray  # [H, W, 3] uint8
  alpha: Optional[np.ndarray]  # [H, W] uint8, or None
  is_gray: bool
  bit_depth: int  # 8, 16 or 32 bits per channel in the file


def _to_uint8(array: np.ndarray) -> tuple[np.ndarray, int]:
  if array.dtype == np.uint8:
    return array, 8
  if array.dtype == np.bool_:
    return array.astype(np.uint8) * 255, 8
  if np.issubdtype(array.dtype, np.floating):
    scale = 255.0 if float(np.nanmax(array, initial=0)) <= 1.0 else 1.0
    return np.clip(np.round(np.nan_to_num(array) * scale), 0, 255).astype(np.uint8), 32
  # Pillow reads 16-bit PNG/TIFF as 'I;16' or 'I' (int32 holding 0..65535).
  maximum = 65535 if float(array.max(initial=0)) <= 65535 else np.iinfo(array.dtype).max
  bits = 16 if maximum == 65535 else 32
  return np.clip(np.round(array.astype(np.float64) * 255.0 / maximum), 0, 255).astype(np.uint8), bits


def _without(error: Exception, path: str) -> str:
  """The error's text with the path it repeats (Pillow names the file) said as 'the file'."""
  return str(error).replace(f"'{path}'", 'the file').replace(path, 'the file')


def decode(path: str) -> DecodedImage:
  """Reads an image file by the rules above; raises UnreadableImageError with the reason."""
  try:
    with Image.open(path) as image:
      image = ImageOps.exif_transpose(image)
      image.load()
  except FileNotFoundError:
    raise
  except Image.DecompressionBombError as e:  # Over twice Pillow's pixel limit.
    raise UnreadableImageError(f'{path}: too large to decode safely ({_without(e, path)})') from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise UnreadableImageError(
        f'{path}: cannot decode ({type(e).__name__}: {_without(e, path)})') from e
  mode = image.mode
  alpha = None
  if mode == 'P' and 'transparency' in image.info:
    image, mode = image.convert('RGBA'), 'RGBA'
  if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
    alpha = np.asarray(image.getchannel('A'))
  if mode in ('1', 'L', 'LA', 'La', 'I', 'I;16', 'I;16B', 'I;16L', 'F'):
    channel = image.getchannel(0) if mode in ('LA', 'La') else image
    gray, bits = _to_uint8(np.asarray(channel))
    return DecodedImage(np.repeat(gray[..., None], 3, axis=2), alpha, True, bits)
  if mode not in ('RGB', 'RGBA'):
    image = image.convert('RGBA' if alpha is not None else 'RGB')
  rgb = np.asarray(image)[..., :3]
  if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
    raise UnreadableImageError(f'{path}: unsupported image layout {rgb.shape} (mode {mode})')
  rgb, bits = _to_uint8(np.ascontiguousarray(rgb))
  return DecodedImage(rgb, alpha, False, bits)


def read_rgb(path: str) -> np.ndarray:
  """[H, W, 3] uint8 RGB of an image file (alpha dropped, gray repeated)."""
  return decode(path).rgb


def list_image_files(root: str) -> list[str]:
  """Image files under `root` (recursive), by extension, in a stable sorted order."""
  if os.path.isfile(root):
    return [root]
  if not os.path.isdir(root):
    raise FileNotFoundError(f'no such file or folder: {root}')
  found = []
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    found.extend(os.path.join(folder, f) for f in sorted(files)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  return found


def to_uint8(sr: np.ndarray) -> np.ndarray:
  """SR in [-1, 1] (the generator's range) -> uint8, rounded."""
  return np.clip(np.round((sr + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_png(path: str, array: np.ndarray):
  """Writes [H, W, 3|4] or [H, W] uint8 as PNG, atomically (no half-written file on a crash)."""
  tmp = f'{path}.tmp-{os.getpid()}.png'
  Image.fromarray(array).save(tmp)
  os.replace(tmp, path)
