"""MATLAB's bicubic `imresize`, `modcrop` and the bicubic degradation that VDSR learns to undo.

VDSR's training pairs and its published PSNR/SSIM come from MATLAB's `imresize(…, 'bicubic')`; PIL, OpenCV
and `jax.image.resize` resize differently and move PSNR by tenths of a dB. One mechanism reproduces it
here: per axis, banded weights (`resize_weights`, a transcription of `contributions` in MATLAB's
`imresize.m`: Keys' cubic with a = −0.5, the kernel widened by 1/scale when shrinking, symmetric
(mirrored) edges). `imresize` applies them to whole arrays in float64 (equal to MATLAB's definition to
1e-10); `BicubicWindows` applies them to one output window at a time, for tiled inference.

Spatial axes: a 2-D array is H×W; an array with ndim ≥ 3 has a trailing channel axis, so H, W are axes
−3, −2 (H×W×C, N×H×W×C, …); every other axis is resized independently.
"""
import functools
import math
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

_CUBIC_WIDTH = 4.0
MAX_SCALE = 16  # the largest upscaling factor the tools accept (training, evaluation, upscale)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


class ResizeWeights(NamedTuple):
    """Output sample i of one axis = Σ_k weights[i, k] · input[first[i] + k] (float64, read-only)."""

    first: np.ndarray  # int64 (out_len,)
    weights: np.ndarray  # float64 (out_len, taps)
    in_len: int

    def dense(self) -> np.ndarray:
        """The out_len × in_len float64 matrix."""
        out_len, taps = self.weights.shape
        matrix = np.zeros((out_len, self.in_len))
        matrix[np.arange(out_len)[:, None], self.first[:, None] + np.arange(taps)] = self.weights
        return matrix

    def window(self, span: slice) -> tuple[slice, np.ndarray]:
        """(input span, dense weights) of the output samples `span`: only the inputs they read."""
        first, weights = self.first[span], self.weights[span]
        lo, hi = int(first.min()), int(first.max()) + weights.shape[1]
        return slice(lo, hi), ResizeWeights(first - lo, weights, hi - lo).dense()


