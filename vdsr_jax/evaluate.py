"""Evaluate VDSR on benchmark folders under the protocol of Kim, Lee & Lee (CVPR 2016).

    vdsr-evaluate --data-dir DIR [--data-dir DIR ...] [--checkpoint WEIGHTS] [--scales 2,3,4] [--json OUT]
    (or: python -m vdsr_jax.evaluate …)

Prints a Markdown table (dataset, scale, images, bicubic and VDSR PSNR/SSIM, seconds) and writes the same
rows as JSON. The protocol (`vdsr_jax.protocol`): luminance (Y of MATLAB `rgb2ycbcr` for colour images, the
image itself for grey ones), cropped to a multiple of the scale, MATLAB bicubic down- then up-scaling in
float64, VDSR on the upscaled Y; PSNR and SSIM on Y·255 with `scale` pixels shaved from each border; means
over the images. Folders are listed by one rule: image files by suffix, hidden names (macOS `._x.png`)
skipped. An image reproduced exactly (e.g. a flat one) has an infinite PSNR; the mean is then infinite,
printed as `inf` and written to JSON as the string "inf" (JSON has no infinity). Each dataset is named by
its folder, or by as much of the folder's path as tells it from the others (`A/HR`, `B/HR`). The --json
location is checked before any work, and the table is printed before the file is written.

--checkpoint takes weights of any form (`vdsr_jax.weight_forms`: a checkpoint folder or training workdir, a
.npz or .safetensors file, a torch file). Without it the weights bundled with the package are used
(`vdsr_jax.pretrained`); a version that ships none says so in one line.
"""
import math
import sys
from pathlib import Path

from vdsr_jax import strict_json
from vdsr_jax.cli import CHECKPOINT_HELP, ArgumentParser, load_checkpoint, report_errors
from vdsr_jax.data import load_folder
from vdsr_jax.errors import UserError
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.media import atomic_output, check_writable, refuse_existing
from vdsr_jax.protocol import evaluate_sets
from vdsr_jax.resize import MAX_SCALE


def parse_scales(text: str) -> list[int]:
    """'2,3,4' -> [2, 3, 4]; UserError for anything but distinct integers from 2 to MAX_SCALE."""
    try:
        scales = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--scales must be comma-separated integers such as 2,3,4, got {text!r}") from None
    bad = [s for s in scales if not 2 <= s <= MAX_SCALE]
    if bad:
        raise UserError(f"--scales must lie from 2 to {MAX_SCALE}, got {bad[0]}")
    return list(dict.fromkeys(scales))


def dataset_names(folders) -> list[str]:
    """A name for each of `folders`: the shortest tail of its absolute path that no other folder's path ends
    with (`HR` alone; `A/HR` and `B/HR` for two folders named HR). UserError for a folder given twice."""
    paths = [Path(folder).expanduser().resolve().parts for folder in folders]
    names = []
    for i, parts in enumerate(paths):
        others = [other for j, other in enumerate(paths) if j != i]
        if parts in others:
            raise UserError(f"--data-dir {folders[i]} is given twice")
        length = next(n for n in range(1, len(parts) + 1) if all(other[-n:] != parts[-n:] for other in others))
        names.append(Path(*parts[-length:]).as_posix())
    return names


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def markdown_table(rows: list[dict]) -> str:
    """The rows of `evaluate_sets` as a Markdown table (PSNR in dB to 0.01, SSIM to 1e-4, seconds)."""
    lines = [
        "| dataset | scale | images | bicubic PSNR | bicubic SSIM | VDSR PSNR | VDSR SSIM | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | ×{r['scale']} | {r['images']} | {_number(r['bicubic_psnr'], 2)}"
            f" | {_number(r['bicubic_ssim'], 4)} | {_number(r['vdsr_psnr'], 2)} | {_number(r['vdsr_ssim'], 4)}"
            f" | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


@report_errors
def main(argv=None) -> int:
    parser = ArgumentParser(prog="vdsr-evaluate", description=__doc__)
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--data-dir", required=True, action="append",
                        help="folder of HR images (image files by suffix; hidden names skipped); repeatable")
    parser.add_argument("--scales", default="2,3,4", help="comma-separated integer scales (2,3,4)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace the --json file if it exists")
    args = parser.parse_args(argv)
    scales = parse_scales(args.scales)
    if args.json is not None:
        check_writable(args.json)
        refuse_existing(args.json, args.overwrite)
    names = dataset_names(args.data_dir)
    sets = {name: load_folder(d, scales) for name, d in zip(names, args.data_dir)}  # all fail before any work
    model, params = load_checkpoint(args.checkpoint)
    rows = evaluate_sets(TiledVDSR(model, params), sets, scales)
    print(markdown_table(rows))  # first: a JSON file that cannot be written loses nothing else
    if args.json is not None:
        document = {"checkpoint": str(args.checkpoint) if args.checkpoint else "bundled", "results": rows}
        with atomic_output(args.json, args.overwrite) as tmp:
            tmp.write_text(strict_json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
