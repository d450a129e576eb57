"""Convert VDSR weights between their forms without running pickled code.

    vdsr-convert INPUT --out OUTPUT [--overwrite]
    vdsr-convert model_epoch_50.pth --out ckpt/              # torch file -> checkpoint folder
    vdsr-convert ckpt/ --out vdsr.safetensors                # -> safetensors (.npz likewise)
    vdsr-convert ckpt/ --out vdsr_state_dict.pth             # -> pytorch-vdsr state_dict
    vdsr-convert --from-torch model_epoch_50.pth --out ckpt/  # INPUT, a torch file; --to-torch DIR: a .pth
    (or: python -m vdsr_jax.convert …)

INPUT is any form `vdsr-evaluate --checkpoint` takes: a checkpoint folder or training workdir, a `.npz` or
`.safetensors` weights file, or a torch file (state_dict, pytorch-vdsr pickle, BasicSR, PyTorch Lightning,
TorchScript; `vdsr_jax.weight_forms`). OUTPUT's suffix picks its form: `.npz`, `.safetensors`,
`.pth`/`.pt`/`.bin` (a torch state_dict), none for a checkpoint folder. Torch files are read with torch's
`weights_only` unpickler or a restricted one, with an allow-list of the classes a VDSR checkpoint holds
(`vdsr_jax.torch_weights`); a file that references anything else is refused. Weights of any floating-point
dtype are converted to float32, and a note says where that rounds (float64). An existing output is refused
unless --overwrite, which replaces it once the new one is complete.
"""
import sys

from vdsr_jax.cli import ArgumentParser, report_errors
from vdsr_jax.weight_forms import convert


@report_errors
def main(argv=None) -> int:
    parser = ArgumentParser(prog="vdsr-convert", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("input", nargs="?", help="weights of any form (folder, .npz, .safetensors, torch file)")
    source.add_argument("--from-torch", metavar="PATH", help="INPUT, which must be a torch file")
    source.add_argument("--to-torch", metavar="DIR", help="INPUT, written as a torch state_dict whatever --out's suffix")
    parser.add_argument("--out", required=True,
                        help="output: .npz, .safetensors, .pth/.pt/.bin (torch), or a folder (no suffix)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    written, notes = convert(args.input or args.from_torch or args.to_torch, args.out, overwrite=args.overwrite,
                             to_torch=args.to_torch is not None, from_torch=args.from_torch is not None)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
