"""VDSR weights in PyTorch files: read without running pickled code, converted to and from Flax parameters.

Torch files are read with torch's `weights_only` unpickler and an explicit allow-list of the classes a
VDSR checkpoint holds. pytorch-vdsr's published file is a Python 2 legacy pickle whose string opcodes that
unpickler cannot parse; for those alone a restricted unpickler with the same allow-list takes over. A
TorchScript archive's data.pkl goes through that restricted unpickler too, its classes as inert attribute
holders (`ScriptObject`): torch.load would hand the archive to torch.jit.load, which compiles its code.

The layouts of the common training frameworks are found (`read_torch_file`): a state_dict, a pickled
model, `{"model": …}`, PyTorch Lightning's `{"state_dict": …}` with prefixed names, BasicSR's
`{"params": …, "params_ema": …}`, TorchScript archives.
"""
import collections
import io
import pickle
import re
import types
import warnings
import zipfile
from pathlib import Path

import numpy as np

from vdsr_jax.checkpoint import float32_weights, validate_params
from vdsr_jax.errors import CheckpointError, ConversionError
from vdsr_jax.media import atomic_output
from vdsr_jax.model import VDSR, create_model


def _legacy_backend(*_args):
    """Stands in for `torch.nn.backends.thnn._get_thnn_function_backend`, gone from torch; old pickles call it."""
    return None


def _allowed_globals() -> dict:
    """(module, name) -> object: everything a VDSR checkpoint may reference, and nothing else."""
    import torch
    from torch import nn

    import torch_reference

    return {
        ("vdsr", "Net"): torch_reference.Net,
        ("vdsr", "Conv_ReLU_Block"): torch_reference.Conv_ReLU_Block,
        ("torch_reference.model", "Net"): torch_reference.Net,
        ("torch_reference.model", "Conv_ReLU_Block"): torch_reference.Conv_ReLU_Block,
        ("torch.nn.modules.container", "Sequential"): nn.Sequential,
        ("torch.nn.modules.conv", "Conv2d"): nn.Conv2d,
        ("torch.nn.modules.activation", "ReLU"): nn.ReLU,
        ("torch.nn.parameter", "Parameter"): nn.Parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _legacy_backend,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch", "FloatStorage"): torch.FloatStorage,
    }


class ScriptObject:
    """An object of a TorchScript class (`__torch__.…` in an archive's data.pkl) as inert attributes: the
    class's compiled code is never loaded or run, pickle's BUILD only fills `__dict__`."""


def _restricted_unpickler(allowed: dict, script_objects: bool = False) -> type:
    """A pickle.Unpickler that resolves only allow-listed globals, and `__torch__.*` classes to ScriptObject
    when `script_objects`."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if script_objects and module.startswith("__torch__."):
                # TorchScript numbers each further compilation of a class: `…conv.___torch_mangle_1.Conv2d`
                return type(name, (ScriptObject,), {"__module__": re.sub(r"\.___torch_mangle_\d+", "", module)})
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
            return allowed[(module, name)]

    return Unpickler


def _restricted_pickle_module(allowed: dict) -> types.ModuleType:
    """A `pickle`-like module for torch.load whose unpickler resolves only allow-listed globals."""
    module = types.ModuleType("vdsr_restricted_pickle")
    module.Unpickler = _restricted_unpickler(allowed)
    module.load = lambda f, **kw: module.Unpickler(f, **kw).load()
    return module


def require_torch():
    """The torch module; ConversionError where it is not installed (it is an optional dependency)."""
    try:
        import torch
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise ConversionError("reading or writing PyTorch files needs PyTorch, which is not installed: "
                              "pip install \"vdsr_jax[torch]\" (in a clone: pip install -e \".[torch]\")") from None
    return torch


def _torchscript_root(path: Path) -> str | None:
    """The folder of a TorchScript archive's data.pkl (what torch.jit.save writes: a zip whose folder also
    holds constants.pkl and code/), None for any other file."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        roots = [name.removesuffix("/constants.pkl") for name in archive.namelist() if name.endswith("/constants.pkl")]
    return roots[0] if roots else None


