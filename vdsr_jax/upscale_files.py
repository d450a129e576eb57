"""Upscale image files with VDSR.

    vdsr-upscale INPUT... --scale S -o OUT [--checkpoint WEIGHTS] [--compare] [--tile N] [--overwrite]
                 [--crf Q] [--lossless] [--batch B]
    (or: python -m vdsr_jax.upscale_files …: named for the files it upscales, since vdsr_jax.upscale is the
    function on arrays and PIL images, docs/api.md)

INPUT: image files (PNG, JPEG, BMP, GIF, TIFF, WebP) or folders of them (not recursive; hidden names such as
macOS `._photo.png` are skipped). With one input file, OUT may be a file name with an image suffix (its
format is used); otherwise OUT is a folder, created if needed, that receives `<name>_x<S><suffix>` in the
input's format. `--compare` writes `<output name>_compare.png` beside each output: bicubic | VDSR, labelled
(still images only). Two files that would be written to one path (inputs of the same name from different
folders, or `x.jpg` and `x.png` with --compare) or over an input are refused before any work: give them
separate OUT folders. An OUT whose suffix is a misspelt format (`out.pnj`) is refused too.

Videos (.mp4, .mkv, .avi, .mov, .webm) and images of several frames (animated GIF, WebP and PNG, multi-page
TIFF) are upscaled frame by frame as a stream (see vdsr_jax.media): frame count, each frame's timing, the
loop count, a video's display matrix (applied to the pixels), sample aspect ratio, colour description,
profile, tags and chapters (where the output's container holds them), an animation's EXIF orientation (applied to the pixels), profile and EXIF (GIF, MP4 and MOV hold the
profile only, the other videos neither: a `note:` says so) are kept; every other stream is copied (not
re-encoded), converted (audio the container refuses; a `note:` line says so) or refused before the first
frame. A GIF or APNG of one frame is written as a GIF or APNG. Video
output is H.264 (libx264, yuv420p) at --crf 18 (VP9 at --crf 31 for .webm); --lossless writes frames exactly
(H.264 RGB qp 0, VP9 lossless for .webm; lossless WebP). --batch windows go to the device per call. An interrupted run leaves no
output and says after which frame it stopped.

Colour images go through VDSR on their Y channel (MATLAB YCbCr) with bicubic Cb and Cr; grey images as
their own Y, and stay grey; alpha (an alpha channel, a palette entry or a PNG colour key) is resized
bicubic. S may be any number from 1 to 16: the network input is MATLAB's bicubic upscale of Y to
ceil(S·size). 16-bit images stay 16-bit in PNG and TIFF (JPEG, BMP and WebP hold 8 bits); JPEG and BMP
cannot hold alpha, WebP at most 16383 pixels a side: such outputs are refused before any work. EXIF
orientation is applied to the pixels. The ICC colour profile and EXIF (Orientation then 1, the pixel size
updated, no thumbnail) are kept in PNG, JPEG, WebP and TIFF outputs, the profile in BMP outputs and
--compare panels; a `note:` says when an output (BMP's EXIF) cannot hold them. TIFFs are read in the colours their photometric
interpretation means (CMYK, palette, min-is-white, YCbCr and CIELab are converted); masks, raw sensor data
and the like are refused by name. Large images run in
tiles, so memory follows the tile size. Existing outputs are refused unless --overwrite. Files are written
under a temporary name and renamed when complete. A file that fails is reported at the end, the others are
still written, and the exit status is then 1.

--checkpoint takes weights of any form (`vdsr_jax.weight_forms`: a checkpoint folder or training workdir, a
.npz or .safetensors file, a torch file). Without it the weights bundled with the package are used
(`vdsr_jax.pretrained`); a version that ships none says so in one line.
"""
import argparse
import difflib
import sys
from pathlib import Path

from tqdm import tqdm

from vdsr_jax.cli import CHECKPOINT_HELP, ArgumentParser, load_checkpoint, report_errors
from vdsr_jax.errors import ImageError, UserError, known_names
from vdsr_jax.inference import DEFAULT_BATCH, DEFAULT_TILE, TiledVDSR, upscale_frames, upscale_image
from vdsr_jax.media import (ANIMATION_SUFFIXES, FRAME_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageMetadata,
                            check_crf, check_encodable, check_writable, is_frame_file, list_images, metadata_note,
                            read_image_and_metadata, refuse_existing, transcode, write_image)