@functools.lru_cache(maxsize=128)  # banded, so small: out_len × (⌈4/scale⌉ + 2) floats each
def resize_weights(in_len: int, out_len: int, scale: float) -> ResizeWeights:
    """MATLAB's bicubic weights along one axis of `in_len` samples resized by `scale` to `out_len`.

    Transcribes `contributions` of MATLAB's `imresize.m`: output pixel x (1-based) reads around
    u = x/scale + ½(1 − 1/scale); when shrinking the kernel is widened to 4/scale and scaled by `scale`
    (antialiasing); weights are normalised per output pixel; taps outside the signal are mirrored
    (`aux = [1:in, in:-1:1]`) and added onto the pixel they reflect to.
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
    # MATLAB's symmetric rule, 0-based: period 2·in_len, second half reversed.
    period = np.mod(indices.astype(np.int64) - 1, 2 * in_len)
    source = np.where(period < in_len, period, 2 * in_len - 1 - period)
    band = min(int((source.max(axis=1) - source.min(axis=1)).max()) + 1, in_len)
    first = np.minimum(source.min(axis=1), in_len - band)
    banded = np.zeros((out_len, band))
    np.add.at(banded, (np.broadcast_to(np.arange(out_len)[:, None], source.shape), source - first[:, None]),
              weights)
    first.flags.writeable = banded.flags.writeable = False
    return ResizeWeights(first, banded, in_len)


PHASE_TAPS = 5  # taps of each integer-scale phase filter: input samples q − 2 … q + 2


def phase_filters(scale: int) -> np.ndarray:
    """MATLAB's bicubic upscaling by an integer `scale` as `scale` fixed filters: float64 scale×PHASE_TAPS,
    output sample scale·q + p (0-based) = Σ_k filters[p, k] · input[q + k − 2], with the input extended by
    2 samples of symmetric padding (mirrored, edge sample repeated: MATLAB's rule, numpy's 'symmetric').

    At an integer scale output sample scale·q + p reads around input q + (p + ½)/scale − ½, so its weights
    depend on the phase p alone; they are read off `resize_weights` at an inner sample, where no tap is
    mirrored. Holds for inputs of at least 2 samples. ValueError unless `scale` is an integer ≥ 1."""
    if isinstance(scale, bool) or not isinstance(scale, Integral) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    inner = PHASE_TAPS // 2
    dense = resize_weights(PHASE_TAPS, scale * PHASE_TAPS, float(scale)).dense()
    return dense[inner * scale:(inner + 1) * scale]


def spatial_axes(ndim: int) -> tuple[int, int]:
    """The axes holding H, W (see the module docstring); ValueError for fewer than 2 dimensions."""
    if ndim == 2:
        return (0, 1)
    if ndim >= 3:
        return (ndim - 3, ndim - 2)
    raise ValueError(f"image must have at least 2 dimensions (H x W), got shape with ndim={ndim}")


def _pair(value, name: str) -> tuple:
    """A scalar as (value, value); a length-2 sequence as it is."""
    if isinstance(value, Real) and not isinstance(value, bool):
        return (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a number or a pair (h, w), got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must be a number or a pair (h, w), got {value!r}")
    return pair


def resize_plan(in_hw, scale=None, output_shape=None) -> list[tuple[int, ResizeWeights]]:
    """[(dim, weights), …] for H (dim 0) and W (dim 1) in MATLAB's order: the smaller scale first (stable,
    so rows first for equal scales). Exactly one of `scale` (number or (sh, sw); output ⌈scale·n⌉) and
    `output_shape` ((H, W); scale out/in per axis); ValueError for anything else."""
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
    return [(d, resize_weights(int(in_hw[d]), out_hw[d], scales[d])) for d in order]


def imresize(img, scale=None, output_shape=None) -> np.ndarray:
    """MATLAB `imresize(img, scale, 'bicubic')` (antialiased) in float64; no rounding or clipping.

    `img`: H×W or …×H×W×C, any real dtype. `scale`: a positive number or (sh, sw), output ⌈scale·n⌉;
    or `output_shape` (H, W). ValueError for bad arguments.
    """
    img = np.asarray(img, dtype=np.float64)
    axes = spatial_axes(img.ndim)
    for dim, weights in resize_plan([img.shape[a] for a in axes], scale, output_shape):
        img = np.moveaxis(np.tensordot(weights.dense(), img, axes=([1], [axes[dim]])), 0, axes[dim])
    return img


def modcrop(img, scale: int):
    """`img` (axes 0, 1 = H, W) cropped from the bottom/right to multiples of `scale`, as VDSR's MATLAB
    `modcrop`, so HR and LR align exactly. ValueError unless `scale` is a positive integer."""
    if isinstance(scale, bool) or not isinstance(scale, Integral) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = img.shape[0], img.shape[1]
    return img[: h - h % scale, : w - w % scale]


def bicubic_degradation(hr, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(bicubic input, target) for one HR image (H×W or H×W×C float): the target is `modcrop(hr, scale)`,
    the input its MATLAB-bicubic downscale by 1/scale upscaled back by `scale` (same shape, float64,
    unrounded), as the paper's MATLAB scripts make training pairs and evaluate (Kim et al. 2016, §4.1)."""
    target = modcrop(np.asarray(hr, np.float64), scale)
    return imresize(imresize(target, 1.0 / scale), float(scale)), target


class BicubicWindows:
    """MATLAB bicubic upscaling of a height×width image by `scale`, one output window at a time: memory and
    time per window follow the window's size, not the image's. Rows are resized first, as `imresize` does
    for equal scales."""

    def __init__(self, height: int, width: int, scale: float):
        (_, self.rows), (_, self.cols) = resize_plan((height, width), scale=float(scale))
        self.out_shape = (len(self.rows.first), len(self.cols.first))

    def __call__(self, channels_of, window: tuple[slice, slice]) -> np.ndarray:
        """The upscaled image over `window` (output rows, columns): h×w×C float64, where
        `channels_of(input rows, input columns)` gives the input region as float64 H'×W'×C."""
        (rows, row_weights), (cols, col_weights) = self.rows.window(window[0]), self.cols.window(window[1])
        upscaled = np.tensordot(row_weights, channels_of(rows, cols), axes=([1], [0]))
        return np.moveaxis(np.tensordot(col_weights, upscaled, axes=([1], [1])), 0, 1)
