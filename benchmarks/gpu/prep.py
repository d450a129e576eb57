"""Training pairs of the packed 291 images (PACK/train291/{T91,BSD200}/*.png, 8-bit training Y), made on
the CPU in parallel while the benchmarks use the GPU; written to WORK/pairs.npz (a PatchSource) and
WORK/prep.json.

A packed PNG holds the training Y as uint8 (see benchmarks/pack_device_data.py), and
`vdsr_jax.data.patches.prepare_pairs` takes a one-channel image as its own Y (v/255), so the pairs are
`prepare_pairs` of the decoded PNGs, exactly those of the originals; the images are split over processes
and their sources concatenated in order (`merge_sources`), which is what one `prepare_pairs` call returns.
"""
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

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
    """A packed training Y PNG as H×W×1 uint8 (`vdsr_jax.image_io.read_image`); ValueError for anything else."""
    from vdsr_jax.image_io import read_image

    pixels = read_image(path)
    if pixels.dtype != np.uint8 or pixels.shape[-1] != 1:
        raise ValueError(f"{path}: expected an 8-bit grey PNG (training Y), got {pixels.dtype} × {pixels.shape[-1]}")
    return pixels


def _file_pairs(job):
    """prepare_pairs of one packed file, or None when no variant of it holds a patch."""
    from vdsr_jax.data.patches import prepare_pairs

    path, scales, downsizes, patch_size = job
    try:
        return prepare_pairs([read_y(path)], scales, downsizes, patch_size)
    except ValueError as e:
        if "no training image" in str(e):
            return None
        raise


def merge_sources(sources):
    """One PatchSource of several, variants in order: what `prepare_pairs` returns for all their images."""
    from vdsr_jax.data.patches import PatchSource

    sources = [src for src in sources if src is not None]
    if not sources:
        raise ValueError("no training image is large enough for one patch")
    heights = np.concatenate([src.heights for src in sources])
    widths = np.concatenate([src.widths for src in sources])
    sizes = heights.astype(np.int64) * widths
    if sizes.sum() >= 2**31:
        raise ValueError("training set exceeds 2^31 pixels")
    return PatchSource(
        inputs=np.concatenate([src.inputs for src in sources]),
        targets=np.concatenate([src.targets for src in sources]),
        offsets=np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int32),
        heights=heights, widths=widths,
        scales=np.concatenate([src.scales for src in sources]),
    )


def y_pairs(files, scales, downsizes, patch_size: int, workers: int = 1):
    """The PatchSource of packed Y files, images in the given order, made by `workers` processes."""
    jobs = [(Path(f), tuple(scales), tuple(downsizes), patch_size) for f in files]
    if workers <= 1:
        per_file = [_file_pairs(job) for job in jobs]
    else:
        # fork is unsafe once JAX's threads run in this process (a test imports it first); spawn costs an import
        context = multiprocessing.get_context("spawn" if "jax" in sys.modules else "fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            per_file = list(pool.map(_file_pairs, jobs, chunksize=4))
    return merge_sources(per_file)


def save_source(source, path: Path) -> None:
    from vdsr_jax.image_io import atomic_output

    with atomic_output(path) as tmp, tmp.open("wb") as f:  # a file object: savez adds no suffix
        np.savez(f, **source._asdict())


def load_source(path: Path):
    from vdsr_jax.data.patches import PatchSource

    with np.load(path, allow_pickle=False) as z:
        return PatchSource(**{name: z[name] for name in PatchSource._fields})


def main(argv=None) -> int:
    from vdsr_jax.configs import x234

    args = stage_args(argv)
    s = args.settings
    config = x234.get_config()
    start = time.time()
    files = packed_train_files(args.pack)
    workers = s["prep_workers"] or max(1, (os.cpu_count() or 2) // 2)
    log("prep", f"{len(files)} images, {workers} processes")
    source = y_pairs(files, config.scales, config.downsizes, s["patch"], workers)
    save_source(source, args.work / "pairs.npz")
    from vdsr_jax.data.patches import patches_per_epoch

    info = {"images": len(files), "variants": len(source.heights), "pixels": int(source.inputs.size),
            "patches_per_epoch": patches_per_epoch(source, s["patch"]), "scales": list(config.scales),
            "downsizes": list(config.downsizes), "workers": workers, "seconds": time.time() - start}
    write_json(args.work / "prep.json", info)
    log("prep", f"{info['variants']} variants, {info['pixels'] / 1e6:.0f} M pixels, "
                f"{info['patches_per_epoch']} patches per epoch, {info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

