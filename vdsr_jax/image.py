"""Image operations that must match MATLAB bit-for-bit in spirit.

VDSR's training data and its reported PSNR/SSIM were produced in MATLAB
(``imresize(..., 'bicubic')`` on the Y channel of ``rgb2ycbcr``).  Resizing
with PIL/OpenCV/``jax.image.resize`` changes the low-resolution inputs and
shifts PSNR by tenths of a dB, so this module reproduces MATLAB's definitions.

Resizing is one mechanism: per-dimension dense weight matrices built in float64
numpy (:func:`resize_matrix`) and applied with ``tensordot``.  :func:`imresize`
applies them in float64 numpy; :func:`imresize_jax` applies the *same*
matrices as float32 constants inside ``jax.jit``.

Spatial axes: a 2-D array is ``H x W``; an array with ``ndim >= 3`` has a
trailing channel axis, so ``H, W`` are axes ``-3, -2`` (``H x W x C``,
``N x H x W x C``, ...).  Every other axis is treated independently.
"""

from __future__ import annotations

import functools
import math
from numbers import Integral, Real

import jax
import jax.numpy as jnp
import numpy as np

_CUBIC_WIDTH = 4.0


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


@functools.lru_cache(maxsize=256)
def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """``out_len x in_len`` float64 matrix of MATLAB's bicubic resize along one axis.

    Transcribes ``contributions`` from MATLAB's ``imresize.m``: antialiasing
    widens the kernel by ``1/scale`` when shrinking, taps falling outside the
    signal are mirrored (``aux = [1:in, in:-1:1]``) and accumulated onto the
    pixel they reflect to.  Cached and read-only because it is reused as a
    constant by both numpy and JAX paths.
    """
    if scale < 1:
        kernel_width = _CUBIC_WIDTH / scale

        def kernel(x):
            return scale * _cubic(scale * x)
    else:
        kernel_width = _CUBIC_WIDTH
        kernel = _cubic
    x = np.arange(1, out_len + 1, dtype=np.float64)[:, None]
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # MATLAB's symmetric rule, 0-based: period 2*in_len, second half reversed.
    period = np.mod(indices.astype(np.int64) - 1, 2 * in_len)
    source = np.where(period < in_len, period, 2 * in_len - 1 - period)
    matrix = np.zeros((out_len, in_len), dtype=np.float64)
    np.add.at(matrix, (np.broadcast_to(np.arange(out_len)[:, None], source.shape), source), weights)
    matrix.flags.writeable = False
    return matrix


def _spatial_axes(ndim: int) -> tuple[int, int]:
    """Axes holding ``H, W`` (see module docstring)."""
    if ndim == 2:
        return (0, 1)
    if ndim >= 3:
        return (ndim - 3, ndim - 2)
    raise ValueError(f"image must have at least 2 dimensions (H x W), got shape with ndim={ndim}")


