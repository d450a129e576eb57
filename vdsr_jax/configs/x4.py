"""The paper's recipe for ×4 alone."""
from vdsr_jax.configs import x234


def get_config():
    config = x234.get_config()
    config.scales = (4,)
    config.eval_scales = (4,)
    return config
