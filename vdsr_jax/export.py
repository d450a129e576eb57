"""Export VDSR for use outside Python: ONNX (the Y network, or the whole LR→HR pipeline) or StableHLO.

    vdsr-export --format onnx -o vdsr_y.onnx [--checkpoint WEIGHTS] [--fp16] [--overwrite]
    vdsr-export --format onnx-pipeline --scale S -o vdsr_x2.onnx [--channels 3|1] [--input-dtype float32|uint8]
                [--layout nchw|nhwc] [--fp16] …
    vdsr-export --format stablehlo -o vdsr_y.stablehlo …
    (or: python -m vdsr_jax.export …)

onnx: the Y→Y network, float32 (float16 with --fp16) batch×1×height×width in and out, dynamic batch, height
and width (vdsr_jax.onnx_graphs). onnx-pipeline: RGB (--channels 1: grey) LR pixels in, HR pixels out at
the integer scale S, with MATLAB YCbCr and bicubic inside, as vdsr-upscale computes them; float32 in [0, 1]
or uint8 (--input-dtype; the output has the same dtype), NCHW or NHWC (--layout); --fp16 runs the network
part in float16. stablehlo: the Y→Y network as a serialized jax.export artefact, float32
batch×height×width×1 with symbolic batch, height and width (vdsr_jax.stablehlo); jax's compatibility window
applies (6 months backward, 3 weeks forward). ONNX export needs the onnx package:
pip install "vdsr_jax[export]".

Without --checkpoint the weights bundled with the package are used (`vdsr_jax.pretrained`); a version that
ships none says so in one line. An existing output is refused unless --overwrite; the output is written
under a temporary name and takes its name when complete, and never replaces a file another process wrote
there meanwhile (unless --overwrite).
"""
import argparse
import sys
from pathlib import Path

from vdsr_jax.cli import CHECKPOINT_HELP, ArgumentParser, load_checkpoint, report_errors
from vdsr_jax.errors import UserError, known_names
from vdsr_jax.media import atomic_output, check_writable, refuse_existing
from vdsr_jax.onnx_graphs import CHANNELS, DTYPES, LAYOUTS, pipeline_model, require_onnx, y_model
from vdsr_jax.resize import MAX_SCALE
from vdsr_jax.stablehlo import export_stablehlo

FORMATS = ("onnx", "onnx-pipeline", "stablehlo")
SUFFIXES = {"onnx": ".onnx", "onnx-pipeline": ".onnx", "stablehlo": ".stablehlo"}  # the output file's, per format
PIPELINE_OPTIONS = ("scale", "channels", "input_dtype", "layout")


def parse_integer_scale(text: str) -> int:
    """argparse type: an integer from 1 to MAX_SCALE (MATLAB bicubic has fixed phase filters only there)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be a number, got {text!r}") from None
    if not (value.is_integer() and 1 <= value <= MAX_SCALE):  # also rejects NaN and infinities
        raise argparse.ArgumentTypeError(f"the pipeline needs an integer scale from 1 to {MAX_SCALE}, got {text}")
    return int(value)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="vdsr-export", description=__doc__)
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write (see above)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="the file to write")
    parser.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    parser.add_argument("--fp16", action="store_true",
                        help="onnx: float16 weights, input and output; onnx-pipeline: the network in float16")
    parser.add_argument("--scale", type=parse_integer_scale, help="onnx-pipeline: the integer upscaling factor")
    parser.add_argument("--channels", type=int, choices=CHANNELS, help="onnx-pipeline: 3 (RGB, default) or 1 (grey)")
    parser.add_argument("--input-dtype", choices=DTYPES,
                        help="onnx-pipeline: float32 in [0, 1] (default) or uint8; the output has the same")
    parser.add_argument("--layout", choices=LAYOUTS,
                        help="onnx-pipeline: N×C×H×W (nchw, default) or N×H×W×C (nhwc)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def check_options(args) -> None:
    """UserError for options that do not go together, before any work."""
    given = [f"--{name.replace('_', '-')}" for name in PIPELINE_OPTIONS if getattr(args, name) is not None]
    if args.format != "onnx-pipeline" and given:
        raise UserError(f"{', '.join(given)}: for --format onnx-pipeline only, not {args.format}")
    if args.format == "onnx-pipeline" and args.scale is None:
        raise UserError("--format onnx-pipeline needs --scale (an integer, e.g. --scale 2)")
    if args.format == "stablehlo" and args.fp16:
        raise UserError("--fp16 applies to the ONNX formats; the StableHLO artefact is float32")
    suffix = SUFFIXES[args.format]
    if args.output.suffix.lower() != suffix:
        hint = known_names(args.output.suffix.lower(), set(SUFFIXES.values())) if args.output.suffix else ""
        raise UserError(f"-o {args.output}: --format {args.format} writes a {suffix} file"
                        f"{'; ' + hint if hint else ''}")


def exported_bytes(args, model, params) -> bytes:
    """The file contents of `args.format` for (model, params)."""
    if args.format == "stablehlo":
        return export_stablehlo(model, params)
    if args.format == "onnx":
        return y_model(model, params, fp16=args.fp16).SerializeToString()
    given = {"channels": args.channels, "dtype": args.input_dtype, "layout": args.layout}  # the others: defaults
    return pipeline_model(model, params, args.scale, fp16=args.fp16,
                          **{name: value for name, value in given.items() if value is not None}).SerializeToString()


@report_errors
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_options(args)
    check_writable(args.output)
    refuse_existing(args.output, args.overwrite)
    if args.format != "stablehlo":
        require_onnx()  # before the weights are loaded
    model, params = load_checkpoint(args.checkpoint)
    data = exported_bytes(args, model, params)
    with atomic_output(args.output, args.overwrite) as tmp:
        tmp.write_bytes(data)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