def _read_torchscript(torch, path: Path, root: str) -> ScriptObject:
    """The module object of a TorchScript archive, unpickled from its data.pkl with the restricted unpickler:
    weights become tensors, modules ScriptObjects. torch.load refuses TorchScript archives with
    weights_only=True and otherwise hands them to torch.jit.load, which compiles and runs (`__setstate__`)
    the archive's code; neither is used."""

    def rebuild(storage, offset, size, stride, *_):
        return storage.as_strided(size, stride, offset)

    def first(value, *_):  # torch.jit._pickle's list builders and type tags: the value itself
        return value

    helpers = ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")
    with warnings.catch_warnings(), zipfile.ZipFile(path) as archive:
        warnings.simplefilter("ignore")  # the legacy storage classes (FloatStorage, …) warn that they are deprecated
        storages = {("torch", name): getattr(torch, name) for name in dir(torch) if name.endswith("Storage")
                    and isinstance(getattr(getattr(torch, name), "dtype", None), torch.dtype)}
        allowed = {**_allowed_globals(), **storages, ("torch._utils", "_rebuild_tensor_v2"): rebuild,
                   **{("torch.jit._pickle", name): first for name in helpers}}
        names = set(archive.namelist())
        if f"{root}/byteorder" in names and archive.read(f"{root}/byteorder") != b"little":
            raise ConversionError(f"{path} is a big-endian TorchScript archive; only little-endian ones are read")

        def persistent_load(saved_id):
            _, storage_type, key, _, _ = saved_id  # ('storage', storage class, key, location, size)
            data = bytearray(archive.read(f"{root}/data/{key}"))
            return torch.frombuffer(data, dtype=storage_type.dtype) if data else torch.empty(0)

        unpickler = _restricted_unpickler(allowed, script_objects=True)(io.BytesIO(archive.read(f"{root}/data.pkl")))
        unpickler.persistent_load = persistent_load
        return unpickler.load()


