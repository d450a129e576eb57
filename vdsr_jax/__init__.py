"""VDSR super-resolution (Kim, Lee & Lee, CVPR 2016) in JAX/Flax.

    import vdsr_jax
    big = vdsr_jax.upscale(pixels, 2, weights="ckpt/pytorch_vdsr")   # numpy array or PIL image in and out

The public names (`__all__`, docs/api.md) are imported on first use (PEP 562), so `import vdsr_jax`
loads neither JAX nor the image libraries.
"""
import importlib

__version__ = "0.1.0"

_HOMES = {  # public name -> the module that defines it
    "upscale": "vdsr_jax.api",
    "load": "vdsr_jax.api",
    "imresize": "vdsr_jax.resize",
    "rgb2ycbcr": "vdsr_jax.color",
    "ycbcr2rgb": "vdsr_jax.color",
    "psnr": "vdsr_jax.metrics",
    "ssim": "vdsr_jax.metrics",
    "evaluate_images": "vdsr_jax.protocol",
    "VDSR": "vdsr_jax.model",
    "create_model": "vdsr_jax.model",
}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'vdsr_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted({*globals(), *__all__})