from vdsr_jax.panels import side_by_side
from vdsr_jax.resize import MAX_SCALE, BicubicWindows

INPUT_SUFFIXES = IMAGE_SUFFIXES + FRAME_SUFFIXES
OUTPUT_SUFFIXES = tuple(dict.fromkeys(IMAGE_SUFFIXES + ANIMATION_SUFFIXES + VIDEO_SUFFIXES))


def parse_scale(text: str) -> float:
    """argparse type: a finite number in [1, MAX_SCALE]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be a number, got {text!r}") from None
    if not 1 <= value <= MAX_SCALE:  # also rejects NaN
        raise argparse.ArgumentTypeError(f"scale must be from 1 to {MAX_SCALE}, got {text}")
    return value


def scale_label(scale: float) -> str:
    return f"x{scale:g}"


def output_paths(inputs: list[str], files: list[Path], output: Path, scale: float, compare: bool,
                 overwrite: bool) -> list[tuple[Path, Path]]:
    """(input, output) pairs; see the module docstring for the naming. Creates the output folder.
    UserError, before any work, for an OUT whose suffix is a misspelt format, a place that cannot be written,
    two files (outputs or comparisons) that would be written to one path or over an input, and (unless
    `overwrite`) for outputs that exist."""
    single_file = len(inputs) == 1 and len(files) == 1 and not Path(inputs[0]).is_dir()
    suffix = output.suffix.lower()
    if suffix in OUTPUT_SUFFIXES and not output.is_dir():
        if not single_file:
            raise UserError(f"-o {output} names a file, but there are {len(files)} inputs; give a folder")
        check_writable(output)
        pairs = [(files[0], output)]
    else:
        if suffix and not output.is_dir() and difflib.get_close_matches(suffix, OUTPUT_SUFFIXES, n=1):
            raise UserError(f"-o {output}: no output format {suffix}; {known_names(suffix, OUTPUT_SUFFIXES)}")
        check_writable(output, folder=True)
        pairs = [(f, output / f"{f.stem}_{scale_label(scale)}{f.suffix}") for f in files]
    inputs_at = {source.resolve(): source for source, _ in pairs}
    written = {}  # resolved path -> the input whose output it is
    for source, target in pairs:
        for path in [target, compare_path(target)] if compare else [target]:
            if path.resolve() in inputs_at:
                raise UserError(f"{path} (from {source}) would overwrite the input {inputs_at[path.resolve()]}")
            if path.resolve() in written:
                raise UserError(f"{written[path.resolve()]} and {source} would both be written to {path}; "
                                "upscale them into separate folders")
            written[path.resolve()] = source
            refuse_existing(path, overwrite)
    if pairs[0][1] != output:  # OUT is a folder
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create output folder {output}: {e.strerror or e}") from None
    return pairs


def option_notes(pairs: list[tuple[Path, Path]], crf: int | None, lossless: bool, compare: bool) -> list[str]:
    """Notes on the options that some outputs ignore (--crf: all but lossy videos; --compare: all but still
    images); ConfigError, before any work, for a --crf outside the range of a video output's encoder."""
    notes = []
    for source, target in pairs:
        suffix = target.suffix.lower()
        if crf is not None and suffix in VIDEO_SUFFIXES and not lossless:
            check_crf(suffix, crf)
        elif crf is not None:
            why = "with --lossless" if suffix in VIDEO_SUFFIXES else "it sets the quality of videos only"
            notes.append(f"{target}: --crf is ignored ({why})")
        if compare and (is_frame_file(source) or suffix not in IMAGE_SUFFIXES):
            notes.append(f"{target}: --compare is ignored (comparisons are written for still images only)")
    return notes


def compare_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}_compare.png")