def _untrusted_load(path: Path):
    torch = require_torch()

    root = _torchscript_root(path)
    if root is not None:
        return _read_torchscript(torch, path, root)
    allowed = _allowed_globals()
    safe = [(obj, f"{module}.{name}") for (module, name), obj in allowed.items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old pickles warn that the saved class source differs
        try:
            with torch.serialization.safe_globals(safe):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "Unsupported operand" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=False,
                              pickle_module=_restricted_pickle_module(allowed))


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """The unpickler's own complaint, without the advice torch wraps around weights_only failures."""
    text = str(error).split("Check the documentation of torch.load")[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"UnpicklingError: {lines[-1] if lines else 'malformed pickle'}"


def read_torch_file(path) -> tuple[dict, str, list[str]]:
    """(name -> tensor, the layout found, notes) of a torch file, read without running pickled code.

    Layouts: a state_dict; a pickled model (pytorch-vdsr's `{"epoch", "model": Net}`); `{"model": …}`;
    `{"state_dict": …}` (PyTorch Lightning); BasicSR's `{"params": …}` / `{"params_ema": …}` (params_ema
    preferred, as BasicSR tests with its EMA network, and a note says so); a TorchScript archive.
    ConversionError for an unsafe or unreadable file, or one that holds none of these.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is not a file" if path.exists() else f"{path} does not exist")
    try:
        obj = _untrusted_load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ConversionError(f"refusing to load {path}: it references {found.group(1)}, "
                                  "which is not part of a VDSR checkpoint") from None
        raise ConversionError(f"{path} is not a readable torch checkpoint ({_unpickling_reason(e)})") from None
    except ConversionError:  # torch is not installed, or a big-endian archive
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many types for files that are not its own
        raise ConversionError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    try:
        return _state_dict_in(obj, path)
    except ConversionError as e:
        raise ConversionError(f"{path} {e}") from None


def _is_tensor(value) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "detach")


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(_is_tensor(v) for v in value.values())


def _is_model(value) -> bool:
    return callable(getattr(value, "state_dict", None))


def _listed(names, limit: int = 4) -> str:
    """'a, b, c, d, … (12 in all)'."""
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _state_dict_in(obj, path: Path) -> tuple[dict, str, list[str]]:
    """(state_dict, layout, notes) of what a torch file holds; ConversionError naming the layout otherwise."""
    if isinstance(obj, ScriptObject):
        return (_script_tensors(obj), f"a TorchScript archive of {type(obj).__module__}.{type(obj).__name__}", [])
    if _is_model(obj):
        return dict(obj.state_dict()), f"a pickled {type(obj).__name__} model", []
    if _is_state_dict(obj):
        return dict(obj), "a state_dict", []
    if not isinstance(obj, dict):
        raise ConversionError(f"holds a {type(obj).__name__}, not a state_dict or a model")
    notes = []
    if "params_ema" in obj or "params" in obj:  # BasicSR: net_g's weights, and those of its EMA copy
        key = "params_ema" if "params_ema" in obj else "params"
        layout = f"a BasicSR file ({key})"
        if key == "params_ema" and "params" in obj:
            notes.append(f"{path} holds params and params_ema; converted params_ema, the EMA weights BasicSR tests with")
    elif "state_dict" in obj:
        key = "state_dict"
        layout = ("a PyTorch Lightning checkpoint" if "pytorch-lightning_version" in obj
                  else "a {'state_dict': …} checkpoint")
    elif "model" in obj:
        key, layout = "model", "a {'model': …} checkpoint"
    else:
        raise ConversionError(f"holds a dict without a state_dict, model, params or params_ema entry "
                              f"(keys: {_listed(obj)})")
    inner = obj[key]
    if _is_model(inner):
        return dict(inner.state_dict()), f"{layout} holding a pickled {type(inner).__name__}", notes
    if not _is_state_dict(inner):
        raise ConversionError(f"({layout}): its {key} entry is a {type(inner).__name__}, not a state_dict")
    return dict(inner), layout, notes


def _script_tensors(obj: ScriptObject, prefix: str = "") -> dict:
    """{'input.weight': tensor, …}: the tensors among a TorchScript module's attributes and its submodules'."""
    found = {}
    for name, value in vars(obj).items():
        if _is_tensor(value):
            found[prefix + name] = value
        elif isinstance(value, ScriptObject):
            found.update(_script_tensors(value, f"{prefix}{name}."))
    return found


def _float32(name: str, value) -> tuple[np.ndarray, float | None]:
    """`checkpoint.float32_weights` of a torch tensor or numpy array."""
    if _is_tensor(value):
        import torch

        tensor = value.detach().cpu()
        if not tensor.dtype.is_floating_point:
            raise ConversionError(f"layer {name} holds {tensor.dtype} values; VDSR weights are floating point")
        # float32 holds every narrower float type exactly; float64 is checked for rounding in numpy
        value = tensor.numpy() if tensor.dtype == torch.float64 else tensor.to(torch.float32).numpy()
    return float32_weights(name, value)


def _torch_layer_names(depth: int) -> list[str]:
    """pytorch-vdsr's names for conv 0..depth-1: input, residual_layer.<i>.conv, output."""
    return ["input"] + [f"residual_layer.{i}.conv" for i in range(depth - 2)] + ["output"]


def _strip_prefix(state: dict) -> dict:
    """`state` without the leading names all its keys share (`module.` of DataParallel, `model.`/`net.` of a
    Lightning module), so that pytorch-vdsr's own names remain."""
    while len(heads := {name.split(".", 1)[0] for name in state}) == 1 and all("." in name for name in state):
        if heads & {"input", "residual_layer", "output"}:
            break
        state = {name.split(".", 1)[1]: value for name, value in state.items()}
    return state


def _only_vdsr(state: dict) -> tuple[dict, list[str]]:
    """`state`, or where it holds a VDSR beside other modules (a Lightning module's `model.*` beside its
    `loss.*`), that VDSR's entries and a note naming what was left out. ConversionError for several VDSRs."""
    if any(name.split(".", 1)[0] in ("input", "residual_layer", "output") for name in state):
        return state, []
    groups = {}
    for name, value in state.items():
        head, _, rest = name.partition(".")
        groups.setdefault(head, {})[rest] = value
    vdsrs = {head: inner for head, group in groups.items() if "input.weight" in (inner := _strip_prefix(group))}
    if len(vdsrs) > 1:
        raise ConversionError(f"holds several VDSRs ({', '.join(head + '.*' for head in vdsrs)}); "
                              "save the one to convert as a state_dict of its own")
    if not vdsrs:
        return state, []
    (head, inner), = vdsrs.items()
    others = [f"{other}.*" for other in groups if other != head]
    return inner, [f"converted the VDSR under {head}.*, leaving out {_listed(others)}"]


def torch_to_flax(state: dict) -> tuple[dict, VDSR, list[str]]:
    """Flax params, the matching model, and notes, from a pytorch-vdsr state_dict (name -> torch tensor or
    numpy array; OIHW -> HWIO). Names may carry one common prefix (`_strip_prefix`), and the VDSR may sit
    beside other modules under its own prefix (`_only_vdsr`, said in a note). Any floating-point dtype
    becomes float32; a note says where float64 weights round. ConversionError naming the layers that are
    missing, unexpected, of the wrong shape, not floating point or not finite."""
    found = list(state)
    state, notes = _only_vdsr(_strip_prefix(state))
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"residual_layer\.(\d+)\.", k))}
    if blocks and blocks != set(range(max(blocks) + 1)):
        raise ConversionError(f"layer residual_layer.{min(set(range(max(blocks))) - blocks)}.conv is missing")
    names = _torch_layer_names(len(blocks) + 2)
    missing = [f"{name}.weight" for name in names if f"{name}.weight" not in state]
    if missing:
        if not blocks:
            missing = ["residual_layer.<i>.conv.weight" if name == "output.weight" else name for name in missing]
            missing += ["output.weight"] if "output.weight" not in state else []
        raise ConversionError(f"not a VDSR: layer{'s' * (len(missing) > 1)} {', '.join(missing)} missing "
                              f"(it holds {_listed(found)})")
    use_bias = f"{names[0]}.bias" in state
    known = {f"{n}.{p}" for n in names for p in (("weight", "bias") if use_bias else ("weight",))}
    unknown = sorted(set(state) - known)
    if unknown:
        raise ConversionError(f"unexpected layer {unknown[0]} in a VDSR state_dict")
    try:
        arrays, changes = {}, {}
        for name in sorted(known):
            arrays[name], change = _float32(name, state[name])
            if change is not None:
                changes[name] = change
        first = arrays[f"{names[0]}.weight"]
        if first.ndim != 4:
            raise CheckpointError(f"layer {names[0]}.weight has shape {first.shape}, expected 4 dimensions")
        model = create_model({"depth": len(names), "features": int(first.shape[0]), "use_bias": use_bias})
        params = {}
        for i, name in enumerate(names):
            layer = {"kernel": np.transpose(arrays[f"{name}.weight"], (2, 3, 1, 0))}
            if use_bias:
                layer["bias"] = arrays[f"{name}.bias"]
            params[f"conv_{i}"] = layer
        validate_params(params, model)
    except CheckpointError as e:
        raise ConversionError(_rename_layer(str(e), names)) from None
    if changes:
        worst = max(changes, key=changes.get)
        notes.append(f"float64 weights rounded to float32 in {len(changes)} of {len(arrays)} tensors (largest "
                     f"change {changes[worst]:.1e} of a tensor's largest weight, in {worst})")
    return params, model, notes


