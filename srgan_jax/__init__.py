"""SRGAN and SRResNet (Ledig et al. 2017) in JAX/Flax."""

__version__ = '0.1.0'
