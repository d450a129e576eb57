"""VDSR on images of any size, run in tiles, so memory and compilations depend on the tile size.

A tile is a window of the image: a core that it writes plus a margin of `depth` pixels on each side (the
receptive field of `depth` 3×3 convolutions), so the core sees exactly what it would see in a whole-image
run. An axis longer than the tile size is cut into equal windows of at most that size; an axis that fits is
one window, zero-padded up to a multiple of BUCKET. Every conv input is multiplied by a mask of the real
pixels, which makes that padding act exactly like the convolution's own zero padding at the image border.
All windows of an image thus have one shape, and one compiled function serves them and every image with the
same padded shape.

`TiledVDSR` runs the network on a Y image (evaluation); `upscale_image` upscales the pixels of an image file:
colour through VDSR on Y with bicubic Cb/Cr, a grey image as its own Y, alpha resized bicubic.
"""
import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vdsr_jax.color import quantize, rgb2ycbcr, to_unit, ycbcr2rgb
from vdsr_jax.errors import ImageError
from vdsr_jax.model import VDSR
from vdsr_jax.resize import BicubicWindows

DEFAULT_TILE = 512
DEFAULT_BATCH = 4  # windows per network call on the frame path (`upscale_frames`)
BUCKET = 64  # window sizes are rounded up to multiples of this, so that similar sizes share a compilation
MIN_SIDE = 2  # MATLAB's bicubic needs two samples per axis to mean anything


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
    """VDSR on a Y image of any size, run tile by tile; see the module docstring.

    `net(y)`: y is H×W (float, the bicubic-upscaled Y in [0, 1]); returns the float32 H×W network output
    (not clipped). ValueError if `tile` does not exceed twice the receptive field.
    """

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

    def windows(self, ys: list[np.ndarray], padded_shape: tuple[int, int], batch: int) -> list[np.ndarray]:
        """`window` for many windows of one padded shape, `batch` per call; a short last call is filled with
        empty windows, so every call has one shape and one compilation serves them all. Each output equals
        what `window` gives for that window alone (XLA CPU computes batch entries independently)."""
        outs = []
        for start in range(0, len(ys), batch):
            chunk = ys[start:start + batch]
            x = np.zeros((batch, *padded_shape, 1), np.float32)
            mask = np.zeros_like(x)
            for i, y in enumerate(chunk):
                x[i, :y.shape[0], :y.shape[1], 0] = y
                mask[i, :y.shape[0], :y.shape[1], 0] = 1
            out = np.asarray(self.compiled(self.params, jnp.asarray(x), jnp.asarray(mask)))
            outs.extend(out[i, :y.shape[0], :y.shape[1], 0] for i, y in enumerate(chunk))
        return outs

    def run_tiles(self, height: int, width: int, planes_of):
        """The one tile loop: for each tile of a height×width image, yields (core, planes, refined), where
        `planes_of(window)` gives the network's input planes over a window (h×w×C float, plane 0 = Y),
        `planes` are those planes over the tile's core and `refined` the same with Y replaced by VDSR's."""
        shape = self.padded_shape(height, width)
        for tile in self.grid(height, width):
            planes = planes_of(tile.window)
            core = core_in_window(tile)
            refined = planes[core].copy()
            refined[..., 0] = self.window(planes[..., 0], shape)[core]
            yield tile.core, planes[core], refined

    def __call__(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 2:
            raise ValueError(f"expected a 2-D Y image, got shape {y.shape}")
        out = np.empty(y.shape, np.float32)
        for core, _, refined in self.run_tiles(*y.shape, lambda window: y[window][..., None]):
            out[core] = refined[..., 0]
        return out


def core_in_window(tile: Tile) -> tuple[slice, slice]:
    """The tile's core in the coordinates of its window."""
    return tuple(slice(c.start - w.start, c.stop - w.start) for c, w in zip(tile.core, tile.window))


def _planes_of(pixels: np.ndarray):
    """planes_of for `run_tiles` after bicubic upscaling: a region of `pixels` as float64 planes, Y first
    (grey: its own value; colour: Y, Cb, Cr of `rgb2ycbcr`), then alpha if any."""

    def planes_of(rows: slice, cols: slice) -> np.ndarray:
        colour, alpha = to_unit(pixels[rows, cols])
        planes = colour if colour.shape[-1] == 1 else rgb2ycbcr(colour)
        return planes if alpha is None else np.concatenate([planes, alpha[..., None]], axis=-1)

    return planes_of


def _to_pixels(planes: np.ndarray, channels: int, dtype) -> np.ndarray:
    """Planes of `_planes_of` back to `channels` samples of `dtype`: integer samples rounded as `quantize`
    does, floating-point ones only clipped to [0, 1]."""
    colour = planes[..., :1] if channels in (1, 2) else ycbcr2rgb(planes[..., :3])
    values = colour if channels in (1, 3) else np.concatenate([colour, planes[..., -1:]], axis=-1)
    return np.clip(values, 0, 1).astype(dtype) if np.dtype(dtype).kind == "f" else quantize(values, dtype)


def upscale_image(pixels: np.ndarray, scale: float, net: TiledVDSR, bicubic: bool = False, progress=None):
    """(VDSR output, bicubic output or None) of H×W×C pixels upscaled by `scale` (≥ 1): same dtype and
    channels, ⌈scale·H⌉×⌈scale·W⌉. Samples are uint8/uint16 (results rounded, as `vdsr-upscale` writes them)
    or floating-point in [0, 1] (results clipped to [0, 1], not rounded). The network input is MATLAB's
    bicubic upscale of Y; Cb, Cr and alpha are bicubic. `progress.update(1)` per tile. ImageError for an
    image under 2×2."""
    height, width, channels = pixels.shape
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"image is {width}×{height} pixels; at least {MIN_SIDE}×{MIN_SIDE} needed")
    windows = BicubicWindows(height, width, scale)
    planes_of = _planes_of(pixels)
    out = np.empty((*windows.out_shape, channels), pixels.dtype)
    plain = np.empty_like(out) if bicubic else None
    if progress is not None:
        progress.reset(total=len(net.grid(*windows.out_shape)))
    for core, planes, refined in net.run_tiles(*windows.out_shape, lambda window: windows(planes_of, window)):
        out[core] = _to_pixels(refined, channels, pixels.dtype)
        if plain is not None:
            plain[core] = _to_pixels(planes, channels, pixels.dtype)
        if progress is not None:
            progress.update(1)
    return out, plain


