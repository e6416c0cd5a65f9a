"""Flax modules: the SRResNet generator, the discriminator and VGG19 features.

`srgan_jax.models.build` makes them from a config, for training, evaluation and inference.
"""

from srgan_jax.models.discriminator import Discriminator
from srgan_jax.models.generator import Generator
from srgan_jax.models.vgg import VGG19Features

__all__ = ['Discriminator', 'Generator', 'VGG19Features']
