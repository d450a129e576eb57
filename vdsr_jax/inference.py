"""Run VDSR on images of any size in tiles, so memory and compilations depend on the tile size.

A tile is a window of the image: a core that it writes plus a margin of `depth` pixels on each side (the
receptive field of `depth` 3×3 convolutions), so the core sees exactly what it would see in a whole-image
run. An axis longer than the tile size is cut into equal windows of at most that size; an axis that fits is
one window, zero-padded up to a multiple of BUCKET. Every conv input is multiplied by a mask of the real
pixels, which makes that padding act exactly like the convolution's own zero padding at the image border.
All windows of an image thus have one shape, and one compiled function serves them and every image with the
same padded shape.
"""
import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vdsr_jax.model import VDSR

DEFAULT_TILE = 512
BUCKET = 64  # window sizes are rounded up to multiples of this, so that similar sizes share a compilation


class Tile(NamedTuple):
    """`window`: the rows/columns fed to the network; `core`: those it is trusted for (image coordinates)."""

    window: tuple[slice, slice]
    core: tuple[slice, slice]


@functools.cache
def masked_apply(model: VDSR):
    """jit of (params, x, mask) -> model output, with every conv input zeroed where mask is 0.

    Cached per model description, so a new set of parameters (e.g. each eval during training) reuses the
    compiled function.
    """

    def apply(params, x, mask):
        def mask_conv_inputs(next_fun, args, kwargs, context):
            if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
                args = (args[0] * mask.astype(args[0].dtype), *args[1:])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(mask_conv_inputs):
            return model.apply({"params": params}, x)

    return jax.jit(apply)


def window_length(length: int, tile: int, margin: int) -> int:
    """Window length along an axis: the whole axis if it fits in `tile`, else the shortest multiple of
    BUCKET (at most `tile`) that still needs no more windows than `tile` does; this keeps the overlap small
    for images a little larger than a tile."""
    if length <= tile:
        return length
    count = math.ceil((length - 2 * margin) / (tile - 2 * margin))
    return min(tile, _bucket(math.ceil((length - 2 * margin) / count) + 2 * margin))


def _bucket(length: int) -> int:
    return math.ceil(length / BUCKET) * BUCKET


def _spans(length: int, window: int, margin: int) -> list[tuple[slice, slice]]:
    """(window, core) spans along one axis: windows of exactly `window` pixels whose cores tile the axis and
    keep `margin` pixels of context on every side that is not the image border."""
    if length <= window:
        return [(slice(0, length), slice(0, length))]
    core = window - 2 * margin
    count = math.ceil((length - 2 * margin) / core)
    bounds = [0, *(margin + i * core for i in range(1, count)), length]
    spans = []
    for start, stop in itertools.pairwise(bounds):
        window_start = min(max(start - margin, 0), length - window)
        spans.append((slice(window_start, window_start + window), slice(start, stop)))
    return spans


def tile_grid(height: int, width: int, tile: int, margin: int) -> list[Tile]:
    """Row-major tiles covering a height×width image, windows at most tile×tile."""
    rows, cols = (_spans(n, window_length(n, tile, margin), margin) for n in (height, width))
    return [Tile((r, c), (core_r, core_c)) for r, core_r in rows for c, core_c in cols]


class TiledVDSR:
    """VDSR on a Y image (H×W, values in [0, 1]) of any size, run tile by tile; see the module docstring."""

    def __init__(self, model: VDSR, params: dict, tile: int = DEFAULT_TILE):
        if tile <= 2 * model.depth:
            raise ValueError(f"tile size {tile} must exceed twice the receptive field ({2 * model.depth})")
        self.model = model
        self.params = params
        self.tile = tile
        self.margin = model.depth
        self.compiled = masked_apply(model)

    def grid(self, height: int, width: int) -> list[Tile]:
        return tile_grid(height, width, self.tile, self.margin)

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """The shape every window of a height×width image is padded to (axes that fit in a tile are
        padded to a multiple of BUCKET, so that images of similar sizes share a compilation)."""
        return tuple(
            min(self.tile, _bucket(n)) if n <= self.tile else window_length(n, self.tile, self.margin)
            for n in (height, width)
        )

    def window(self, y: np.ndarray, padded_shape: tuple[int, int]) -> np.ndarray:
        """Network output for one window `y` (h×w), computed on a zero-padded `padded_shape` input."""
        h, w = y.shape
        x = np.zeros((1, *padded_shape, 1), np.float32)
        x[0, :h, :w, 0] = y
        mask = np.zeros_like(x)
        mask[0, :h, :w, 0] = 1
        return np.asarray(self.compiled(self.params, jnp.asarray(x), jnp.asarray(mask)))[0, :h, :w, 0]

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """The VDSR output for the whole Y image `y`, float32."""
        y = np.asarray(y)
        if y.ndim != 2:
            raise ValueError(f"expected a 2-D Y image, got shape {y.shape}")
        out = np.empty(y.shape, np.float32)
        shape = self.padded_shape(*y.shape)
        for tile in self.grid(*y.shape):
            result = self.window(y[tile.window], shape)
            out[tile.core] = result[core_in_window(tile)]
        return out


def core_in_window(tile: Tile) -> tuple[slice, slice]:
    """The tile's core in the coordinates of its window."""
    return tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(tile.core, tile.window))
