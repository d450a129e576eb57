"""Weights files: one small `.npz` or `.safetensors` file that numpy alone reads, with no JAX, torch or pickle.

    model, params = load_pretrained()                    # the weights bundled with the package
    model, params = load_pretrained("w.npz")             # any file written by export_pretrained
    export_pretrained(params, model, "w.safetensors", provenance={...})

Format (`FORMAT`): each parameter is one float32 array named by its path in the Flax tree (`conv_0/kernel`,
`conv_0/bias`, …; kernels HWIO, 3×3×in×out), beside a JSON description
`{"format": FORMAT, "model": {"depth", "features", "use_bias"}, "provenance": {...}}`, where provenance says
how the weights were made (config, steps, patches, precision, wall time, hardware) and how they evaluate
(`provenance["evaluation"]`: rows as `vdsr_jax.protocol.evaluate_sets` returns them). Two containers hold it,
chosen by the file's suffix when written and by its first bytes when read:
- `.npz`: a zip of `.npy` arrays as `np.savez_compressed` writes it; the description is the 0-d unicode
  array `__meta__`. Reading never unpickles (`np.load(allow_pickle=False)`), so a file with an object array
  is refused, not executed.
- `.safetensors` (https://huggingface.co/docs/safetensors): a JSON header and raw little-endian arrays; the
  description is the header's metadata entry `vdsr_jax`. Read with the safetensors package's numpy API.
"""
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from flax.traverse_util import flatten_dict, unflatten_dict

from vdsr_jax.checkpoint import float32_weights, model_from_spec, validate_params
from vdsr_jax.errors import CheckpointError
from vdsr_jax.media import atomic_output
from vdsr_jax.model import model_spec

FORMAT = "vdsr_jax.pretrained/1"
META_KEY = "__meta__"  # the .npz entry holding the description
SAFETENSORS_KEY = "vdsr_jax"  # the .safetensors metadata entry holding it
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_PATH = WEIGHTS_DIR / "vdsr_x234.npz"


class NoBundledWeights(CheckpointError):
    """The package ships no pretrained weights (yet); pass a checkpoint instead."""


def export_pretrained(params: dict, model, path, provenance: dict | None = None, overwrite: bool = True) -> Path:
    """Write `params` (a Flax tree of `model`) as float32 arrays plus the JSON description to `path`: a
    `.safetensors` file for that suffix, else a `.npz`.

    The file is written under a temporary name and renamed, so a failure never leaves a partial file; with
    `overwrite` False, OutputExists where `path` exists by then (see `media.images.atomic_output`).
    `provenance` must be JSON-serialisable.
    """
    validate_params(params, model)
    arrays = {name: np.ascontiguousarray(value, np.float32) for name, value in flatten_dict(params, sep="/").items()}
    if META_KEY in arrays:
        raise ValueError(f"a parameter may not be named {META_KEY}")
    meta = {"format": FORMAT, "model": model_spec(model), "provenance": dict(provenance or {})}
    text = json.dumps(meta, allow_nan=False, sort_keys=True)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import save

        with atomic_output(path, overwrite) as tmp:
            tmp.write_bytes(save(arrays, metadata={SAFETENSORS_KEY: text}))
    else:
        with atomic_output(path, overwrite) as tmp, tmp.open("wb") as f:  # a file object: savez adds no suffix
            np.savez_compressed(f, **arrays, **{META_KEY: np.array(text)})
    return path


def is_safetensors(path: Path) -> bool:
    """Whether `path` starts as a safetensors file does: a little-endian 8-byte header size, then '{'."""
    with Path(path).open("rb") as f:
        head = f.read(9)
    return len(head) == 9 and struct.unpack("<Q", head[:8])[0] > 0 and head[8:] == b"{"


