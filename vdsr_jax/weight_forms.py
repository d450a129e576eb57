"""Every form VDSR weights come in, read and written in one place: what `vdsr-evaluate`/`vdsr-upscale
--checkpoint`, `vdsr-convert` and `vdsr_jax.load` accept.

Forms (`identify` tells them apart by their content; the suffix decides only for a file too damaged to say):
- a checkpoint folder (from vdsr-convert or vdsr-train) or a training workdir: its latest step
  (`vdsr_jax.checkpoint.load_model`);
- a `.npz` or `.safetensors` weights file in vdsr_jax's layout (`vdsr_jax.pretrained`);
- a `.safetensors` file in pytorch-vdsr's layout (`input.weight`, `residual_layer.<i>.conv.weight`,
  `output.weight`, OIHW), as `safetensors.torch.save_file(state_dict)` writes it: read with numpy, no torch;
- a torch file of any layout `vdsr_jax.torch_weights.read_torch_file` knows (needs torch).
"""
from pathlib import Path

import jax
import jax.numpy as jnp

from vdsr_jax.checkpoint import check_replaceable, load_model, model_from_spec, save_model
from vdsr_jax.errors import CheckpointError, ConversionError, known_names
from vdsr_jax.media import check_writable, refuse_existing
from vdsr_jax.model import VDSR, model_spec
from vdsr_jax.pretrained import (SAFETENSORS_KEY, export_pretrained, is_safetensors, load_pretrained,
                                 read_safetensors)

FOLDER, NPZ, SAFETENSORS, TORCH = "checkpoint folder", ".npz", ".safetensors", "torch file"
FILE_SUFFIXES = {".npz": NPZ, ".safetensors": SAFETENSORS, ".pth": TORCH, ".pt": TORCH, ".bin": TORCH}
# suffixes that only name a file to read: Lightning's .ckpt, torch's old tar format, plain pickles
READ_SUFFIXES = {**FILE_SUFFIXES, ".ckpt": TORCH, ".tar": TORCH, ".pkl": TORCH}
# first bytes of files people pass by mistake, to say what was found
OTHER_FILES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
               b"\x1f\x8b": "gzip data", b"\x89HDF": "an HDF5 file (Keras?)", b"%PDF": "a PDF document"}


def identify(path) -> str:
    """The form of the weights at `path` (FOLDER, NPZ, SAFETENSORS or TORCH), from its content.

    CheckpointError for a missing path or a file of no such form, naming what it is where known."""
    path = Path(path).expanduser()
    if path.is_dir():
        return FOLDER
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{path} is neither a file nor a folder")
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):  # a zip: torch.save's and torch.jit.save's (…/data.pkl), or an .npz
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            names = []
        if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return TORCH
        return FILE_SUFFIXES.get(path.suffix.lower(), NPZ)
    if is_safetensors(path):
        return SAFETENSORS
    if head[:1] == b"\x80":  # a pickle (protocol ≥ 2): torch's legacy format and pytorch-vdsr's file
        return TORCH
    if path.suffix.lower() in READ_SUFFIXES:  # damaged, or torch's tar format: its reader says which
        return READ_SUFFIXES[path.suffix.lower()]
    found = next((name for magic, name in OTHER_FILES.items() if head.startswith(magic)), None)
    if found is None:
        found = "text" if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head) else f"bytes {head[:8]!r}…"
    raise CheckpointError(f"{path} is {found}, not VDSR weights: a checkpoint is a folder (from vdsr-train or "
                          "vdsr-convert), a .npz or .safetensors weights file, or a torch file")


def load_weights(path=None, compute_dtype: str = "float32", notes: list | None = None) -> tuple[VDSR, dict]:
    """`(model, params)` from weights of any form (see the module's docstring); the weights bundled with the
    package when `path` is None.

    `params` is the Flax tree `{'conv_<i>': {'kernel': float32 (3, 3, in, out) array, 'bias': (out,) if
    use_bias}}` of JAX arrays; `compute_dtype` ('float32' or 'bfloat16') is the model's. Lines on how a
    torch file's weights were chosen (BasicSR's params_ema) or rounded (float64) are appended to `notes`
    when given. Raises `pretrained.NoBundledWeights` without `path` when none ship; CheckpointError or
    ConversionError (one line naming the form found and what is wrong) for anything unreadable, unsafe or
    not a VDSR; ConversionError saying torch is needed for a torch file without torch.
    """
    if path is None:
        return load_pretrained(None, compute_dtype)
    form = identify(path)
    if form == FOLDER:
        return load_model(path, compute_dtype=compute_dtype)
    if form == NPZ:
        return load_pretrained(path, compute_dtype)
    from vdsr_jax import torch_weights  # numpy only at import; torch itself only for torch files

    if form == SAFETENSORS:
        metadata, arrays = read_safetensors(path)
        if SAFETENSORS_KEY in metadata:
            return load_pretrained(path, compute_dtype)
        try:
            params, model, more = torch_weights.torch_to_flax(arrays)
        except ConversionError as e:
            raise ConversionError(f"{path} (a safetensors file without vdsr_jax's description, read as a "
                                  f"pytorch-vdsr state_dict): {e}") from None
    else:
        params, model, more = torch_weights.load_torch(path)
    if notes is not None:
        notes.extend(more)
    return model_from_spec(model_spec(model), compute_dtype), jax.tree.map(jnp.asarray, params)


def output_form(path, torch: bool = False) -> str:
    """The form `convert` writes to `path`: TORCH when `torch`, else by suffix (`FILE_SUFFIXES`), a FOLDER
    for a name without one or an existing folder. ConversionError for another suffix."""
    if torch:
        return TORCH
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES:
        return FILE_SUFFIXES[suffix]
    if not suffix or path.is_dir():
        return FOLDER
    raise ConversionError(f"{path}: no weights form has the suffix {suffix}; "
                          f"{known_names(suffix, FILE_SUFFIXES)} (or a folder name without a suffix)")


def convert(source, out, overwrite: bool = False, to_torch: bool = False,
            from_torch: bool = False) -> tuple[Path, list[str]]:
    """Write the weights at `source` (any form `load_weights` reads; a torch file when `from_torch`) to `out`,
    in the form `output_form(out, to_torch)` gives.

    Returns (`out`, notes on how the weights were chosen or rounded). Before the weights are read, in this
    order: torch is checked where either side is a torch file (a missing torch is the first thing to fix),
    `out` must be writable, `source` must be of a known form, and `out`, unless `overwrite`, absent
    (OutputExists). The output is written under a temporary name and replaces `out` when complete.
    """
    from vdsr_jax.torch_weights import require_torch

    form_out = output_form(out, to_torch)
    if form_out == TORCH:
        require_torch()
    out = Path(out).expanduser()
    check_writable(out, folder=form_out == FOLDER)
    form_in = identify(source)
    if form_in == TORCH:
        require_torch()
    elif from_torch:
        raise ConversionError(f"{source} is a {form_in}{'' if form_in == FOLDER else ' file'}, not a torch file: "
                              "--from-torch takes torch files "
                              "(give other forms as INPUT; --to-torch DIR writes a torch file)")
    refuse_existing(out, overwrite)
    if form_out == FOLDER:
        check_replaceable(out)
    notes = []
    model, params = load_weights(source, notes=notes)
    if form_out == FOLDER:
        save_model(out, params, model, overwrite=overwrite)
    elif form_out == TORCH:
        from vdsr_jax.torch_weights import save_torch

        save_torch(jax.device_get(params), out, overwrite)
    else:
        export_pretrained(params, model, out, provenance={"converted_from": Path(source).name},
                          overwrite=overwrite)
    return out, notes
