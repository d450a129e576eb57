"""The paper's recipe for ×2 alone."""
from vdsr_jax.configs import x234


def get_config():
    config = x234.get_config()
    config.scales = (2,)
    config.eval_scales = (2,)
    return config
