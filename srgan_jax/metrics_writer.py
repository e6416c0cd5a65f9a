"""Metrics out of a run: TensorBoard events, `metrics.jsonl` and a console progress line.

Only the writer process (process 0) writes; the others get a writer that does nothing.
"""

import json
import os
import time
from typing import Optional

import numpy as np


class MetricsWriter:
  """Scalars to TensorBoard and to `workdir/metrics.jsonl` (one JSON object per log step).

  Args:
    workdir: run folder.
    enabled: False on every process but 0.
    truncate_after: on resume, lines of `metrics.jsonl` with a step after this are
      dropped: they belong to steps that the restored checkpoint does not hold and that
      will be trained and logged again.
  """

  def __init__(self, workdir: str, enabled: bool = True, truncate_after: int = 0):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    self.jsonl_path = os.path.join(workdir, 'metrics.jsonl')
    if truncate_after is not None and os.path.exists(self.jsonl_path):
      with open(self.jsonl_path) as f:
        kept = []
        for line in f:
          try:
            if json.loads(line)['step'] <= truncate_after:
              kept.append(line)
          except (ValueError, KeyError):  # A line cut short by a killed run.
            continue
      tmp = self.jsonl_path + '.tmp'
      with open(tmp, 'w') as f:
        f.writelines(kept)
      os.replace(tmp, self.jsonl_path)
    from tensorboardX import SummaryWriter  # Writes event files without TensorFlow.
    self._tb = SummaryWriter(logdir=os.path.join(workdir, 'tensorboard'))

  def write_scalars(self, step: int, scalars: dict, notes: Optional[dict] = None):
    """`notes` (JSON values, e.g. names) go to metrics.jsonl's line only."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for name, value in clean.items():
      self._tb.add_scalar(name, value, step)
    with open(self.jsonl_path, 'a') as f:
      f.write(json.dumps({'step': int(step), **clean, **(notes or {})}) + '\n')
    self._tb.flush()

  def write_images(self, step: int, image: np.ndarray, tag: str = 'lr_bicubic_sr_hr'):
    """image: [H, W, 3] uint8."""
    if self.enabled:
      self._tb.add_image(tag, image, step, dataformats='HWC')
      self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


def format_duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{seconds:02d}s' if hours else f'{minutes}m{seconds:02d}s'


class RateTimer:
  """Steps/s and images/s between log steps, and the ETA of the run."""

  def __init__(self, start_step: int, num_steps: int, global_batch: int):
    self.num_steps, self.global_batch = num_steps, global_batch
    self._last_step, self._last_time = start_step, time.perf_counter()

  def rates(self, step: int) -> dict:
    now = time.perf_counter()
    steps_per_s = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    return {'steps_per_s': steps_per_s, 'images_per_s': steps_per_s * self.global_batch}

  def progress_line(self, step: int, metrics: dict) -> str:
    eta = (self.num_steps - step) / max(metrics['steps_per_s'], 1e-9)
    shown = ' '.join(f'{k}={metrics[k]:.4g}' for k in
                     ('g_loss', 'content_loss', 'pixel_loss', 'phase_loss', 'adversarial_loss',
                      'd_loss', 'd_real', 'd_fake', 'psnr_rgb') if k in metrics)
    return (f'step {step}/{self.num_steps} ({100 * step / self.num_steps:.1f}%) {shown} | '
            f'{metrics["steps_per_s"]:.2f} steps/s {metrics["images_per_s"]:.1f} img/s | '
            f'ETA {format_duration(eta)}')
