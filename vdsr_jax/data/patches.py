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


def _patch_coordinates(patch_size: int, rotation: jax.Array, flip: jax.Array):
    """(row, col) offsets inside a patch after a horizontal flip then `rotation` quarter turns."""
    rows, cols = jnp.meshgrid(jnp.arange(patch_size), jnp.arange(patch_size), indexing="ij")
    cols = jnp.where(flip, patch_size - 1 - cols, cols)
    last = patch_size - 1
    candidates = [(rows, cols), (cols, last - rows), (last - rows, last - cols), (last - cols, rows)]
    pick = lambda k: jnp.select([rotation == i for i in range(4)], [c[k] for c in candidates])  # noqa: E731
    return pick(0), pick(1)


def sample_patch(source: PatchSource, key: jax.Array, patch_size: int, augment: bool):
    """One (input, target) pair of shape (patch, patch, 1) from `source` (device arrays)."""
    k_variant, k_row, k_col, k_rot, k_flip = jax.random.split(key, 5)
    positions = (source.heights - patch_size + 1) * (source.widths - patch_size + 1)
    variant = jax.random.categorical(k_variant, jnp.log(positions.astype(jnp.float32)))
    height, width = source.heights[variant], source.widths[variant]
    top = jax.random.randint(k_row, (), 0, height - patch_size + 1)
    left = jax.random.randint(k_col, (), 0, width - patch_size + 1)
    if augment:
        rows, cols = _patch_coordinates(patch_size, jax.random.randint(k_rot, (), 0, 4),
                                        jax.random.bernoulli(k_flip))
    else:
        rows, cols = _patch_coordinates(patch_size, jnp.int32(0), jnp.bool_(False))
    index = source.offsets[variant] + (top + rows) * width + (left + cols)
    return source.inputs[index][..., None], source.targets[index][..., None]


def sample_patches(source: PatchSource, step_key: jax.Array, indices: jax.Array, patch_size: int,
                   augment: bool = True):
    """Patches number `indices` of the step whose key is `step_key`: (len, patch, patch, 1) each."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, indices)
    return jax.vmap(lambda k: sample_patch(source, k, patch_size, augment))(keys)
