"""The Python API on arrays: `upscale` an image as `vdsr-upscale` would, `load` weights of any form.

    model, params = vdsr_jax.load("ckpt/pytorch_vdsr")     # or a .npz, a training workdir, …
    big = vdsr_jax.upscale(pixels, 2, weights="ckpt/pytorch_vdsr")

See docs/api.md. Both are imported lazily by `vdsr_jax/__init__.py`, so `import vdsr_jax` stays light.
"""
import logging
import os
import warnings
from numbers import Real
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from vdsr_jax.checkpoint import validate_params
from vdsr_jax.errors import ImageError
from vdsr_jax.inference import DEFAULT_TILE, MIN_SIDE, TiledVDSR, upscale_image
from vdsr_jax.media.images import pillow_colours, profile_for
from vdsr_jax.model import VDSR
from vdsr_jax.pretrained import DEFAULT_PATH, NoBundledWeights
from vdsr_jax.weight_forms import load_weights
from vdsr_jax.resize import MAX_SCALE

_loaded: tuple = (None, None)  # (key, (model, params)) of the latest weights `upscale` was given


def load(path=None, *, compute_dtype: str = "float32") -> tuple[VDSR, dict]:
    """`(model, params)` from weights in any form the commands take as --checkpoint
    (`vdsr_jax.weight_forms.load_weights`): a checkpoint folder (vdsr-convert, vdsr-train), a training
    workdir (its latest checkpoint), a `.npz` or `.safetensors` weights file (vdsr_jax's layout, or
    pytorch-vdsr's state_dict in safetensors), a torch file (needs torch; read without running code);
    `None`: the weights bundled with the package.

    `model` is a `VDSR` computing in `compute_dtype` ('float32' or 'bfloat16'); `params` its float32
    parameter tree. What the commands print as notes (which weights of a torch file were taken, float64
    rounded) comes as a UserWarning. Raises `vdsr_jax.pretrained.NoBundledWeights` for `None` while the
    package ships no weights; `CheckpointError` or `ConversionError` for a path that is missing or holds
    no readable VDSR weights.
    """
    absl = logging.getLogger("absl")  # orbax warns through it on every read-only load
    level = absl.level
    absl.setLevel(logging.ERROR)
    notes = []
    try:
        loaded = load_weights(path, compute_dtype, notes)
    except NoBundledWeights:  # its own message names the commands' --checkpoint
        raise NoBundledWeights("no pretrained weights ship with this version of vdsr_jax yet: give weights (a "
                               "checkpoint folder or training workdir, a .npz, .safetensors or torch file), e.g. "
                               "vdsr_jax.load(path) or vdsr_jax.upscale(image, 2, weights=path)") from None
    finally:
        absl.setLevel(level)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return loaded


def upscale(image, scale, *, weights=None, tile: int = DEFAULT_TILE):
    """`image` upscaled by `scale` with VDSR, exactly as `vdsr-upscale` writes the same pixels.

    `image`: a numpy array (or anything `np.asarray` takes, e.g. a JAX array) of H×W or H×W×C samples,
    C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), of dtype uint8, uint16 or floating point in
    [0, 1]; or a PIL image (EXIF orientation applied; modes as `vdsr-upscale` reads files: palette,
    CMYK, 1-bit … to L, LA, RGB or RGBA, 16-bit grey as uint16, F as float). H and W at least 2.
    `scale`: a number from 1 to 16 (`resize.MAX_SCALE`); the output is ⌈scale·H⌉×⌈scale·W⌉.

    Returns the same kind (numpy array or PIL image), dtype and channels. Colour goes through VDSR on its
    Y channel (MATLAB YCbCr) with bicubic Cb and Cr; grey is its own Y and stays grey; alpha is resized
    bicubic. uint8/uint16 results are rounded as the command writes them; floating-point results are the
    same computation without rounding, clipped to [0, 1], in the input's dtype (rounding a float64
    result of `k / 65535` inputs to 16 bits gives what the command writes for the 16-bit image).

    `weights`: None (the bundled weights), a path in any form `load` takes, or a `(model, params)` pair.
    A path is loaded once and kept while it is unchanged (its size and modification times: a checkpoint
    added to a folder or workdir is seen), so a loop over images reads it once; the compiled network is
    kept per model and padded tile shape. `tile`: the tile size in pixels (as `vdsr-upscale --tile`);
    memory follows it, the result does not.

    Raises ValueError for an array that is not an image (another dtype such as int32 or bool, float
    samples outside [0, 1] or not finite, another shape, a side under 2), a scale outside [1, 16] or a
    bad tile; TypeError for a `weights` of another kind; `load`'s errors for the weights.
    """
    pixels, restore = _pixels(image)
    scale = _scale(scale)
    if isinstance(tile, bool) or not isinstance(tile, int):
        raise ValueError(f"tile must be an integer number of pixels, got {tile!r}")
    model, params = _weights(weights)
    net = TiledVDSR(model, params, tile=tile)  # ValueError for a tile within the receptive field
    return restore(upscale_image(pixels, scale, net)[0])


