"""Training patches: MATLAB-bicubic pairs prepared once on the host, sampled on the device.

`prepare_pairs` turns HR images into every (downsize, scale) variant the paper trains on (Kim et al. 2016,
§4.1) — luminance as VDSR's `generate_train.m` makes it (`vdsr_jax.color.luminance(…, integer=True)`),
downsized, modcropped, and its bicubic down-then-up input — packed into two flat float32 buffers. The
buffers stay on the accelerator and `sample_patches`, called inside the jitted step, draws aligned
(input, target) patches with random variant, position, 90° rotation and flip from a PRNG key, so the host
feeds nothing per step. Patch `i` of step `t` depends only on (seed, t, i): device count and restarts do
not change the data.
"""
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vdsr_jax.color import luminance
from vdsr_jax.resize import bicubic_degradation, imresize


class PatchSource(NamedTuple):
    """Packed training pairs: variant v occupies `inputs[offsets[v] : offsets[v] + heights[v]·widths[v]]`."""

    inputs: np.ndarray  # float32, bicubic down-then-up Y, row-major per variant
    targets: np.ndarray  # float32, HR Y
    offsets: np.ndarray  # int32
    heights: np.ndarray  # int32
    widths: np.ndarray  # int32
    scales: np.ndarray  # int32, the SR scale of each variant


def prepare_pairs(images: Sequence[np.ndarray], scales: Sequence[int], downsizes: Sequence[float],
                  patch_size: int) -> PatchSource:
    """Every (image, downsize, scale) variant large enough for one patch, packed for `sample_patches`.

    `images`: H×W×C uint8/uint16 HR images. ValueError if no variant holds a patch, or the variants exceed
    2^31 pixels (the flat buffers are indexed with int32).
    """
    inputs, targets, shapes, variant_scales = [], [], [], []
    for image in images:
        y = luminance(image, integer=True)
        for downsize in downsizes:
            resized = y if downsize == 1 else imresize(y, float(downsize))
            for scale in scales:
                lr_up, hr = bicubic_degradation(resized, int(scale))
                if min(hr.shape) < patch_size:
                    continue
                inputs.append(lr_up.ravel())
                targets.append(hr.ravel())
                shapes.append(hr.shape)
                variant_scales.append(scale)
    if not shapes:
        raise ValueError(f"no training image is at least {patch_size}×{patch_size} after downsizing")
    sizes = np.array([h * w for h, w in shapes], np.int64)
    if sizes.sum() >= 2**31:
        raise ValueError("training set exceeds 2^31 pixels; use fewer images or downsizes")
    return PatchSource(
        inputs=np.concatenate(inputs).astype(np.float32),
        targets=np.concatenate(targets).astype(np.float32),
        offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32),
        heights=np.array([h for h, _ in shapes], np.int32),
        widths=np.array([w for _, w in shapes], np.int32),
        scales=np.array(variant_scales, np.int32),
    )


def patches_per_epoch(source: PatchSource, patch_size: int) -> int:
    """Non-overlapping patches over all variants: the paper's notion of one pass over the data."""
    return int(np.sum((source.heights // patch_size) * (source.widths // patch_size)))


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
