"""Training patches: MATLAB-bicubic pairs prepared once on the host, sampled on the device.

`prepare_pairs` turns HR images into every (downsize, scale) variant the paper trains on (Kim et al. 2016,
§4.1) — luminance as VDSR's `generate_train.m` makes it (`vdsr_jax.color.luminance(…, integer=True)`),
downsized, modcropped, and its bicubic down-then-up input — packed into two flat float32 buffers. The
buffers stay on the accelerator and `sample_patches`, called inside the jitted step, draws aligned
(input, target) patches with random variant, position, 90° rotation and flip from a PRNG key, so the host
feeds nothing per step. Patch `i` of step `t` depends only on (seed, t, i): device count and restarts do
not change the data. The layout comes from the images' shapes (`catalogue`), so with several processes
each reads and prepares only its share of the images (`prepare_share`) and the shares are combined on the
devices (`vdsr_jax.distributed.combine_shares`) into the same buffers one process would make.
"""
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdsr_jax.color import luminance
from vdsr_jax.resize import bicubic_degradation, imresize, resize_plan


class PatchSource(NamedTuple):
    """Packed training pairs: variant v occupies `inputs[offsets[v] : offsets[v] + heights[v]·widths[v]]`."""

    inputs: np.ndarray  # float32, bicubic down-then-up Y, row-major per variant
    targets: np.ndarray  # float32, HR Y
    offsets: np.ndarray  # int32
    heights: np.ndarray  # int32
    widths: np.ndarray  # int32
    scales: np.ndarray  # int32, the SR scale of each variant


def variant_shape(height: int, width: int, downsize: float, scale: int) -> tuple[int, int]:
    """The target's shape for one (downsize, scale) variant of a height×width image: imresize's ⌈d·n⌉,
    then modcrop."""
    if downsize != 1:
        (_, rows), (_, cols) = sorted(resize_plan((height, width), scale=float(downsize)), key=lambda p: p[0])
        height, width = len(rows.first), len(cols.first)
    return height - height % scale, width - width % scale


class Catalogue(NamedTuple):
    """The usable variants of every image, from the images' shapes alone (no pixels)."""

    shapes: np.ndarray  # (N, 2) int, every image's (H, W)
    variants: list  # per image: [(downsize, scale, height, width), ...] that hold a patch, in prepare order
    weights: np.ndarray  # per image: positions summed over its variants (patches are drawn ∝ positions)

    @property
    def heights(self) -> np.ndarray:
        return np.array([vh for vs in self.variants for _, _, vh, _ in vs], np.int64)

    @property
    def widths(self) -> np.ndarray:
        return np.array([vw for vs in self.variants for _, _, _, vw in vs], np.int64)


def catalogue(shapes: np.ndarray, scales: Sequence[int], downsizes: Sequence[float], patch_size: int) -> Catalogue:
    """The variants of images of `shapes` ((N, 2) H, W) that hold a patch: downsizes outer, scales inner.
    ValueError if none does."""
    variants, weights = [], []
    for h, w in shapes:
        usable = [(d, s, *variant_shape(int(h), int(w), d, s)) for d in downsizes for s in scales]
        usable = [v for v in usable if min(v[2], v[3]) >= patch_size]
        variants.append(usable)
        weights.append(sum((vh - patch_size + 1) * (vw - patch_size + 1) for _, _, vh, vw in usable))
    weights = np.asarray(weights, np.float64)
    if not weights.sum():
        raise ValueError(f"no training image is at least {patch_size}×{patch_size} after downsizing")
    return Catalogue(np.asarray(shapes), variants, weights)


def prepare_pairs(images: Sequence[np.ndarray], scales: Sequence[int], downsizes: Sequence[float],
                  patch_size: int) -> PatchSource:
    """Every (image, downsize, scale) variant large enough for one patch, packed for `sample_patches`.

    `images`: H×W×C uint8/uint16 HR images. ValueError if no variant holds a patch, or the variants exceed
    2^31 pixels (the flat buffers are indexed with int32).
    """
    shapes = np.array([image.shape[:2] for image in images], np.int64).reshape(-1, 2)
    return prepare_share(images, catalogue(shapes, scales, downsizes, patch_size))


