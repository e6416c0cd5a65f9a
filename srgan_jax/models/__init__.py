"""Flax modules: the SRResNet generator, the discriminator and VGG19 features."""

from srgan_jax.models.discriminator import Discriminator
from srgan_jax.models.generator import Generator

__all__ = ['Discriminator', 'Generator', 'VGG19Features']


def __getattr__(name):
  # VGG19Features is imported on first use: had this package imported `vgg` itself,
  # `python -m srgan_jax.models.vgg` would find its module already loaded, and runpy warns.
  if name == 'VGG19Features':
    from srgan_jax.models.vgg import VGG19Features
    return VGG19Features
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