def _scale(scale) -> float:
    """`scale` as a float in [1, MAX_SCALE] (what `vdsr-upscale --scale` accepts); ValueError otherwise."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not 1 <= float(scale) <= MAX_SCALE:
        raise ValueError(f"scale must be a number from 1 to {MAX_SCALE}, got {scale!r}")  # NaN fails the range
    return float(scale)


def _pixels(image):
    """(H×W×C pixels for `upscale_image`, a function giving an output in the kind of `image`)."""
    if isinstance(image, Image.Image):
        return _pil_pixels(image)
    array = np.asarray(image)
    if array.dtype.kind == "i" and not hasattr(image, "dtype"):  # their bit depth is unknown: not guessed
        raise ValueError("nested lists of Python ints become an int64 array, which is not an image: pass "
                         "np.asarray(samples, np.uint8) for 8-bit samples (np.uint16 for 16-bit)")
    pixels = _checked(array, "array")
    return pixels, (lambda out: out[..., 0]) if array.ndim == 2 else (lambda out: out)


def _pil_pixels(image: Image.Image):
    """`_pixels` of a PIL image: its pixels as `vdsr-upscale`'s reader gives a file's (EXIF orientation
    applied, `media.images.pillow_colours`), and the output as a PIL image of the matching mode that
    carries the input's ICC profile where it applies to the output's colours."""
    image = ImageOps.exif_transpose(image)
    icc = image.info.get("icc_profile")
    if image.mode == "F":
        array = np.asarray(image)
    elif image.mode == "I":
        raise ValueError("PIL image of mode I (32-bit integer samples): not an image mode vdsr_jax reads; "
                         "convert it to I;16 or 8 bits, or pass a uint16 array")
    else:
        try:
            array, icc = pillow_colours(image, "PIL image")
        except (ImageError, ValueError) as e:  # Pillow's ValueError: a mode it cannot convert to RGB
            raise ValueError(f"PIL image of mode {image.mode}: {e}") from None
    pixels = _checked(array, f"PIL image of mode {image.mode}")

    def restore(out: np.ndarray) -> Image.Image:
        result = Image.fromarray(out[..., 0] if out.shape[-1] == 1 else out)
        if profile_for(icc, out.shape[-1]):
            result.info["icc_profile"] = icc  # Pillow's PNG and TIFF saves embed it; pass it to JPEG's, WebP's
        return result

    return pixels, restore


def _checked(array: np.ndarray, what: str) -> np.ndarray:
    """`array` as H×W×C pixels (C = 1 to 4) of uint8, uint16 or floating point in [0, 1], H, W ≥ 2;
    ValueError naming `what` and the problem otherwise."""
    kind, size, shape = array.dtype.kind, array.dtype.itemsize, array.shape
    if not (kind == "u" and size in (1, 2) or kind == "f"):
        raise ValueError(f"{what} of dtype {array.dtype} is not an image: samples must be uint8, uint16 or "
                         "floating point in [0, 1]")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or not 1 <= array.shape[-1] <= 4:
        raise ValueError(f"{what} of shape {shape} is not an image: H×W or H×W×C with C = 1 (grey), "
                         "2 (grey + alpha), 3 (RGB) or 4 (RGBA)")
    if min(array.shape[:2]) < MIN_SIDE:
        raise ValueError(f"{what} of shape {shape} is too small: at least {MIN_SIDE}×{MIN_SIDE} pixels")
    if kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{what} holds NaN or infinite samples")
        low, high = float(array.min()), float(array.max())
        if low < 0 or high > 1:
            raise ValueError(f"{what} of dtype {array.dtype} holds samples from {low:g} to {high:g}; floating-point "
                             "images must lie in [0, 1] (divide by 255 or 65535 first)")
    return array


def _weights(weights) -> tuple[VDSR, dict]:
    """(model, params) of `upscale`'s `weights`. Only weights other than the latest are loaded (a path
    that differs or was modified since) or checked (a pair of other objects: the cache holds them, so
    their ids stay theirs)."""
    global _loaded
    if isinstance(weights, tuple) and len(weights) == 2 and isinstance(weights[0], VDSR):
        key = ("pair", id(weights[0]), id(weights[1]))
        if _loaded[0] != key:
            validate_params(weights[1], weights[0])
            _loaded = (key, weights)
        return weights
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, a path or a (model, params) pair, got {type(weights).__name__}")
    key = _path_key(weights)
    if key is None or _loaded[0] != key:
        _loaded = (key, load(weights))
    return _loaded[1]


def _path_key(path):
    """What identifies the weights at `path` (None: the bundled file) between calls: the resolved path, its
    size, and the latest modification time of it and (for a folder) its entries, which changes when a
    checkpoint is added to a checkpoint folder or to a workdir's `checkpoints/`; None where it cannot be
    read (loading it then says why)."""
    resolved = (DEFAULT_PATH if path is None else Path(path).expanduser()).resolve()
    try:
        status = resolved.stat()
        entries = list(resolved.iterdir()) if resolved.is_dir() else []
        modified = max([status.st_mtime_ns, *(entry.stat().st_mtime_ns for entry in entries)])
    except OSError:
        return None
    return str(resolved), status.st_size, modified
