"""Pretrained weights as one small `.npz` file that numpy alone reads: no JAX, no torch, no pickle.

    model, params = load_pretrained()            # the weights bundled with the package
    model, params = load_pretrained("w.npz")     # any file written by export_pretrained
    export_pretrained(params, model, "w.npz", provenance={...})

Format (`FORMAT`): a zip of `.npy` arrays as `np.savez_compressed` writes it. Each parameter is one float32
array named by its path in the Flax tree (`conv_0/kernel`, `conv_0/bias`, …; kernels HWIO, 3×3×in×out).
The entry `__meta__` is a 0-d unicode array holding JSON:
`{"format": FORMAT, "model": {"depth", "features", "use_bias"}, "provenance": {...}}`, where provenance says
how the weights were made (config, steps, patches, precision, wall time, hardware) and how they evaluate
(`provenance["evaluation"]`: rows as `vdsr_jax.protocol.evaluate_sets` returns them). Reading never
unpickles (`np.load(allow_pickle=False)`), so a file with an object array is refused, not executed.
"""
import io
import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from flax.traverse_util import flatten_dict, unflatten_dict

from vdsr_jax.checkpoint import model_from_spec, validate_params
from vdsr_jax.errors import CheckpointError
from vdsr_jax.media import atomic_output
from vdsr_jax.model import model_spec

FORMAT = "vdsr_jax.pretrained/1"
META_KEY = "__meta__"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_PATH = WEIGHTS_DIR / "vdsr_x234.npz"


class NoBundledWeights(CheckpointError):
    """The package ships no pretrained weights (yet); pass a checkpoint instead."""


def export_pretrained(params: dict, model, path, provenance: dict | None = None) -> Path:
    """Write `params` (a Flax tree of `model`) as float32 arrays plus the JSON description to `path`.

    The file is written under a temporary name and renamed, so a failure never leaves a partial file.
    `provenance` must be JSON-serialisable.
    """
    validate_params(params, model)
    arrays = {name: np.asarray(value, np.float32) for name, value in flatten_dict(params, sep="/").items()}
    if META_KEY in arrays:
        raise ValueError(f"a parameter may not be named {META_KEY}")
    meta = {"format": FORMAT, "model": model_spec(model), "provenance": dict(provenance or {})}
    text = json.dumps(meta, allow_nan=False, sort_keys=True)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp, tmp.open("wb") as f:  # a file object: savez adds no suffix
        np.savez_compressed(f, **arrays, **{META_KEY: np.array(text)})
    return path


def read_pretrained(path=None) -> tuple[dict, dict]:
    """(meta, {'conv_0/kernel': float32 array, …}) of a weights file, with numpy only; CheckpointError if it
    is missing, not such a file, or holds anything but numeric arrays and the JSON description."""
    path = _resolve(path)
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
    meta_array = entries.pop(META_KEY)
    try:
        meta = json.loads(str(meta_array[()])) if meta_array.dtype.kind == "U" and meta_array.ndim == 0 else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{path}: its {META_KEY} entry is not a {FORMAT} description")
    for name, array in entries.items():
        if array.dtype.kind != "f":
            raise CheckpointError(f"{path}: layer {name} holds {array.dtype} values, not floating point")
        if not np.all(np.isfinite(array)):
            raise CheckpointError(f"{path}: layer {name} holds non-finite values")
    return meta, {name: array.astype(np.float32) for name, array in entries.items()}


def load_pretrained(path=None, compute_dtype: str = "float32"):
    """`(model, params)` from a weights file (default: the one bundled with the package, `DEFAULT_PATH`).

    `params` are float32 JAX arrays; `compute_dtype` ('float32' or 'bfloat16') is the model's. Raises
    NoBundledWeights when no path is given and the package has none, CheckpointError for a bad file.
    """
    import jax.numpy as jnp

    meta, flat = read_pretrained(path)
    model = model_from_spec(meta["model"], compute_dtype)
    params = unflatten({name: jnp.asarray(array) for name, array in flat.items()})
    validate_params(params, model)
    return model, params


def pretrained_info(path=None) -> dict:
    """The JSON description (format, model, provenance) of a weights file."""
    return read_pretrained(path)[0]


def load_any(checkpoint=None, compute_dtype: str = "float32"):
    """What `vdsr-evaluate`/`vdsr-upscale` load: the bundled weights when `checkpoint` is None, a weights
    file (`.npz`, or any file that starts as a zip holding `__meta__`), or else a checkpoint folder
    (`vdsr_jax.checkpoint.load_model`, which explains PyTorch files and other paths)."""
    if checkpoint is None or _is_weights_file(Path(checkpoint).expanduser()):
        return load_pretrained(checkpoint, compute_dtype)
    from vdsr_jax.checkpoint import load_model

    return load_model(checkpoint, compute_dtype=compute_dtype)


def _is_weights_file(path: Path) -> bool:
    if path.suffix.lower() == ".npz":
        return True
    if not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return f"{META_KEY}.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


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
            "pass --checkpoint (a folder from vdsr-train or vdsr-convert, or a .npz weights file)")
    return DEFAULT_PATH
