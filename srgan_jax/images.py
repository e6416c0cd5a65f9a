"""Reading image files into uint8 arrays, with one documented set of rules.

Rules (used by training, evaluation and the upscaler alike):
- EXIF orientation is applied first.
- Gray (L, 1, I, I;16, F) becomes RGB by repeating the channel; `is_gray` says so.
- 16-bit and 32-bit integer images are scaled to 8 bits by value * 255 / max-of-type,
  rounded; float images ('F') are read as 0..1 if their maximum is <= 1, else 0..255.
- Alpha (RGBA, LA, PA, palette with transparency) is split off as its own channel
  (uint8, or uint16 beside 16-bit colour); the colour is the stored colour, not composited on any background.
- Palette (P) and CMYK / YCbCr / LAB are converted to RGB by Pillow.
- 16-bit PNG and TIFF are decoded by imagecodecs and tifffile, which keep all 16 bits
  (Pillow cuts 16-bit RGB and gray+alpha to 8 bits and reads 16-bit LA as RGBA);
  `decode(path, keep_16_bits=True)` hands them over as uint16, which the upscaler
  uses to write 16 bits back. A 16-bit PNG's tRNS colour key is not applied.
"""

import dataclasses
import os
from typing import Optional

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff', '.gif')


class UnreadableImageError(ValueError):
  """A file that is not a readable image; the message names the file and why."""


@dataclasses.dataclass
class DecodedImage:
  rgb: np.ndarray  # [H, W, 3] uint8 (uint16 for a 16-bit file read with keep_16_bits)
  alpha: Optional[np.ndarray]  # [H, W] with rgb's dtype, or None
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


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
  """EXIF orientation 1-8 applied to [H, W, ...], as ImageOps.exif_transpose does."""
  transforms = {
      2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
      5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1),
      7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}
  return np.ascontiguousarray(transforms[orientation](array)) if orientation in transforms else array


def _sixteen_bit_samples(path: str, image: Image.Image) -> Optional[np.ndarray]:
  """[H, W, samples] uint16 of a 16-bit PNG or TIFF (first page), or None for others.

  Samples are 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), as the file stores them.
  """
  if image.format == 'PNG':
    with open(path, 'rb') as f:
      header = f.read(26)  # Signature, IHDR length and type, width, height, depth, colour.
      if len(header) < 26 or header[24] != 16:
        return None
      array = imagecodecs.png_decode(header + f.read())
  elif image.format == 'TIFF':
    with tifffile.TiffFile(path) as tiff:
      page = tiff.pages[0]
      if page.bitspersample != 16 or page.sampleformat != 1 or page.photometric not in (
          tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
        return None  # Signed, CMYK, palette...: Pillow's rules.
      array = page.asarray()
      if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and array.ndim == 3:
        array = np.moveaxis(array, 0, -1)  # [samples, H, W] -> [H, W, samples]
  else:
    return None
  array = array.reshape(array.shape[:2] + (-1,))
  if array.dtype != np.uint16 or array.shape[2] not in (1, 2, 3, 4):
    raise UnreadableImageError(f'{path}: unsupported 16-bit layout {array.shape} {array.dtype}')
  return _orient(array, image.getexif().get(0x0112, 1))


def decode(path: str, keep_16_bits: bool = False) -> DecodedImage:
  """Reads an image file by the rules above; raises UnreadableImageError with the reason.

  keep_16_bits: a 16-bit PNG or TIFF comes back as uint16 (else scaled to uint8).
  """
  try:
    with Image.open(path) as image:  # Checks the header and the pixel count first.
      samples = _sixteen_bit_samples(path, image)
      if samples is None:
        image = ImageOps.exif_transpose(image)
        image.load()
  except FileNotFoundError:
    raise
  except Image.DecompressionBombError as e:  # Over twice Pillow's pixel limit.
    raise UnreadableImageError(f'{path}: too large to decode safely ({_without(e, path)})') from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as e:
    raise UnreadableImageError(
        f'{path}: cannot decode ({type(e).__name__}: {_without(e, path)})') from e
  if samples is not None:
    if not keep_16_bits:
      samples, _ = _to_uint8(samples)
    colour = samples[..., :1].repeat(3, axis=2) if samples.shape[2] < 3 else samples[..., :3]
    alpha = samples[..., -1] if samples.shape[2] in (2, 4) else None
    return DecodedImage(np.ascontiguousarray(colour), alpha, samples.shape[2] < 3, 16)
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


# zlib level of written PNGs. An upscaled photo is a large PNG, and on a GPU writing it
# can take longer than computing it: this level writes several times faster than Pillow's
# default for a few percent more bytes (benchmarks/upscale_photos.py --png).
PNG_LEVEL = 3


def save_png(path: str, array: np.ndarray):
  """Writes [H, W], [H, W, 2|3|4] uint8 or uint16 as PNG (8 or 16 bits per sample),
  atomically: no half-written file on a crash."""
  if array.dtype not in (np.uint8, np.uint16):
    raise ValueError(f'a PNG holds uint8 or uint16 samples, got {array.dtype}')
  encoded = imagecodecs.png_encode(array, level=PNG_LEVEL)
  tmp = f'{path}.tmp-{os.getpid()}.png'
  try:
    with open(tmp, 'wb') as f:
      f.write(encoded)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