def upscale_frame_file(source, target, scale: float, net: TiledVDSR, crf: int | None = None,
                       lossless: bool = False, batch: int = DEFAULT_BATCH, progress=None,
                       overwrite: bool = False) -> int:
    """Upscale every frame of a video or multi-frame image `source` (or a still written as a GIF or APNG) into
    `target` as a stream (`vdsr_jax.media.transcode`, `inference.upscale_frames`: `batch` tile windows per
    device call); returns the number of frames. What is kept, `crf`, `lossless` and the errors as `transcode`
    has them; its notes are printed as `note:` lines. Nothing is left at `target` unless every frame was
    written; `overwrite` replaces an existing `target`, which is otherwise never replaced (OutputExists)."""
    return transcode(source, target, lambda height, width: BicubicWindows(height, width, scale).out_shape,
                     lambda frames: upscale_frames(frames, scale, net, batch), crf, lossless, progress, overwrite,
                     note=lambda text: tqdm.write(f"note: {text}", file=sys.stderr))


def upscale_file(source: Path, target: Path, scale: float, net: TiledVDSR, compare: bool, tiles_bar,
                 frame_options=None, overwrite: bool = False) -> None:
    """Read, upscale and write one image (and its comparison), or every frame of a video or multi-frame
    image; ImageError naming the file on failure, OutputExists for an output that exists (written by another
    process since the command checked) unless `overwrite`."""
    if is_frame_file(source) or target.suffix.lower() not in IMAGE_SUFFIXES:  # frames, or a GIF/APNG of one
        upscale_frame_file(source, target, scale, net, progress=tiles_bar, overwrite=overwrite,
                           **(frame_options or {}))
        return
    pixels, metadata = read_image_and_metadata(source)
    height, width = BicubicWindows(*pixels.shape[:2], scale).out_shape
    check_encodable(target, height, width, pixels.shape[-1])
    panel_metadata = ImageMetadata(icc_profile=metadata.icc_profile)  # the panel shows the same colours
    notes = [metadata_note(target, metadata, pixels.shape[-1])]
    if compare:
        notes.append(metadata_note(compare_path(target), panel_metadata, 3))  # an RGB PNG
    for note in filter(None, notes):
        tqdm.write(f"note: {note}", file=sys.stderr)
    try:
        out, plain = upscale_image(pixels, scale, net, bicubic=compare, progress=tiles_bar)
    except ImageError as e:
        raise ImageError(f"{source}: {e}") from None
    write_image(target, out, overwrite, metadata=metadata)
    if compare:
        write_image(compare_path(target), side_by_side([plain, out], ["bicubic", f"VDSR {scale_label(scale)}"]),
                    overwrite, metadata=panel_metadata)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="vdsr-upscale", description=__doc__)
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image, animation or video files, or folders of them")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--scale", required=True, type=parse_scale, help=f"upscaling factor, 1 to {MAX_SCALE}")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output folder, or output file when there is one input file")
    parser.add_argument("--compare", action="store_true", help="also write a bicubic | VDSR comparison PNG")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"tile size in pixels ({DEFAULT_TILE})")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--crf", type=int, default=None,
                        help="video quality, lower is better (H.264: 0-51, default 18; VP9 .webm: 0-63, default 31)")
    parser.add_argument("--lossless", action="store_true",
                        help="videos and WebP animations: store the upscaled frames exactly")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                        help=f"videos and animations: tile windows per device call ({DEFAULT_BATCH})")
    return parser


@report_errors
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        raise UserError(f"--batch must be at least 1, got {args.batch}")
    files = list_images(args.inputs, suffixes=INPUT_SUFFIXES)
    pairs = output_paths(args.inputs, files, args.output, args.scale, args.compare, args.overwrite)
    for note in option_notes(pairs, args.crf, args.lossless, args.compare):
        print(f"note: {note}", file=sys.stderr)
    model, params = load_checkpoint(args.checkpoint)
    try:
        net = TiledVDSR(model, params, tile=args.tile)
    except ValueError as e:
        raise UserError(f"--tile: {e}") from None
    failures = []
    with tqdm(pairs, desc="files", unit="file", disable=None) as files_bar:
        for source, target in files_bar:
            unit = "frame" if is_frame_file(source) else "tile"
            with tqdm(desc=source.name, unit=unit, leave=False, disable=None) as tiles_bar:
                try:
                    upscale_file(source, target, args.scale, net, args.compare, tiles_bar,
                                 dict(crf=args.crf, lossless=args.lossless, batch=args.batch), args.overwrite)
                except UserError as e:
                    failures.append(str(e))
                else:
                    tqdm.write(str(target), file=sys.stdout)
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    if failures and len(pairs) > 1:
        print(f"error: {len(failures)} of {len(pairs)} images failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
