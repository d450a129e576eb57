"""Convert VDSR weights between pytorch-vdsr (torch) and vdsr_jax (orbax) without running pickled code.

    vdsr-convert --from-torch model_epoch_50.pth --out ckpt/ [--overwrite]
    vdsr-convert --to-torch ckpt/ --out vdsr_state_dict.pth [--overwrite]
    (or: python -m vdsr_jax.convert …)

Torch files are read with torch's `weights_only` unpickler and an allow-list of the classes a VDSR
checkpoint holds (`vdsr_jax.torch_weights`); a file that references anything else is refused. Weights of
any floating-point dtype are converted to float32, and a note says where that rounds (float64). An
existing output is refused unless --overwrite, which replaces it once the new one is complete.
"""
import sys

from vdsr_jax.cli import ArgumentParser, report_errors
from vdsr_jax.torch_weights import from_torch, to_torch


@report_errors
def main(argv=None) -> int:
    parser = ArgumentParser(prog="vdsr-convert", description=__doc__)
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-torch", metavar="PATH", help="torch state_dict or pytorch-vdsr pickle")
    direction.add_argument("--to-torch", metavar="DIR", help="vdsr_jax checkpoint folder")
    parser.add_argument("--out", required=True, help="checkpoint folder (from torch) or .pth file (to torch)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    if args.from_torch:
        written, notes = from_torch(args.from_torch, args.out, overwrite=args.overwrite)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    else:
        written = to_torch(args.to_torch, args.out, overwrite=args.overwrite)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
