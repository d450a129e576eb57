"""VDSR super-resolution (Kim, Lee & Lee, CVPR 2016) in JAX/Flax."""
__version__ = "0.1.0"


def load_pretrained(path=None, compute_dtype: str = "float32"):
    """`(model, params)` of the pretrained weights bundled with the package, or of the `.npz` weights file
    `path`; see `vdsr_jax.pretrained.load_pretrained` (imported on first call, so `import vdsr_jax` stays light).

        model, params = vdsr_jax.load_pretrained()
        y_sr = vdsr_jax.inference.TiledVDSR(model, params)(y_bicubic)
    """
    from vdsr_jax.pretrained import load_pretrained as load

    return load(path, compute_dtype)
