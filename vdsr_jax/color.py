"""Colour as MATLAB's VDSR scripts see it: integer samples to [0, 1], `rgb2ycbcr`/`ycbcr2rgb`, luminance.

VDSR trains and is evaluated on luminance alone. A colour image's luminance is the Y of MATLAB's
`rgb2ycbcr` (ITU-R BT.601, Y in [16, 235]/255); a one-channel image is its own luminance (v / 255, full
range), because the MATLAB scripts call `rgb2ycbcr` only on three-channel images.
"""
import numpy as np

# MATLAB rgb2ycbcr: ycbcr = T · rgb + offset, RGB in [0, 1], T and offset given for an output in [0, 255].
_YCBCR_T = np.array([
    [65.481, 128.553, 24.966],
    [-37.797, -74.203, 112.0],
    [112.0, -93.786, -18.214],
])
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_RGB2YCBCR_T = _YCBCR_T / 255
_RGB2YCBCR_OFFSET = _YCBCR_OFFSET / 255
# MATLAB ycbcr2rgb for double input: T = 255 · inv(T), offset = −inv(T) · offset.
_YCBCR2RGB_T = 255 * np.linalg.inv(_YCBCR_T)
_YCBCR2RGB_OFFSET = -np.linalg.inv(_YCBCR_T) @ _YCBCR_OFFSET


def _affine_channels(img, matrix: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """`out[..., p] = Σ_q matrix[p, q] · img[..., q] + offset[p]` in float64, as MATLAB's `imlincomb`."""
    img = np.asarray(img, dtype=np.float64)
    if img.shape[-1] != matrix.shape[1]:
        raise ValueError(f"expected {matrix.shape[1]} channels in the last axis, got shape {img.shape}")
    return np.einsum("...q,pq->...p", img, matrix) + offset


def rgb2ycbcr(rgb) -> np.ndarray:
    """MATLAB `rgb2ycbcr` for double RGB (…×3, [0, 1]): float64 YCbCr, Y in [16, 235]/255, Cb/Cr in
    [16, 240]/255. ValueError unless the last axis has 3 channels."""
    return _affine_channels(rgb, _RGB2YCBCR_T, _RGB2YCBCR_OFFSET)


def ycbcr2rgb(ycbcr) -> np.ndarray:
    """MATLAB `ycbcr2rgb` for double input (…×3): the exact inverse of `rgb2ycbcr`, float64, not clipped."""
    return _affine_channels(ycbcr, _YCBCR2RGB_T, _YCBCR2RGB_OFFSET)


def rgb2y(rgb) -> np.ndarray:
    """The Y channel of `rgb2ycbcr` alone: float64 of shape `rgb.shape[:-1]`, in [16, 235]/255."""
    return _affine_channels(rgb, _RGB2YCBCR_T[:1], _RGB2YCBCR_OFFSET[:1])[..., 0]


def max_value(pixels: np.ndarray) -> int:
    """The sample value of full intensity: 255 for uint8, 65535 for uint16."""
    return int(np.iinfo(pixels.dtype).max)


def to_unit(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """H×W×C pixels (C = 1 to 4) as (colour, alpha): float64 in [0, 1] (MATLAB's `im2double`: integer
    samples divided by their full intensity, floating-point samples taken as they are), colour H×W×1 (grey)
    or H×W×3 (RGB), alpha H×W or None."""
    scaled = pixels.astype(np.float64)
    if pixels.dtype.kind != "f":
        scaled /= max_value(pixels)
    if pixels.shape[-1] in (2, 4):
        return scaled[..., :-1], scaled[..., -1]
    return scaled, None


def luminance(pixels: np.ndarray, integer: bool = False) -> np.ndarray:
    """H×W float64 luminance in [0, 1] of H×W×C integer pixels (alpha ignored); see the module docstring.

    `integer=True` gives what MATLAB's `rgb2ycbcr` returns for an integer (uint8/uint16) image: Y rounded to
    the image's own integer levels, as VDSR's training-data script (`generate_train.m`) uses it.
    """
    colour, _ = to_unit(pixels)
    if colour.shape[-1] == 1:
        return colour[..., 0]
    y = rgb2y(colour)
    if integer:
        top = max_value(pixels)
        y = np.floor(y * top + 0.5) / top
    return y


def quantize(values: np.ndarray, dtype) -> np.ndarray:
    """Values in [0, 1] (clipped) to integer samples of `dtype`, halves rounded up as MATLAB's `im2uint8`."""
    return np.floor(np.clip(values, 0, 1) * np.iinfo(dtype).max + 0.5).astype(dtype)