def _pair(value, name: str) -> tuple:
    """Broadcast a scalar to ``(h, w)``; accept a length-2 sequence as is."""
    if isinstance(value, Real) and not isinstance(value, bool):
        return (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a number or a pair (h, w), got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a pair (h, w), got {value!r}")
    return pair


def _resize_plan(in_hw, scale, output_shape) -> list[tuple[int, np.ndarray]]:
    """``[(dim, matrix), ...]`` in MATLAB's order: the smaller scale first (stable)."""
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale or output_shape")
    if any(n < 1 for n in in_hw):
        raise ValueError(f"input spatial size must be at least 1x1, got {tuple(in_hw)}")
    if scale is not None:
        scales = _pair(scale, "scale")
        for s in scales:
            if isinstance(s, bool) or not isinstance(s, Real) or not math.isfinite(s) or s <= 0:
                raise ValueError(f"scale must be positive and finite, got {scale!r}")
        scales = tuple(float(s) for s in scales)
        out_hw = tuple(math.ceil(s * n) for s, n in zip(scales, in_hw))
    else:
        out_hw = _pair(output_shape, "output_shape")
        for n in out_hw:
            if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
                raise ValueError(f"output_shape must be two integers >= 1, got {output_shape!r}")
        out_hw = tuple(int(n) for n in out_hw)
        scales = tuple(o / n for o, n in zip(out_hw, in_hw))
    order = sorted(range(2), key=lambda d: scales[d])
    return [(d, resize_matrix(int(in_hw[d]), out_hw[d], scales[d])) for d in order]


def _apply_along(xp, img, matrix, axis: int, **kwargs):
    """Contract ``matrix`` (out x in) with ``img`` along ``axis``."""
    return xp.moveaxis(xp.tensordot(matrix, img, axes=([1], [axis]), **kwargs), 0, axis)


def imresize(img, scale=None, output_shape=None) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (antialiased) in float64 numpy.

    ``scale``: positive number or ``(sh, sw)``; output size is
    ``ceil(scale * in)``.  ``output_shape``: ``(H, W)``; the scale is then
    ``out / in`` per axis.  No rounding or clipping is applied.
    """
    img = np.asarray(img, dtype=np.float64)
    axes = _spatial_axes(img.ndim)
    for dim, matrix in _resize_plan([img.shape[a] for a in axes], scale, output_shape):
        img = _apply_along(np, img, matrix, axes[dim])
    return img


def imresize_jax(img, scale=None, output_shape=None) -> jax.Array:
    """:func:`imresize` in float32 JAX, jit-compatible (shapes are static).

    Uses the same float64-built matrices, cast to float32 constants, with
    full-precision matmuls so accelerators do not fall back to TF32/bf16.
    """
    img = jnp.asarray(img, dtype=jnp.float32)
    axes = _spatial_axes(img.ndim)
    for dim, matrix in _resize_plan([img.shape[a] for a in axes], scale, output_shape):
        img = _apply_along(
            jnp, img, np.asarray(matrix, np.float32), axes[dim], precision=jax.lax.Precision.HIGHEST
        )
    return img


# MATLAB rgb2ycbcr: ycbcr = T * rgb + offset, with RGB in [0, 1] and T, offset
# expressed for an output in [0, 255] (ITU-R BT.601).
_YCBCR_T = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_RGB2YCBCR_T = _YCBCR_T / 255
_RGB2YCBCR_OFFSET = _YCBCR_OFFSET / 255
# MATLAB ycbcr2rgb for double: T = 255 * inv(T), offset = inv(T) * offset.
_YCBCR2RGB_T = 255 * np.linalg.inv(_YCBCR_T)
_YCBCR2RGB_OFFSET = -np.linalg.inv(_YCBCR_T) @ _YCBCR_OFFSET


def _xp(img):
    """``(namespace, array)``: jax arrays (and tracers) stay jax, all else float64 numpy."""
    if isinstance(img, jax.Array):
        return jnp, img
    return np, np.asarray(img, dtype=np.float64)


def _affine_channels(img, matrix: np.ndarray, offset: np.ndarray):
    """``out[..., p] = sum_q matrix[p, q] * img[..., q] + offset[p]``, elementwise.

    Written as MATLAB's ``imlincomb`` (scalar multiply-adds) rather than a
    matmul so JAX on accelerators keeps full float32 precision.
    """
    xp, img = _xp(img)
    if img.shape[-1] != matrix.shape[1]:
        raise ValueError(f"expected {matrix.shape[1]} channels in the last axis, got shape {img.shape}")
    rows = [
        sum(float(m) * img[..., q] for q, m in enumerate(row)) + float(off)
        for row, off in zip(matrix, offset)
    ]
    return xp.stack(rows, axis=-1)


def rgb2ycbcr(img):
    """MATLAB ``rgb2ycbcr`` for double RGB in [0, 1]; Y in [16/255, 235/255]."""
    return _affine_channels(img, _RGB2YCBCR_T, _RGB2YCBCR_OFFSET)


def ycbcr2rgb(img):
    """MATLAB ``ycbcr2rgb`` for double input: the matrix inverse of :func:`rgb2ycbcr`."""
    return _affine_channels(img, _YCBCR2RGB_T, _YCBCR2RGB_OFFSET)


def rgb2y(img):
    """Only the luma (Y) channel of :func:`rgb2ycbcr`, shape ``img.shape[:-1]``.

    VDSR trains and evaluates on Y alone.
    """
    return _affine_channels(img, _RGB2YCBCR_T[:1], _RGB2YCBCR_OFFSET[:1])[..., 0]


def modcrop(img, scale: int):
    """Crop axes 0 and 1 (H, W) down to multiples of ``scale``, from bottom/right.

    Same as the MATLAB ``modcrop`` used by VDSR, so HR/LR pairs align exactly.
    """
    if isinstance(scale, bool) or not isinstance(scale, Integral) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % scale, : w - w % scale]