def read_safetensors(path) -> tuple[dict, dict]:
    """(metadata: str -> str, name -> numpy array) of a `.safetensors` file, read with the safetensors
    package's numpy API: no pickle, no torch. bfloat16 and float8 arrays come as ml_dtypes arrays.
    CheckpointError for a missing file or a damaged one (header, offsets, size)."""
    import ml_dtypes  # noqa: F401 - registers bfloat16 and float8 with numpy, for safetensors to build them
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            return f.metadata() or {}, {name: f.get_tensor(name) for name in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except (SafetensorError, OSError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None


def read_pretrained(path=None) -> tuple[dict, dict]:
    """(meta, {'conv_0/kernel': float32 array, …}) of a weights file (.npz or .safetensors), with numpy
    only; CheckpointError if it is missing, not such a file, or holds anything but floating-point arrays
    with finite values and the JSON description."""
    path = _resolve(path)
    if path.suffix.lower() == ".safetensors" or (path.is_file() and is_safetensors(path)):
        metadata, entries = read_safetensors(path)
        if SAFETENSORS_KEY not in metadata:
            raise CheckpointError(f"{path} lacks the {SAFETENSORS_KEY} metadata entry (model description): "
                                  "not a vdsr_jax weights file")
        text = metadata[SAFETENSORS_KEY]
    else:
        entries = _read_npz(path)
        meta_array = entries.pop(META_KEY)
        text = str(meta_array[()]) if meta_array.dtype.kind == "U" and meta_array.ndim == 0 else None
    try:
        meta = json.loads(text) if text is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{path}: its model description is not a {FORMAT} description")
    try:
        return meta, {name: float32_weights(name, array)[0] for name, array in entries.items()}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_npz(path: Path) -> dict:
    """The arrays of a `.npz` weights file, `META_KEY` among them, never unpickled."""
    try:
        data = path.read_bytes()
        if not data.startswith(b"PK\x03\x04"):
            raise zipfile.BadZipFile("it does not start as a zip archive")
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            entries = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"pretrained weights file {path} does not exist") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable weights file (.npz): {e}") from None
    except ValueError as e:  # among others numpy's refusal of object (pickled) arrays
        raise CheckpointError(f"{path} cannot be read without unpickling or is damaged: {e}") from None
    if META_KEY not in entries:
        raise CheckpointError(f"{path} lacks the {META_KEY} entry (model description): not a vdsr_jax weights file")
    return entries


def load_pretrained(path=None, compute_dtype: str = "float32"):
    """`(model, params)` from a weights file (default: the one bundled with the package, `DEFAULT_PATH`).

    `params` are float32 JAX arrays; `compute_dtype` ('float32' or 'bfloat16') is the model's. Raises
    NoBundledWeights when no path is given and the package has none, CheckpointError for a bad file.
    """
    import jax.numpy as jnp

    meta, flat = read_pretrained(path)
    try:
        model = model_from_spec(meta["model"], compute_dtype)
        params = unflatten({name: jnp.asarray(array) for name, array in flat.items()})
        validate_params(params, model)
    except CheckpointError as e:
        raise CheckpointError(f"{_resolve(path)}: {e}") from None
    return model, params


def pretrained_info(path=None) -> dict:
    """The JSON description (format, model, provenance) of a weights file."""
    return read_pretrained(path)[0]


def unflatten(flat: dict) -> dict:
    """{'conv_0/kernel': a} -> {'conv_0': {'kernel': a}} (the inverse of `flatten_dict(tree, sep="/")`);
    CheckpointError if one name is a prefix of another."""
    names = sorted(flat)
    for name, following in zip(names, names[1:]):
        if following.startswith(name + "/"):
            raise CheckpointError(f"layer name {name} clashes with another entry")
    return unflatten_dict(flat, sep="/")


def _resolve(path) -> Path:
    if path is not None:
        return Path(path).expanduser()
    if not DEFAULT_PATH.is_file():
        raise NoBundledWeights(
            f"no pretrained weights ship with this version of vdsr_jax yet ({DEFAULT_PATH} is absent): "
            "pass --checkpoint (a folder from vdsr-train or vdsr-convert, or a .npz, .safetensors or torch file)")
    return DEFAULT_PATH