def _rename_layer(message: str, names: list[str]) -> str:
    """Say 'residual_layer.3.conv' rather than 'conv_4' in messages about torch files."""
    return re.sub(r"conv_(\d+)/kernel", lambda m: f"{names[int(m.group(1))]}.weight (as HWIO)", message)


def load_torch(path) -> tuple[dict, VDSR, list[str]]:
    """(params, model, notes) of the VDSR in a torch file of any layout `read_torch_file` knows; the
    ConversionError for a file that holds something else names the layout found and the layers missing."""
    state, layout, notes = read_torch_file(path)
    try:
        params, model, more = torch_to_flax(state)
    except ConversionError as e:
        raise ConversionError(f"{path} ({layout}): {e}") from None
    return params, model, notes + more


def flax_to_torch(params: dict) -> dict:
    """pytorch-vdsr state_dict (name -> OIHW array) from Flax params."""
    depth = len(params)
    state = {}
    for i, name in enumerate(_torch_layer_names(depth)):
        layer = params[f"conv_{i}"]
        state[f"{name}.weight"] = np.ascontiguousarray(np.transpose(np.asarray(layer["kernel"]), (3, 2, 0, 1)))
        if "bias" in layer:
            state[f"{name}.bias"] = np.asarray(layer["bias"])
    return state


def save_torch(params: dict, path, overwrite: bool = False) -> Path:
    """Write Flax `params` as a pytorch-vdsr state_dict file (float32) that `torch.load(weights_only=True)` and
    `torch_reference.Net.load_state_dict` read, atomically; ConversionError without torch, OutputExists where
    `path` exists unless `overwrite` (see `media.images.atomic_output`)."""
    torch = require_torch()

    state = collections.OrderedDict((k, torch.tensor(v)) for k, v in flax_to_torch(params).items())  # copies
    with atomic_output(path, overwrite) as tmp:
        torch.save(state, tmp)
    return Path(path)
