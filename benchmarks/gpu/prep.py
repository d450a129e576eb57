"""Training pairs of the packed 291 images (PACK/train291/{T91,BSD200}/*.png, 8-bit training Y), made on
the CPU in parallel while the benchmarks use the GPU; written to WORK/pairs.npz (a PatchSource) and
WORK/prep.json.

A packed PNG holds the training Y as uint8 (see benchmarks/pack_device_data.py), so Y = v/255, the rule for
one-channel images. `y_variants` is `vdsr_jax.input_pipeline.prepare_pairs`' per-image loop started from
that Y instead of `luminance(image)`: every (downsize, scale) variant, MATLAB-bicubic, modcropped.
"""
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.gpu.common import log, stage_args, write_json

TRAIN_FOLDERS = ("T91", "BSD200")


def packed_train_files(pack: Path) -> list[Path]:
    files = []
    for folder in TRAIN_FOLDERS:
        files += sorted((pack / "train291" / folder).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no training images in {pack / 'train291'} (run python -m benchmarks.pack_device_data)")
    return files


def read_y(path) -> np.ndarray:
    """Y in [0, 1], float64, of a packed one-channel 8-bit PNG."""
    with Image.open(path) as im:
        if im.mode != "L":
            raise ValueError(f"{path}: expected an 8-bit grey PNG (training Y), got mode {im.mode}")
        return np.asarray(im).astype(np.float64) / 255.0


def y_variants(y: np.ndarray, scales, downsizes, patch_size: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(bicubic input, target, scale) of every variant of one HR Y image that holds a patch; the loop of
    `input_pipeline.prepare_pairs`."""
    from vdsr_jax.image import imresize
    from vdsr_jax.input_pipeline import bicubic_pair

    variants = []
    for downsize in downsizes:
        resized = y if downsize == 1 else imresize(y, float(downsize))
        for scale in scales:
            lr_up, hr = bicubic_pair(resized, int(scale))
            if min(hr.shape) < patch_size:
                continue
            variants.append((lr_up.astype(np.float32), hr.astype(np.float32), int(scale)))
    return variants


def _file_variants(job):
    path, scales, downsizes, patch_size = job
    return y_variants(read_y(path), scales, downsizes, patch_size)


def pack_source(variants):
    """A PatchSource of (input, target, scale) variants, packed as `prepare_pairs` packs them."""
    from vdsr_jax.input_pipeline import PatchSource

    if not variants:
        raise ValueError("no training image is large enough for one patch")
    sizes = np.array([hr.size for _, hr, _ in variants], np.int64)
    if sizes.sum() >= 2**31:
        raise ValueError("training set exceeds 2^31 pixels")
    return PatchSource(
        inputs=np.concatenate([lr.ravel() for lr, _, _ in variants]).astype(np.float32),
        targets=np.concatenate([hr.ravel() for _, hr, _ in variants]).astype(np.float32),
        offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32),
        heights=np.array([hr.shape[0] for _, hr, _ in variants], np.int32),
        widths=np.array([hr.shape[1] for _, hr, _ in variants], np.int32),
        scales=np.array([scale for _, _, scale in variants], np.int32),
    )


def y_pairs(files, scales, downsizes, patch_size: int, workers: int = 1):
    """The PatchSource of packed Y files, images in the given order, made by `workers` processes."""
    jobs = [(Path(f), tuple(scales), tuple(downsizes), patch_size) for f in files]
    if workers <= 1:
        per_file = [_file_variants(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            per_file = list(pool.map(_file_variants, jobs, chunksize=4))
    return pack_source([v for variants in per_file for v in variants])


def save_source(source, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **source._asdict())
    os.replace(tmp, path)


def load_source(path: Path):
    from vdsr_jax.input_pipeline import PatchSource

    with np.load(path, allow_pickle=False) as z:
        return PatchSource(**{name: z[name] for name in PatchSource._fields})


def main(argv=None) -> int:
    import configs.x234

    args = stage_args(argv)
    s = args.settings
    config = configs.x234.get_config()
    start = time.time()
    files = packed_train_files(args.pack)
    workers = s["prep_workers"] or max(1, (os.cpu_count() or 2) // 2)
    log("prep", f"{len(files)} images, {workers} processes")
    source = y_pairs(files, config.scales, config.downsizes, s["patch"], workers)
    save_source(source, args.work / "pairs.npz")
    from vdsr_jax.input_pipeline import patches_per_epoch

    info = {"images": len(files), "variants": len(source.heights), "pixels": int(source.inputs.size),
            "patches_per_epoch": patches_per_epoch(source, s["patch"]), "scales": list(config.scales),
            "downsizes": list(config.downsizes), "workers": workers, "seconds": time.time() - start}
    write_json(args.work / "prep.json", info)
    log("prep", f"{info['variants']} variants, {info['pixels'] / 1e6:.0f} M pixels, "
                f"{info['patches_per_epoch']} patches per epoch, {info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