def prepare_share(images, cat: Catalogue, share: tuple[int, int] = (0, 1)) -> PatchSource:
    """`prepare_pairs` of all the images of `cat`, reading only this process's share of them.

    `images[i]`: image i (H×W×C uint8/uint16), read only for i ≡ rank (mod count), `share = (rank, count)`;
    the layout (offsets, shapes, scales) comes from `cat`, so it is the same in every process, and the
    pixels of the other images are left 0.0. The bits of the `count` shares, summed (or OR-ed), are
    `prepare_pairs` of every image. ValueError over 2^31 pixels.
    """
    rank, count = share
    heights, widths = cat.heights, cat.widths
    sizes = heights * widths
    if sizes.sum() >= 2**31:
        raise ValueError("training set exceeds 2^31 pixels; use fewer images or downsizes")
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    inputs, targets = np.zeros(int(sizes.sum()), np.float32), np.zeros(int(sizes.sum()), np.float32)
    first = np.cumsum([0] + [len(vs) for vs in cat.variants])  # each image's first variant
    for i in range(rank, len(cat.variants), count):
        if not cat.variants[i]:
            continue
        y, resized = luminance(images[i], integer=True), {}
        for v, (downsize, scale, vh, vw) in enumerate(cat.variants[i], start=first[i]):
            if downsize not in resized:
                resized[downsize] = y if downsize == 1 else imresize(y, float(downsize))
            lr_up, hr = bicubic_degradation(resized[downsize], int(scale))
            assert hr.shape == (vh, vw), "variant_shape disagrees with imresize"
            span = slice(offsets[v], offsets[v] + sizes[v])
            inputs[span], targets[span] = lr_up.ravel(), hr.ravel()
    return PatchSource(inputs=inputs, targets=targets, offsets=offsets.astype(np.int32),
                       heights=heights.astype(np.int32), widths=widths.astype(np.int32),
                       scales=np.array([s for vs in cat.variants for _, s, _, _ in vs], np.int32))


def patches_per_epoch(pairs, patch_size: int) -> int:
    """Non-overlapping patches over all variants of `pairs` (a PatchSource or a Catalogue): the paper's
    notion of one pass over the data."""
    return int(np.sum((np.asarray(pairs.heights) // patch_size) * (np.asarray(pairs.widths) // patch_size)))


def sample_patches(source: PatchSource, step_key: jax.Array, indices: jax.Array, patch_size: int,
                   augment: bool = True):
    """Patches number `indices` (int32, (n,)) of the step whose key is `step_key`: (n, patch, patch, 1)
    float32 inputs and targets, exact crops of `source` (device arrays), rotated and flipped if `augment`.

    Patch i uses only the key `fold_in(step_key, i)`, which draws two integers: a rank uniform over the
    positions of all variants — its variant, found by binary search in the running count of positions, is
    thus drawn ∝ its positions, and the position inside it uniformly — and one of the 8 symmetries of the
    square. A uniform (rotation 0–3, horizontal flip) pair is a uniform symmetry; it is drawn here as three
    independent bits — reverse the crop's rows, reverse its columns, then transpose — each pattern being
    `np.rot90(np.fliplr(crop) if flip else crop, rotation)` for one (rotation, flip).
    """
    positions = (source.heights - patch_size + 1) * (source.widths - patch_size + 1)
    ends = jnp.cumsum(positions)  # int32: prepare_pairs and the pool keep the pixel count below 2^31
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, indices)
    draws = jax.vmap(lambda key: jax.random.randint(key, (2,), 0, jnp.stack([ends[-1], jnp.int32(8)])))(keys)
    rank, symmetry = draws[:, 0], (draws[:, 1] if augment else jnp.zeros_like(indices))[:, None, None]
    # Inverse CDF: `jax.random.categorical` would draw a Gumbel per variant and patch (2616 variants for the
    # 291 images), which took most of the time of the sampler this replaced.
    variant = jnp.searchsorted(ends, rank, side="right")
    width = source.widths[variant]
    top, left = jnp.divmod(rank - ends[variant] + positions[variant], width - patch_size + 1)
    # Output pixel (r, c) is the crop's (row, col): one gather of computed indices, with no index grid or
    # flipped copies built first (XLA:CPU fuses the arithmetic into the gather's loop).
    r, c = jnp.arange(patch_size)[:, None], jnp.arange(patch_size)[None, :]
    row, col = jnp.where(symmetry & 4, c, r), jnp.where(symmetry & 4, r, c)
    row = jnp.where(symmetry & 1, patch_size - 1 - row, row)
    col = jnp.where(symmetry & 2, patch_size - 1 - col, col)
    corner = source.offsets[variant] + top * width + left
    index = (corner[:, None, None] + row * width[:, None, None] + col)[..., None]
    # In bounds by construction; the default mode would test every pixel's index.
    pick = lambda flat: jnp.asarray(flat).at[index].get(mode="promise_in_bounds")  # noqa: E731
    return pick(source.inputs), pick(source.targets)
