"""The networks a config describes, built in one place for training, evaluation and inference."""

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from srgan_jax import losses
from srgan_jax.models import vgg
from srgan_jax.models.discriminator import Discriminator
from srgan_jax.models.generator import Generator

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Models:
  """The modules of a run; a run builds them once and passes them on."""
  generator: Generator
  discriminator: Optional[Discriminator]  # None when the adversarial weight is 0 (SRResNet).
  vgg_features: Optional[vgg.VGG19Features]  # None for the pixel content loss.


def uses_discriminator(config) -> bool:
  return config.loss.adversarial_weight > 0


def vgg_layers(config) -> tuple[str, ...]:
  """The VGG19 layers of the content loss: () for 'pixel', ('conv5_4',) for 'vgg54',
  ('conv1_2', ..., 'conv5_4') for 'vgg12,vgg22,vgg34,vgg44,vgg54'."""
  if config.loss.content == 'pixel':
    return ()
  try:
    return vgg.layers_for_loss(config.loss.content)
  except ValueError as error:
    raise ValueError(f"config.loss.content must be 'pixel' or VGG layers like vgg54 or "
                     f'vgg12,vgg22,vgg34,vgg44,vgg54: {error}') from None


def vgg_layer_weights(config) -> tuple[float, ...]:
  """One weight per VGG content layer: config.loss.vgg_layer_weights, or 1 each if empty."""
  layers = vgg_layers(config)
  layer_weights = tuple(float(w) for w in config.loss.vgg_layer_weights) or (1.0,) * len(layers)
  if len(layer_weights) != len(layers):
    raise ValueError(f'config.loss.vgg_layer_weights {tuple(config.loss.vgg_layer_weights)} '
                     f'needs one weight per layer of loss.content {config.loss.content!r}')
  return layer_weights


def generator_from_config(g_config, dtype: Any = jnp.float32) -> Generator:
  """The generator a `config.generator` describes (also a run folder's saved one)."""
  # Run folders saved before `output_conv` existed used the direct form.
  return Generator(num_blocks=g_config.num_blocks, features=g_config.features,
                   scale=g_config.scale, output_conv=g_config.get('output_conv', 'direct'),
                   dtype=dtype)


def build_models(config) -> Models:
  """G, D (or None) and the VGG features (or None) of a run, in its compute dtype.

  The modules check their own settings (scale, conv forms) here, so a bad config fails
  before anything compiles.
  """
  layers = vgg_layers(config)
  if config.loss.criterion not in losses.CRITERIA:
    raise ValueError(f'config.loss.criterion must be one of {losses.CRITERIA}, '
                     f'got {config.loss.criterion!r}')
  vgg_layer_weights(config)
  if not layers and config.loss.pixel_weight > 0:
    raise ValueError('config.loss.pixel_weight adds a pixel term beside a VGG content loss; '
                     "with loss.content='pixel' set loss.content_weight instead")
  if config.train.compute_dtype not in DTYPES:
    raise ValueError(f'config.train.compute_dtype must be one of {tuple(DTYPES)}, '
                     f'got {config.train.compute_dtype!r}')
  dtype = DTYPES[config.train.compute_dtype]
  discriminator = None
  if uses_discriminator(config):
    discriminator = Discriminator(features=tuple(config.discriminator.features),
                                  dense_features=config.discriminator.dense_features,
                                  dtype=dtype)
  vgg_features = None
  if layers:
    vgg_features = vgg.VGG19Features(output_layers=layers,
                                     after_activation=config.loss.vgg_after_activation,
                                     dtype=dtype)
  return Models(generator_from_config(config.generator, dtype), discriminator, vgg_features)


def fold_biases_into_batch_norm(params: dict, batch_stats: dict) -> tuple[dict, dict]:
  """Moves the bias of each conv that feeds a BatchNorm into that BN's running mean.

  Run folders written before those biases were dropped hold them ('convX' with a 'bias'
  beside a 'bnX', or 'conv_body' beside 'bn_body'). At inference BN computes
  (conv(x) + b - mean) * scale / sqrt(var + eps) + shift, which is what the bias-free conv
  gives with mean - b: the same function, exactly. Trees without such biases pass
  through unchanged.

  Args:
    params, batch_stats: a generator's (or any module's) variables, nested dicts.

  Returns:
    (params without those biases, batch_stats with the folded means).
  """
  params, batch_stats = dict(params), dict(batch_stats)
  for name in list(params):
    value = params[name]
    if not isinstance(value, dict):
      continue
    if name.startswith('conv') and 'bias' in value:
      norm = 'bn' + name[len('conv'):]
      if norm in batch_stats and 'mean' in batch_stats[norm]:
        bias = value['bias']
        params[name] = {k: v for k, v in value.items() if k != 'bias'}
        batch_stats[norm] = {**batch_stats[norm], 'mean': batch_stats[norm]['mean'] - bias}
        continue
    if isinstance(batch_stats.get(name), dict):
      params[name], batch_stats[name] = fold_biases_into_batch_norm(value, batch_stats[name])
  return params, batch_stats
