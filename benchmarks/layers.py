"""Where the SRGAN step's time goes: every distinct convolution of G, D and VGG19, timed alone.

  python benchmarks/layers.py [--batch=64] [--dtype=bfloat16] [--crop=96] [--layers=conv_out]
      [--json=FILE]

Each conv (fp32 params, inputs in the compute dtype, as in the step) is timed three
ways, after warm-up and blocking: forward; forward + input gradient; forward + input and
parameter gradients. TFLOP/s count the plain conv's analytic FLOPs (2 x MACs; x2 and x3
with the gradients), so a regrouped form is credited only with the useful work; G's
output conv includes the pixel shuffle before it. `step ms` is what the layer costs one
SRGAN step: G's layers run forward with both gradients once; D's twice (real, fake) and
once more with the input gradient (G's adversarial term); VGG's forward on HR and
forward + input gradient on SR. The other forms of G's output conv
(`generator.OUTPUT_CONVS`) are timed beside the direct one, and the step's conv time is
summed for each choice. BN, activations, losses and the optimiser are not included.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks import common
from srgan_jax import train
from srgan_jax.models import layers
from srgan_jax.models.generator import OUTPUT_CONVS

# How often one SRGAN step runs each timing, by network (see the module docstring).
USES = {'G': {'grad_all': 1}, 'D': {'grad_all': 2, 'grad_input': 1},
        'VGG': {'forward': 1, 'grad_input': 1}}


def layer_table(crop: int):
  """(network, name, count, input side, in channels, out channels, kernel, stride, form)."""
  lr = crop // 4
  table = [('G', 'conv_in', 1, lr, 3, 64, 9, 1, 'direct'),
           ('G', 'body 3x3 64->64', 33, lr, 64, 64, 3, 1, 'direct'),
           ('G', 'conv_up0', 1, lr, 64, 256, 3, 1, 'direct'),
           ('G', 'conv_up1', 1, 2 * lr, 64, 256, 3, 1, 'direct'),
           *(('G', 'conv_out', 1, crop, 64, 3, 9, 1, form) for form in OUTPUT_CONVS)]
  d_features = (64, 64, 128, 128, 256, 256, 512, 512)
  side, channels = crop, 3
  for i, features in enumerate(d_features):
    stride = 2 if i % 2 else 1
    table.append(('D', f'conv{i}', 1, side, channels, features, 3, stride, 'direct'))
    side, channels = side // stride, features
  vgg_blocks = ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4))
  side, channels = crop, 3
  for b, (features, convs) in enumerate(vgg_blocks):
    table.append(('VGG', f'conv{b + 1}_1', 1, side, channels, features, 3, 1, 'direct'))
    rest = f'conv{b + 1}_2' + (f'..{convs}' if convs > 2 else '')
    table.append(('VGG', rest, convs - 1, side, features, features, 3, 1, 'direct'))
    side, channels = side // 2, features
  return table


def conv_fn(name, in_channels, out_channels, kernel, stride, form, dtype):
  """(module, how much smaller x's side is, x's channels): the layer as the model runs it."""
  if name == 'conv_out':  # With the last pixel shuffle, which belongs to it in every form.
    grid, matmul = OUTPUT_CONVS[form]
    module = layers.PixelShuffleConv(out_channels, kernel, grid=grid, matmul=matmul,
                                     dtype=dtype)
    return module, 2, 4 * in_channels
  module = nn.Conv(out_channels, (kernel, kernel), strides=stride, dtype=dtype)
  return module, 1, in_channels


def time_layer(batch, name, side, in_channels, out_channels, kernel, stride, form, dtype,
               warmup, iters):
  module, shrink, channels = conv_fn(name, in_channels, out_channels, kernel, stride, form,
                                     dtype)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, side // shrink, side // shrink, channels),
                        dtype)
  params = jax.jit(module.init)(jax.random.PRNGKey(1), x)
  apply = lambda p, x: module.apply(p, x)
  cotangent = jnp.ones(jax.eval_shape(apply, params, x).shape, dtype)

  def grad_input(p, x):
    y, pullback = jax.vjp(lambda x: apply(p, x), x)
    return y, pullback(cotangent)  # The output is returned so the forward is not dropped.

  def grad_all(p, x):
    y, pullback = jax.vjp(apply, p, x)
    return y, pullback(cotangent)

  times = {}
  for name, fn in (('forward', apply), ('grad_input', grad_input), ('grad_all', grad_all)):
    compiled = jax.jit(fn)
    times[name] = common.time_calls(lambda: compiled(params, x), warmup, iters)
  return times


def conv_ms_per_step(step_ms: dict, forms: dict, only: str = '') -> float:
  """Sums step_ms[(network, layer, form)]: each layer in forms[network] if timed so, else direct."""
  chosen = {}
  for (network, name, form), ms in step_ms.items():
    if only and network != only:
      continue
    if form == 'direct':
      chosen.setdefault((network, name), ms)
    if form == forms.get(network):
      chosen[network, name] = ms
  return sum(chosen.values())


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=64, help='images per call')
  parser.add_argument('--dtype', default='bfloat16', help='compute dtype: float32 or bfloat16')
  parser.add_argument('--crop', type=int, default=96, help='HR crop side')
  parser.add_argument('--warmup', type=int, default=3, help='untimed calls (compile included)')
  parser.add_argument('--iters', type=int, default=20, help='timed calls')
  parser.add_argument('--layers', default='',
                      help='comma list of layer names to time (e.g. conv_out,conv1); default all')
  parser.add_argument('--json', default='', help='append one JSON line per layer to this file')
  args = common.parse_args(parser)
  dtype = train.DTYPES[args.dtype]
  step_ms = {}  # (network, name, form) -> ms per step.
  only = set(filter(None, args.layers.split(',')))
  for network, name, count, side, cin, cout, kernel, stride, form in layer_table(args.crop):
    if only and name not in only:
      continue
    times = time_layer(args.batch, name, side, cin, cout, kernel, stride, form, dtype,
                       args.warmup, args.iters)
    out_side = -(-side // stride)
    flop = 2 * args.batch * out_side**2 * kernel**2 * cin * cout
    ms = count * 1e3 * sum(n * times[t] for t, n in USES[network].items())
    step_ms[network, name, form] = ms
    row = {'network': network, 'layer': name, 'form': form, 'count': count,
           'shape': f'{side}x{side}x{cin}->{out_side}x{out_side}x{cout} k{kernel} s{stride}',
           'forward_ms': 1e3 * times['forward'],
           'forward_tflops': flop / times['forward'] / 1e12,
           'grad_input_ms': 1e3 * times['grad_input'],
           'grad_all_ms': 1e3 * times['grad_all'],
           'grad_all_tflops': 3 * flop / times['grad_all'] / 1e12,
           'step_ms': ms}
    common.emit(row, args.json, batch=args.batch, dtype=args.dtype)

  for network in sorted({network for network, _, _ in step_ms}):
    ms = conv_ms_per_step(step_ms, {}, network)
    print(f'{network} convs, direct forms: {ms:.3f} ms per step')
  direct = conv_ms_per_step(step_ms, {})
  for form in OUTPUT_CONVS:
    label, forms = ('direct', {}) if form == 'direct' else (f'G {form}', {'G': form})
    ms = conv_ms_per_step(step_ms, forms)
    print(f'{"the timed" if only else "all"} convs of one SRGAN step, {label}: {ms:.3f} ms '
          f'(x{direct / ms:.2f} of direct)')


if __name__ == '__main__':
  main()
