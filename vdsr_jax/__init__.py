"""VDSR super-resolution (Kim, Lee & Lee, CVPR 2016) in JAX/Flax."""
__version__ = "0.1.0"
