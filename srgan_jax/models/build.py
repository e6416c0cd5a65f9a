"""The networks a config describes, built in one place for training, evaluation and inference."""

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from srgan_jax.models import vgg
from srgan_jax.models.discriminator import Discriminator
from srgan_jax.models.generator import Generator

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
CONTENT_LOSSES = ('pixel', 'vgg22', 'vgg54')


@dataclasses.dataclass(frozen=True)
class Models:
  """The modules of a run; a run builds them once and passes them on."""
  generator: Generator
  discriminator: Optional[Discriminator]  # None when the adversarial weight is 0 (SRResNet).
  vgg_features: Optional[vgg.VGG19Features]  # None for the pixel content loss.


def uses_discriminator(config) -> bool:
  return config.loss.adversarial_weight > 0


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
  if config.loss.content not in CONTENT_LOSSES:
    raise ValueError(f'config.loss.content must be one of {CONTENT_LOSSES}, '
                     f'got {config.loss.content!r}')
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
  if config.loss.content != 'pixel':
    vgg_features = vgg.VGG19Features(output_layer=vgg.layer_for_loss(config.loss.content),
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
