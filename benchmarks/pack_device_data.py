"""Pack what the GPU run needs and the device machine lacks into one ignored folder that travels with it.

    python -m benchmarks.pack_device_data --out .device_pack [--shared ../shared] [--no-wheels]

`../shared` does not travel to the device machine, and the working tree that does is limited to 64 MiB, so
this writes, under `--out` (ignored by git; name it in the device call's `carry`):

- `train291/T91/*.png`, `train291/BSD200/*.png`: each training image as its *training Y* in an 8-bit grey
  PNG. For a colour image that is MATLAB's `rgb2ycbcr` on the uint8 image, i.e. Y rounded to uint8 (what
  VDSR's generate_train.m trains on); a one-channel image is its own Y (`vdsr_jax.color.luminance(…,
  integer=True)`). `vdsr_jax.data.patches.prepare_pairs` takes a one-channel image as its own Y (v/255), so
  these files give exactly the training pairs of the originals.
- `benchmarks/Set5/`, `benchmarks/Set14/`: the original HR files, copied byte for byte, so evaluation
  (double-precision YCbCr of the RGB image) stays exact.
- `wheels/*.whl`: the cp312 wheels of the vdsr_jax dependencies that the device image lacks and the GPU run
  imports (`benchmarks.gpu.common.DEVICE_WHEELS`).
- `manifest.json`: what was packed, sizes, and how.

It then checks every packed PNG against its original (`verify_pack`) and that the pack plus the working
tree stay under the device's 64 MiB, and exits non-zero otherwise.
"""
import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from benchmarks.gpu.common import DEVICE_WHEELS
from vdsr_jax.color import luminance
from vdsr_jax.media import read_image, write_image

REPO = Path(__file__).resolve().parents[1]
TRAIN_FOLDERS = ("T91", "BSD200")  # the train291 builder's order
EVAL_SETS = ("Set5", "Set14")
SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
LIMIT_BYTES = 64 * 2**20  # what may travel in one device call: working tree + carried paths
# DEVICE_WHEELS: ml_collections and tensorboardX are pure Python; imagecodecs is a cp312 manylinux wheel (its size:
# docs/accelerators.md, "The prepared GPU run"). Their own needs (absl-py, PyYAML, numpy, packaging, protobuf) are
# on the device.
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64")


def training_y8(path) -> np.ndarray:
    """The training Y of an image file as uint8 H×W: `luminance(pixels, integer=True)` in 8-bit levels, i.e.
    a one-channel image's own values; for colour floor(255·rgb2y(rgb/255) + 0.5), MATLAB's rgb2ycbcr on
    uint8 (alpha is ignored)."""
    pixels = read_image(path)
    if pixels.dtype != np.uint8:
        raise ValueError(f"{path}: only 8-bit images are packed ({pixels.dtype})")
    return np.rint(luminance(pixels, integer=True) * 255).astype(np.uint8)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def pack_train(source: Path, out: Path, limit: int | None = None) -> list[dict]:
    """Training Y PNGs of source/{T91,BSD200} into out/{T91,BSD200}; `limit` images per folder (tests)."""
    rows = []
    for folder in TRAIN_FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
        for path in image_files(source / folder)[:limit]:
            y = training_y8(path)
            target = out / folder / f"{path.stem}.png"
            write_image(target, y[..., None], overwrite=True)  # a pack made again replaces its files
            rows.append({"file": f"{folder}/{target.name}", "source": f"{folder}/{path.name}",
                         "shape": list(y.shape), "bytes": target.stat().st_size})
    return rows


