"""The paper's recipe for ×3 alone."""
from vdsr_jax.configs import x234


def get_config():
    config = x234.get_config()
    config.scales = (3,)
    config.eval_scales = (3,)
    return config
