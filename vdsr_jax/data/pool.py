"""Training data whose memory is set by a budget, not by the dataset: a device-resident pool of exact tiles.

The `exact` mode (`patches.prepare_pairs`) keeps every (downsize, scale) variant of every image as float32
pairs on every device: 1.5 GB for the 291 images, ~93 GB for DIV2K. The `pool` mode keeps P tiles instead:

- **Tiles, exact.** A tile is a T×T window (`config.data.tile_size`) of one variant's (bicubic input,
  target) pair, computed on the host from only the HR pixels it depends on: MATLAB's banded bicubic weights
  (`vdsr_jax.resize`) restricted to the window, chained as downsize → modcrop → ↓scale → ↑scale. It equals
  the same window of "MATLAB-resize the whole image" (to float rounding, tested), so there is no border
  approximation; the device samples 41×41 patches inside tiles with the exact mode's sampler
  (`patches.sample_patches`: random tile ∝ positions, position, rotation, flip). What is lost: patches
  that would straddle two tiles, and freshness — each tile serves `refresh_every_steps · P / refresh_tiles`
  steps before it is replaced.
- **The pool.** P = ⌊device_budget_mib / (8·T²)⌋ tiles (rounded down to a multiple of `refresh_tiles`),
  replicated on every device as one `PatchSource`. Every `refresh_every_steps` steps the next
  `refresh_tiles` slots (cyclically) are replaced by tiles computed in background threads while the device
  trains; tiles come in groups of `tiles_per_image` from one decoded image, so decoding is amortised.
- **Deterministic.** The tile of slot j after pool epoch e (= step // refresh_every_steps) depends only on
  (seed, the epoch slot j was last refreshed, j's group): a resume rebuilds the same pool, and the batch is
  the same for any device or process count.
- **Host.** Images stay on disk (TFDS array_record, random access); the host holds a few decoded images
  (one per worker) and the tiles of one refresh. Several processes: image shapes are read from the PNG
  headers, each process those of its share, and exchanged; each process decodes only the images of the
  tile groups it builds (groups g ≡ process index mod process count), in the background, and the new tiles
  are all-gathered at the refresh step.
- **Keeping up.** A step whose refresh is not built yet waits for it (the pool is a function of the step):
  the host sustains (tiles/s) · `refresh_every_steps` · batch / `refresh_tiles` patches/s.
  `TilePool.input_report` measures the waits and the period that keeps the host 3× ahead.
"""
import concurrent.futures
import math
import os
import time
from typing import NamedTuple, Sequence

import jax
import numpy as np

from vdsr_jax.color import luminance
from vdsr_jax.data.patches import Catalogue, PatchSource, variant_shape
from vdsr_jax.data.sources import ImageStore
from vdsr_jax.errors import ConfigError, check_integer
from vdsr_jax.resize import resize_plan

BYTES_PER_PIXEL = 8  # float32 input + float32 target


