"""Pretrained weights as one small `.npz` file that numpy alone reads: no JAX, no torch, no pickle.

    model, params = load_pretrained()            # the weights bundled with the package
    model, params = load_pretrained("w.npz")     # any file written by export_pretrained
    export_pretrained(params, model, "w.npz", provenance={...})

Format (`FORMAT`): a zip of `.npy` arrays as `np.savez_compressed` writes it. Each parameter is one float32
array named by its path in the Flax tree (`conv_0/kernel`, `conv_0/bias`, …; kernels HWIO, 3×3×in×out).
The entry `__meta__` is a 0-d unicode array holding JSON:
`{"format": FORMAT, "model": {"depth", "features", "use_bias"}, "provenance": {...}}`, where provenance says
how the weights were made (config, steps, patches, precision, wall time, hardware) and how they evaluate
(`provenance["evaluation"]`: rows as `vdsr_jax.evaluate.evaluate_scales` returns them). Reading never
unpickles (`np.load(allow_pickle=False)`), so a file with an object array is refused, not executed.
"""
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vdsr_jax.checkpoint import CheckpointError, flatten, model_from_spec, model_spec, validate_params

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
    arrays = {name: np.asarray(value, np.float32) for name, value in flatten(params).items()}
    if META_KEY in arrays:
        raise ValueError(f"a parameter may not be named {META_KEY}")
    meta = {"format": FORMAT, "model": model_spec(model), "provenance": dict(provenance or {})}
    text = json.dumps(meta, allow_nan=False, sort_keys=True)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays, **{META_KEY: np.array(text)})
        os.chmod(tmp, 0o644)  # mkstemp's files are private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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


def load_pretrained(path=None, dtype=None):
    """`(model, params)` from a weights file (default: the one bundled with the package, `DEFAULT_PATH`).

    `params` are float32 JAX arrays; `dtype` is the model's compute dtype (default float32). Raises
    NoBundledWeights when no path is given and the package has none, CheckpointError for a bad file.
    """
    import jax.numpy as jnp

    meta, flat = read_pretrained(path)
    model = model_from_spec(meta["model"], dtype=jnp.float32 if dtype is None else dtype)
    params = unflatten({name: jnp.asarray(array) for name, array in flat.items()})
    validate_params(params, model)
    return model, params


def pretrained_info(path=None) -> dict:
    """The JSON description (format, model, provenance) of a weights file."""
    return read_pretrained(path)[0]


def load_any(checkpoint=None, dtype=None):
    """What `evaluate`/`upscale` load: the bundled weights when `checkpoint` is None, a `.npz` weights file,
    or else an orbax checkpoint folder (`vdsr_jax.checkpoint.load_model`)."""
    if checkpoint is None or Path(checkpoint).suffix == ".npz":
        return load_pretrained(checkpoint, dtype=dtype)
    from vdsr_jax.checkpoint import load_model

    return load_model(checkpoint) if dtype is None else load_model(checkpoint, dtype=dtype)


def unflatten(flat: dict) -> dict:
    """{'conv_0/kernel': a} -> {'conv_0': {'kernel': a}} (the inverse of `checkpoint.flatten`)."""
    tree = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise CheckpointError(f"layer name {name} clashes with another entry")
        if leaf in node:
            raise CheckpointError(f"layer name {name} clashes with another entry")
        node[leaf] = value
    return tree


def _resolve(path) -> Path:
    if path is not None:
        return Path(path).expanduser()
    if not DEFAULT_PATH.is_file():
        raise NoBundledWeights(
            f"no pretrained weights ship with this version of vdsr_jax yet ({DEFAULT_PATH} is absent): "
            "pass --checkpoint (a folder from `vdsr_jax.train` or `vdsr_jax.convert`, or a .npz weights file)")
    return DEFAULT_PATH