def pack_benchmarks(source: Path, out: Path, limit: int | None = None) -> list[dict]:
    rows = []
    for name in EVAL_SETS:
        (out / name).mkdir(parents=True, exist_ok=True)
        for path in image_files(source / name)[:limit]:
            shutil.copyfile(path, out / name / path.name)
            rows.append({"file": f"{name}/{path.name}", "bytes": path.stat().st_size,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return rows


def download_wheels(out: Path, names=DEVICE_WHEELS) -> list[str]:
    """cp312 manylinux wheels of `names`, at the versions installed here (what CI tests), into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in names]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *(a for p in PIP_PLATFORMS for a in ("--platform", p)), "-d",
               str(out), *pins]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return sorted(p.name for p in out.glob("*.whl"))


def verify_pack(pack: Path, shared: Path) -> list[str]:
    """Problems found (empty: all good): every packed training PNG must decode to exactly the training Y of
    its original, and every packed benchmark file must equal its original byte for byte."""
    manifest = json.loads((pack / "manifest.json").read_text())
    problems = []
    train_source = shared / "data" / "train291"
    for row in manifest["train291"]:
        packed = pack / "train291" / row["file"]
        decoded = read_image(packed)
        expected = training_y8(train_source / row["source"])[..., None]
        if decoded.dtype != np.uint8 or decoded.shape != expected.shape or not np.array_equal(decoded, expected):
            problems.append(f"{row['file']} differs from the training Y of {row['source']}")
    for row in manifest["benchmarks"]:
        if (pack / "benchmarks" / row["file"]).read_bytes() != (shared / "data" / "benchmarks" / row["file"]).read_bytes():
            problems.append(f"benchmarks/{row['file']} differs from its original")
    if manifest.get("limit") is None:
        for folder in TRAIN_FOLDERS:
            count = len(image_files(train_source / folder))
            packed = sum(r["file"].startswith(folder + "/") for r in manifest["train291"])
            if packed != count:
                problems.append(f"train291/{folder}: {packed} packed of {count}")
    return problems


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def working_tree_bytes(repo: Path = REPO) -> int:
    """Bytes of what a device call sends besides carried paths: tracked and untracked-not-ignored files."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    paths = {repo / name for name in listing.decode().split("\0") if name}
    return sum(p.stat().st_size for p in paths if p.is_file())


def pack(shared: Path, out: Path, wheels: bool = True, limit: int | None = None) -> dict:
    """Write the pack (see the module docstring) and return its manifest."""
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("train291", "benchmarks", "wheels"):
        shutil.rmtree(out / stale, ignore_errors=True)
    manifest = {
        "what": "vdsr_jax device pack: training Y as 8-bit PNG, benchmark originals, wheels",
        "train_rule": "colour: floor(255*rgb2y(rgb/255)+0.5) (MATLAB rgb2ycbcr on uint8); one channel: own values",
        "limit": limit,
        "train291": pack_train(shared / "data" / "train291", out / "train291", limit),
        "benchmarks": pack_benchmarks(shared / "data" / "benchmarks", out / "benchmarks", limit),
        "wheels": download_wheels(out / "wheels") if wheels else [],
    }
    manifest["bytes"] = {part: folder_bytes(out / part) for part in ("train291", "benchmarks", "wheels")
                         if (out / part).exists()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pack_device_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / ".device_pack", help="pack folder (.device_pack)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the shared data (../shared)")
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheels (no package index here)")
    parser.add_argument("--limit", type=int, help="only the first N images of each folder (tests)")
    args = parser.parse_args(argv)
    if not (args.shared / "data" / "train291").is_dir():
        print(f"error: {args.shared}/data/train291 does not exist (pass --shared)", file=sys.stderr)
        return 1
    manifest = pack(args.shared, args.out, not args.no_wheels, args.limit)
    problems = verify_pack(args.out, args.shared)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    sizes = manifest["bytes"]
    total, tree = folder_bytes(args.out), working_tree_bytes()
    print(f"packed {len(manifest['train291'])} training Y PNGs ({sizes['train291'] / 2**20:.1f} MiB), "
          f"{len(manifest['benchmarks'])} benchmark images ({sizes['benchmarks'] / 2**20:.1f} MiB), "
          f"{len(manifest['wheels'])} wheels ({sizes.get('wheels', 0) / 2**20:.2f} MiB) into {args.out}")
    print(f"pack {total / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {(total + tree) / 2**20:.1f} MiB "
          f"of the device's {LIMIT_BYTES / 2**20:.0f} MiB")
    if total + tree > LIMIT_BYTES:
        print("error: too large to travel in one device call", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