def _resize_with(img: np.ndarray, matrices: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Resize along each (dim, dense weights) in order, as `imresize` does."""
    for dim, matrix in matrices:
        img = np.moveaxis(np.tensordot(matrix, img, axes=([1], [dim])), 0, dim)
    return img


def tile_pair(image: np.ndarray, downsize: float, scale: int, top: int, left: int, height: int, width: int):
    """(bicubic input, target) float64 height×width at (top, left) of the (downsize, scale) variant of
    `image` (H×W×C integers; training luminance), reading only the pixels the window depends on. Equals
    `bicubic_degradation(modcrop(imresize(Y, downsize), scale), scale)` cropped to the window."""
    h, w = image.shape[:2]
    down_plan = None
    if downsize != 1:
        down_plan = resize_plan((h, w), scale=float(downsize))
        h, w = variant_shape(h, w, downsize, 1)
    h, w = h - h % scale, w - w % scale
    shrink = resize_plan((h, w), scale=1.0 / scale)
    lr_hw = [0, 0]
    for dim, weights in shrink:
        lr_hw[dim] = len(weights.first)
    grow = resize_plan(tuple(lr_hw), scale=float(scale))
    window = {0: slice(top, top + height), 1: slice(left, left + width)}
    lr_span, grow_matrices = {}, []
    for dim, weights in grow:
        lr_span[dim], matrix = weights.window(window[dim])
        grow_matrices.append((dim, matrix))
    hr_span, shrink_matrices = {}, []
    for dim, weights in shrink:
        hr_span[dim], matrix = weights.window(lr_span[dim])
        shrink_matrices.append((dim, matrix))
    need = {d: slice(min(hr_span[d].start, window[d].start), max(hr_span[d].stop, window[d].stop)) for d in (0, 1)}
    if down_plan is None:
        variant = luminance(image[need[0], need[1]], integer=True)
    else:
        original_span, downsize_matrices = {}, []
        for dim, weights in down_plan:
            original_span[dim], matrix = weights.window(need[dim])
            downsize_matrices.append((dim, matrix))
        variant = _resize_with(luminance(image[original_span[0], original_span[1]], integer=True), downsize_matrices)

    def crop(span0, span1):
        return variant[span0.start - need[0].start:span0.stop - need[0].start,
                       span1.start - need[1].start:span1.stop - need[1].start]

    target = crop(window[0], window[1])
    return _resize_with(_resize_with(crop(hr_span[0], hr_span[1]), shrink_matrices), grow_matrices), target


class PoolLayout(NamedTuple):
    """How many tiles, and how they are grouped and refreshed (see the module docstring)."""

    slots: int  # P
    tile: int  # T
    per_image: int  # tiles per group (one image)
    refresh_tiles: int  # R, a multiple of per_image dividing P
    refresh_every: int  # K steps

    @property
    def groups(self) -> int:
        return self.slots // self.per_image

    @property
    def device_bytes(self) -> int:
        return self.slots * self.tile**2 * BYTES_PER_PIXEL + self.slots * 12

    def refresh_bytes(self) -> int:
        return self.refresh_tiles * self.tile**2 * BYTES_PER_PIXEL


def layout_from_config(data_config, patch_size: int) -> PoolLayout:
    """The pool that `config.data` asks for (its `device_budget_mib` > 0); ConfigError naming the first pool
    field that is not a positive integer or that leaves the pool unable to hold one batch."""
    for name in ("tile_size", "tiles_per_image", "refresh_tiles", "refresh_every_steps"):
        check_integer(f"data.{name}", data_config[name])
    tile, per_image, refresh = data_config.tile_size, data_config.tiles_per_image, data_config.refresh_tiles
    if tile < patch_size:
        raise ConfigError(f"config.data.tile_size={tile} is smaller than the patch ({patch_size})")
    if refresh % per_image:
        raise ConfigError(f"config.data.refresh_tiles={refresh} must be a positive multiple of "
                          f"data.tiles_per_image={per_image}")
    slot_bytes = tile * tile * BYTES_PER_PIXEL + 12
    slots = int(data_config.device_budget_mib * 2**20 // slot_bytes) // refresh * refresh
    if slots < refresh:
        need = math.ceil(refresh * slot_bytes / 2**20)
        raise ConfigError(f"config.data.device_budget_mib={data_config.device_budget_mib:g} is too small for one "
                          f"refresh of {refresh} tiles of {tile}×{tile} (one batch's pool): it needs ≥ {need} MiB")
    return PoolLayout(slots, tile, per_image, refresh, data_config.refresh_every_steps)


def check_config(data_config, patch_size: int) -> None:
    """ConfigError naming the first `config.data` field of the pool mode that cannot work."""
    layout_from_config(data_config, patch_size)
    check_integer("data.workers", data_config.workers, 0)


def group_plan(seed: int, epoch: int, group: int, catalogue: Catalogue, layout: PoolLayout):
    """(image, [(downsize, scale, top, left, height, width)] × per_image): a pure function of its arguments."""
    rng = np.random.default_rng([seed, epoch, group])
    image = int(rng.choice(len(catalogue.weights), p=catalogue.weights / catalogue.weights.sum()))
    options = catalogue.variants[image]
    positions = np.array([vh * vw for _, _, vh, vw in options], np.float64)
    tiles = []
    for _ in range(layout.per_image):
        d, s, vh, vw = options[int(rng.choice(len(options), p=positions / positions.sum()))]
        th, tw = min(layout.tile, vh), min(layout.tile, vw)
        tiles.append((d, s, int(rng.integers(0, vh - th + 1)), int(rng.integers(0, vw - tw + 1)), th, tw))
    return image, tiles


def last_refresh(group: int, epoch: int, layout: PoolLayout) -> int:
    """The pool epoch at which `group` was last filled: all groups at 0, then `refresh_tiles` slots a time."""
    per_refresh = layout.refresh_tiles // layout.per_image
    cycle = layout.groups // per_refresh
    refresh_group = group // per_refresh  # the groups replaced together, at epochs 1 + refresh_group + k·cycle
    if epoch < refresh_group + 1:
        return 0
    return epoch - (epoch - 1 - refresh_group) % cycle


def groups_refreshed_at(epoch: int, layout: PoolLayout) -> list[int]:
    """The tile groups (re)built at pool epoch `epoch`: all of them at 0, then one refresh group a time."""
    if epoch == 0:
        return list(range(layout.groups))
    per_refresh = layout.refresh_tiles // layout.per_image
    refresh_group = (epoch - 1) % (layout.groups // per_refresh)
    return list(range(refresh_group * per_refresh, (refresh_group + 1) * per_refresh))


class TilePool:
    """The device pool and its background refresh. `source_for(step)` returns the `PatchSource` to train
    step `step` (0-based: the state's step before the update) on."""

    def __init__(self, store: ImageStore, catalogue: Catalogue, layout: PoolLayout, seed: int, sharding=None,
                 workers: int = 0):
        self.store, self.catalogue, self.layout, self.seed = store, catalogue, layout, seed
        self.sharding = sharding
        self.workers = concurrent.futures.ThreadPoolExecutor(workers or max(1, (os.cpu_count() or 2) // 2))
        self.background = concurrent.futures.ThreadPoolExecutor(1)  # runs `_refresh_share` on `workers`
        self.epoch, self.source, self._next = None, None, None
        self.waited, self.host_seconds, self.host_tiles = 0.0, 0.0, 0
        tile_pixels = layout.tile**2
        self.offsets = (np.arange(layout.slots, dtype=np.int64) * tile_pixels).astype(np.int32)
        if layout.slots * tile_pixels >= 2**31:
            raise ValueError("the pool exceeds 2^31 pixels; lower data.device_budget_mib or data.tile_size")
        self._write_slots = jax.jit(_write_slots, donate_argnums=0, out_shardings=sharding)

    def close(self):
        self.background.shutdown(wait=False, cancel_futures=True)
        self.workers.shutdown(wait=False, cancel_futures=True)

    # -- host side ----------------------------------------------------------------------------------------
    def _build_group(self, group: int, epoch: int):
        image_index, tiles = group_plan(self.seed, epoch, group, self.catalogue, self.layout)
        image = self.store[image_index]
        tile_pixels = self.layout.tile**2
        inputs = np.zeros((len(tiles), tile_pixels), np.float32)
        targets = np.zeros((len(tiles), tile_pixels), np.float32)
        meta = np.zeros((len(tiles), 3), np.int32)
        for k, (d, s, top, left, th, tw) in enumerate(tiles):
            lr_up, hr = tile_pair(image, d, s, top, left, th, tw)
            inputs[k, :th * tw], targets[k, :th * tw] = lr_up.ravel(), hr.ravel()
            meta[k] = th, tw, s
        return inputs, targets, meta

    def build_share(self, groups_with_epochs: list[tuple[int, int]]) -> list:
        """This process's share of the tile groups of the given (group, epoch) pairs, built by the workers:
        the host work of a refresh, with no collective, so any thread may run it."""
        rank, n = jax.process_index(), jax.process_count()
        return list(self.workers.map(lambda group_epoch: self._build_group(*group_epoch), groups_with_epochs[rank::n]))

    def _refresh_share(self, groups_with_epochs: list[tuple[int, int]]) -> list:
        """`build_share` of a scheduled refresh, timed: the host's tile rate while training runs."""
        start = time.perf_counter()
        built = self.build_share(groups_with_epochs)
        self.host_seconds += time.perf_counter() - start
        self.host_tiles += len(built) * self.layout.per_image
        return built

    def gather(self, groups_with_epochs: list[tuple[int, int]], built: list):
        """(slot indices, inputs, targets, meta) of the given (group, epoch) pairs from every process's
        `build_share`: an all-gather with several processes, so every process calls it at the same point,
        on its main thread."""
        rank, n = jax.process_index(), jax.process_count()
        per_image = self.layout.per_image
        mine = groups_with_epochs[rank::n]
        if n == 1:
            inputs = np.concatenate([b[0] for b in built])
            targets = np.concatenate([b[1] for b in built])
            meta = np.concatenate([b[2] for b in built])
            order = [g for g, _ in mine]
        else:
            from jax.experimental import multihost_utils

            rounds = -(-len(groups_with_epochs) // n)
            tile_pixels = self.layout.tile**2
            pad = lambda arrays, shape, dtype: np.concatenate(  # noqa: E731
                arrays + [np.zeros((rounds * per_image - sum(len(a) for a in arrays),) + shape, dtype)])
            local = (pad([b[0] for b in built], (tile_pixels,), np.float32),
                     pad([b[1] for b in built], (tile_pixels,), np.float32), pad([b[2] for b in built], (3,), np.int32))
            gathered = [np.asarray(a) for a in multihost_utils.process_allgather(local)]  # (n, rounds·per_image, …)
            order, parts = [], ([], [], [])
            for r in range(n):
                theirs = groups_with_epochs[r::n]
                order += [g for g, _ in theirs]
                for part, array in zip(parts, gathered):
                    part.append(array[r, :len(theirs) * per_image])
            inputs, targets, meta = (np.concatenate(p) for p in parts)
        slots = np.concatenate([np.arange(g * per_image, (g + 1) * per_image) for g in order]).astype(np.int32)
        return slots, inputs, targets, meta

    def build(self, groups_with_epochs: list[tuple[int, int]]):
        """`gather` of `build_share`: the given groups, now, on this thread."""
        return self.gather(groups_with_epochs, self.build_share(groups_with_epochs))

    @property
    def host_tiles_per_s(self) -> float:
        """Tiles this process's workers have built per second of building, over the scheduled refreshes
        (built while training runs; not the first fill); NaN before the first."""
        return self.host_tiles / self.host_seconds if self.host_seconds else float("nan")

    def input_report(self, seconds: float, steps: int) -> tuple[float, int | None]:
        """(wait, period) for the last `seconds` of training (`steps` steps). `wait`: the fraction of them
        `source_for` spent waiting for scheduled refreshes — for this process's share, and with several
        processes for the others' at the all-gather (the first fill and rebuilds on resume are not counted).
        It is host time: steps queued on the devices may still run meanwhile, so it bounds their idle time.
        `period`: the `refresh_every_steps` at which the measured tile rate (`host_tiles_per_s`) keeps the
        host 3× ahead of these steps, above the current period whenever training waited; None before a
        scheduled refresh has been built."""
        waited, self.waited = self.waited, 0.0
        if not steps or seconds <= 0:
            return 0.0, None
        if not self.host_seconds:
            return waited / seconds, None
        step_seconds = max(seconds - waited, 1e-6) / steps
        refresh_seconds = self.layout.refresh_tiles / jax.process_count() / self.host_tiles_per_s
        period = math.ceil(3 * refresh_seconds / step_seconds)
        if waited > 0.1 * seconds:
            period = max(period, 2 * self.layout.refresh_every)
        return waited / seconds, period

    def _groups_at(self, epoch: int, full: bool) -> list[tuple[int, int]]:
        if full:
            return [(g, last_refresh(g, epoch, self.layout)) for g in range(self.layout.groups)]
        return [(g, epoch) for g in groups_refreshed_at(epoch, self.layout)]

    # -- device side --------------------------------------------------------------------------------------
    def _install(self, built) -> None:
        slots, inputs, targets, meta = built
        if self.source is None:
            pixels, count = self.layout.slots * self.layout.tile**2, self.layout.slots
            empty = PatchSource(np.zeros(pixels, np.float32), np.zeros(pixels, np.float32), self.offsets,
                                np.ones(count, np.int32), np.ones(count, np.int32), np.ones(count, np.int32))
            self.source = jax.device_put(empty, self.sharding)
        to_devices = lambda a: jax.device_put(a, self.sharding)  # noqa: E731
        self.source = self._write_slots(self.source, to_devices(slots), to_devices(inputs), to_devices(targets),
                                        to_devices(meta))

    def source_for(self, step: int) -> PatchSource:
        epoch = step // self.layout.refresh_every
        if epoch != self.epoch:
            if self._next is not None and self._next[0] == epoch:
                start = time.perf_counter()
                built = self.gather(self._next[1], self._next[2].result())
                self.waited += time.perf_counter() - start
                self._install(built)
            else:  # start, resume, or a jump: rebuild every slot as it stands at `epoch`, a refresh at a time
                if self._next is not None:  # a started build cannot be cancelled: let it end first
                    self._next[2].cancel()
                    concurrent.futures.wait([self._next[2]])
                self.source = None
                every = self._groups_at(epoch, full=True)
                chunk = self.layout.refresh_tiles // self.layout.per_image
                for first in range(0, len(every), chunk):
                    self._install(self.build(every[first:first + chunk]))
            self.epoch = epoch
            # The host work of the next refresh runs in the background; its all-gather (several processes)
            # waits for the boundary, where every process reaches it on its main thread.
            groups = self._groups_at(epoch + 1, full=False)
            self._next = (epoch + 1, groups, self.background.submit(self._refresh_share, groups))
        return self.source


def _write_slots(source: PatchSource, slots, inputs, targets, meta) -> PatchSource:
    """`source` with the tiles of `slots` replaced by (inputs, targets, meta: height, width, scale)."""
    count = source.heights.shape[0]
    flat = lambda a, new: a.reshape(count, -1).at[slots].set(new).reshape(-1)  # noqa: E731
    return PatchSource(flat(source.inputs, inputs), flat(source.targets, targets), source.offsets,
                       source.heights.at[slots].set(meta[:, 0]), source.widths.at[slots].set(meta[:, 1]),
                       source.scales.at[slots].set(meta[:, 2]))


def host_bytes(layout: PoolLayout, shapes: np.ndarray, workers: int) -> int:
    """An upper estimate of the host memory the pool needs beyond the program: per worker one decoded image
    (≤ 8 bytes a pixel: 16-bit RGBA) and its PNG record, and two refreshes of tiles (one being built, one
    being installed). The float64 windows `tile_pair` works on are a few tiles' worth."""
    largest = int((shapes[:, 0] * shapes[:, 1]).max()) if len(shapes) else 0
    return workers * largest * 16 + 2 * layout.refresh_bytes()
