"""Probe: G's narrow convs as patch matrices times kernels (GEMMs) instead of cuDNN calls.

  python benchmarks/gemm_conv_probe.py --model=srresnet --batch=64 --dtype=bfloat16

On a GPU the packed SRResNet step idles about 8 us per kernel, and most of its kernels
are cuDNN convolutions, which XLA launches one by one (not from CUDA graphs). As GEMMs
they join XLA's command buffers. Times the step with both forms, same params.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks import common
from benchmarks.train_step import StepRunner, step_config

XLA_CONV = lax.conv_general_dilated


def gemm_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
              dimension_numbers=None, feature_group_count=1, batch_group_count=1,
              precision=None, preferred_element_type=None, max_channels=64):
  """lax.conv_general_dilated for NHWC/HWIO, no dilation or groups, via im2col + dot."""
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ('NHWC', 'HWIO', 'NHWC'))
  plain = (lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
           and not any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           and feature_group_count == 1 and batch_group_count == 1
           and rhs.shape[2] <= max_channels)
  if not plain:
    return XLA_CONV(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                    rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                    feature_group_count=feature_group_count,
                    batch_group_count=batch_group_count, precision=precision,
                    preferred_element_type=preferred_element_type)
  kh, kw, c, o = rhs.shape
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  sh, sw = window_strides
  ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  patches = jnp.concatenate([x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]
                             for i in range(kh) for j in range(kw)], axis=-1)
  return jnp.einsum('nhwk,ko->nhwo', patches, rhs.reshape(kh * kw * c, o),
                    precision=precision, preferred_element_type=preferred_element_type)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='srresnet')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--crop', type=int, default=96)
  parser.add_argument('--output_conv', default='subpixel4')
  parser.add_argument('--iters', type=int, default=50)
  args = common.parse_args(parser)
  config = step_config(args.model, args.batch, args.dtype, args.crop, args.output_conv)
  results = {}
  for form in ('xla', 'gemm', 'xla'):
    lax.conv_general_dilated = gemm_conv if form == 'gemm' else XLA_CONV
    run = StepRunner(config, args.model)
    metrics = jax.device_get(run())
    seconds = common.time_calls(run, 3, args.iters)
    results.setdefault(form, []).append(seconds)
    convs = run.compiled.as_text().count('custom_call_target="__cudnn$conv')
    print(f'{form}: {1e3 * seconds:.3f} ms/step, {args.batch / seconds:,.0f} images/s, '
          f'{convs} cuDNN conv calls, loss {metrics.get("content_loss", 0):.5f}', flush=True)
  print(f'gemm vs xla: x{min(results["xla"]) / results["gemm"][0]:.2f}')


if __name__ == '__main__':
  main()
