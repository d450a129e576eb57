"""VDSR weights in PyTorch files: read without running pickled code, converted to and from Flax parameters.

Torch files are read with torch's `weights_only` unpickler and an explicit allow-list of the classes a
VDSR checkpoint holds. pytorch-vdsr's published file is a Python 2 legacy pickle whose string opcodes that
unpickler cannot parse; for those alone a restricted unpickler with the same allow-list takes over.
"""
import collections
import pickle
import re
import types
import warnings
from pathlib import Path

import numpy as np

from vdsr_jax.checkpoint import load_model, save_model, validate_params
from vdsr_jax.errors import CheckpointError, ConversionError
from vdsr_jax.media import atomic_output, check_writable, refuse_existing
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


def _restricted_pickle_module(allowed: dict) -> types.ModuleType:
    """A `pickle`-like module for torch.load whose unpickler resolves only allow-listed globals."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name}")
            return allowed[(module, name)]

    module = types.ModuleType("vdsr_restricted_pickle")
    module.Unpickler = Unpickler
    module.load = lambda f, **kw: Unpickler(f, **kw).load()
    return module


def _torch():
    """The torch module; ConversionError where it is not installed (it is an optional dependency)."""
    try:
        import torch
    except ModuleNotFoundError as e:
        if e.name != "torch":
            raise
        raise ConversionError("converting PyTorch files needs PyTorch, which is not installed: "
                              "pip install \"vdsr_jax[torch]\" (in a clone: pip install -e \".[torch]\")") from None
    return torch


def _untrusted_load(path: Path):
    torch = _torch()

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


def load_torch_state_dict(path) -> tuple[dict, list[str]]:
    """(name -> float32 array, notes) from a state_dict file or a pytorch-vdsr whole-model pickle.

    Every floating-point dtype torch saves is converted to float32: exactly for float16, bfloat16 and the
    float8 types, and for float64 where every value is representable; otherwise `notes` holds one line
    saying in how many tensors and how far the rounding moved the weights. ConversionError for an unsafe,
    unreadable or non-float file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is a folder, not a torch file; --from-torch takes a .pth file "
                              "(a vdsr_jax checkpoint folder converts with --to-torch)" if path.is_dir()
                              else f"{path} is not a file" if path.exists() else f"{path} does not exist")
    try:
        obj = _untrusted_load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ConversionError(f"refusing to load {path}: it references {found.group(1)}, "
                                  "which is not part of a VDSR checkpoint") from None
        raise ConversionError(f"{path} is not a readable torch checkpoint ({_unpickling_reason(e)})") from None
    except ConversionError:  # torch is not installed
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many types for files that are not its own
        raise ConversionError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path} holds no state_dict or VDSR model")
    state, changes = {}, {}
    for name, tensor in obj.items():
        if not hasattr(tensor, "dtype") or not hasattr(tensor, "detach"):
            raise ConversionError(f"{path}: {name} is a {type(tensor).__name__}, not a tensor")
        if not tensor.dtype.is_floating_point:
            raise ConversionError(f"{path}: {name} holds {tensor.dtype} values; VDSR weights are floating point")
        state[str(name)], change = _to_float32(tensor.detach().cpu())
        if change is not None:
            changes[str(name)] = change
    notes = []
    if changes:
        worst = max(changes, key=changes.get)
        notes.append(f"float64 weights rounded to float32 in {len(changes)} of {len(state)} tensors (largest "
                     f"change {changes[worst]:.1e} of a tensor's largest weight, in {worst})")
    return state, notes


def _to_float32(tensor) -> tuple[np.ndarray, float | None]:
    """float32 values of a float tensor, and the largest change relative to its largest magnitude when
    that rounding is not exact (None when it is)."""
    import torch

    single = tensor.to(torch.float32)
    if tensor.dtype == torch.float64 and not torch.equal(single.to(torch.float64), tensor):
        return single.numpy(), ((single.to(torch.float64) - tensor).abs().max()
                                / tensor.abs().max().clamp_min(1e-300)).item()
    return single.numpy(), None


def _torch_layer_names(depth: int) -> list[str]:
    """pytorch-vdsr's names for conv 0..depth-1: input, residual_layer.<i>.conv, output."""
    return ["input"] + [f"residual_layer.{i}.conv" for i in range(depth - 2)] + ["output"]


def torch_to_flax(state: dict) -> tuple[dict, VDSR]:
    """Flax params and the matching model from a pytorch-vdsr state_dict (OIHW -> HWIO)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"residual_layer\.(\d+)\.", k))}
    depth = len(blocks) + 2
    if blocks != set(range(depth - 2)):
        missing = min(set(range(max(blocks) + 1)) - blocks)
        raise ConversionError(f"layer residual_layer.{missing}.conv is missing")
    names = _torch_layer_names(depth)
    for name in names:
        if f"{name}.weight" not in state:
            raise ConversionError(f"layer {name}.weight is missing")
    use_bias = f"{names[0]}.bias" in state
    known = {f"{n}.{p}" for n in names for p in (("weight", "bias") if use_bias else ("weight",))}
    unknown = sorted(set(state) - known)
    if unknown:
        raise ConversionError(f"unexpected layer {unknown[0]} in a VDSR state_dict")
    first = state[f"{names[0]}.weight"]
    if first.ndim != 4:
        raise ConversionError(f"layer {names[0]}.weight has shape {first.shape}, expected 4 dimensions")
    model = create_model({"depth": depth, "features": int(first.shape[0]), "use_bias": use_bias})
    params = {}
    for i, name in enumerate(names):
        layer = {"kernel": np.transpose(state[f"{name}.weight"], (2, 3, 1, 0))}
        if use_bias:
            layer["bias"] = state[f"{name}.bias"]
        params[f"conv_{i}"] = layer
    try:
        validate_params(params, model)
    except CheckpointError as e:
        raise ConversionError(_rename_layer(str(e), names)) from None
    return params, model


def _rename_layer(message: str, names: list[str]) -> str:
    """Say 'residual_layer.3.conv' rather than 'conv_4' in messages about torch files."""
    return re.sub(r"conv_(\d+)/kernel", lambda m: f"{names[int(m.group(1))]}.weight (as HWIO)", message)


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


def from_torch(torch_path, out_dir, overwrite: bool = False) -> tuple[Path, list[str]]:
    """Convert a torch file (see `load_torch_state_dict`) to a vdsr_jax checkpoint folder `out_dir`;
    returns (the folder, notes on inexact dtype conversions). See `checkpoint.save_model` for `overwrite`; the
    output location is checked before the torch file is read."""
    _torch()  # first: without torch nothing else matters
    check_writable(out_dir, folder=True)
    refuse_existing(Path(out_dir).expanduser(), overwrite)
    state, notes = load_torch_state_dict(torch_path)
    params, model = torch_to_flax(state)
    return save_model(out_dir, params, model, overwrite=overwrite), notes


def to_torch(checkpoint_dir, out_path, overwrite: bool = False) -> Path:
    """Write the parameters of a vdsr_jax checkpoint as a pytorch-vdsr state_dict file (float32), atomically.
    OutputExists if `out_path` exists and not `overwrite`; ConversionError without torch."""
    torch = _torch()

    out_path = Path(out_path)
    check_writable(out_path)  # torch.save would fail with a bare RuntimeError
    refuse_existing(out_path, overwrite)
    _, params = load_model(checkpoint_dir)
    state = collections.OrderedDict((k, torch.tensor(v)) for k, v in flax_to_torch(params).items())  # copies
    with atomic_output(out_path, overwrite) as tmp:
        torch.save(state, tmp)
    return out_path