def upscale_frames(items, scale: float, net: TiledVDSR, batch: int = DEFAULT_BATCH):
    """The frame path of `upscale_image`, streamed: `items` yields (pixels, tag); yields (upscaled pixels, tag)
    in the same order, each equal to `upscale_image(pixels, scale, net)[0]`.

    Consecutive frames of one shape and dtype are gathered until their tiles fill `batch` windows, which go
    to the device in one call of the one compiled function for that shape; so memory follows the frame
    size, the tile size and `batch`, never the number of frames. ImageError for a frame under 2×2."""
    group, capacity = [], 1
    for pixels, tag in items:
        if group and (pixels.shape, pixels.dtype) != (group[0][0].shape, group[0][0].dtype):
            yield from _upscale_group(group, scale, net, batch)
            group = []
        if not group:
            if min(pixels.shape[:2]) < MIN_SIDE:
                raise ImageError(f"frame is {pixels.shape[1]}×{pixels.shape[0]} pixels; "
                                 f"at least {MIN_SIDE}×{MIN_SIDE} needed")
            tiles = len(net.grid(*BicubicWindows(*pixels.shape[:2], scale).out_shape))
            capacity = max(1, batch // tiles)
        group.append((pixels, tag))
        if len(group) >= capacity:
            yield from _upscale_group(group, scale, net, batch)
            group = []
    if group:
        yield from _upscale_group(group, scale, net, batch)


def _upscale_group(group, scale: float, net: TiledVDSR, batch: int):
    """(upscaled, tag) of frames of one shape, all their tiles run in batches of `batch` windows."""
    height, width, channels = group[0][0].shape
    dtype = group[0][0].dtype
    windows = BicubicWindows(height, width, scale)
    shape = net.padded_shape(*windows.out_shape)
    grid = net.grid(*windows.out_shape)
    jobs = []
    for index, (pixels, _) in enumerate(group):
        planes_of = _planes_of(pixels)
        jobs.extend((index, tile, windows(planes_of, tile.window)) for tile in grid)
    ys = net.windows([planes[..., 0] for _, _, planes in jobs], shape, batch)
    outs = [np.empty((*windows.out_shape, channels), dtype) for _ in group]
    for (index, tile, planes), y in zip(jobs, ys):
        core = core_in_window(tile)
        refined = planes[core].copy()
        refined[..., 0] = y[core]
        outs[index][tile.core] = _to_pixels(refined, channels, dtype)
    for out, (_, tag) in zip(outs, group):
        yield out, tag
