"""Convert VDSR weights between pytorch-vdsr (torch) and vdsr_jax (orbax) without running pickled code.

    python -m vdsr_jax.convert --from-torch model_epoch_50.pth --out ckpt/
    python -m vdsr_jax.convert --to-torch ckpt/ --out vdsr_state_dict.pth

Torch files are read with torch's `weights_only` unpickler and an explicit allow-list of the classes a
VDSR checkpoint holds. pytorch-vdsr's published file is a Python 2 legacy pickle whose string opcodes that
unpickler cannot parse; for those alone a restricted unpickler with the same allow-list takes over.
"""
import argparse
import collections
import pickle
import re
import sys
import types
import warnings
from pathlib import Path

import numpy as np

from vdsr_jax.checkpoint import CheckpointError, load_model, save_model, validate_params
from vdsr_jax.model import VDSR


class ConversionError(Exception):
    """A torch file that is unsafe, unreadable or not a VDSR; the message says which."""


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


def _untrusted_load(path: Path):
    import torch

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


def load_torch_state_dict(path) -> dict:
    """name -> float32 array from a state_dict file or a pytorch-vdsr whole-model pickle."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} is not a file")
    try:
        obj = _untrusted_load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ConversionError(f"refusing to load {path}: it references {found.group(1)}, "
                                  "which is not part of a VDSR checkpoint") from None
        raise ConversionError(f"{path} is not a readable torch checkpoint ({_unpickling_reason(e)})") from None
    except Exception as e:
        raise ConversionError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path} holds no state_dict or VDSR model")
    try:
        return {str(k): v.detach().cpu().numpy().astype(np.float32) for k, v in obj.items()}
    except AttributeError:
        raise ConversionError(f"{path}: state_dict values are not tensors") from None


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
    model = VDSR(depth=depth, features=first.shape[0], use_bias=use_bias)
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


def from_torch(torch_path, out_dir) -> Path:
    params, model = torch_to_flax(load_torch_state_dict(torch_path))
    return save_model(out_dir, params, model)


def to_torch(checkpoint_dir, out_path) -> Path:
    import torch

    out_path = Path(out_path)
    if not out_path.parent.is_dir():  # torch.save would fail with a bare RuntimeError
        raise ConversionError(f"cannot write {out_path}: directory {out_path.parent} does not exist")
    _, params = load_model(checkpoint_dir)
    state = collections.OrderedDict((k, torch.tensor(v)) for k, v in flax_to_torch(params).items())  # copies
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        torch.save(state, partial)
        partial.replace(out_path)  # never leave a half-written file under the real name
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdsr_jax.convert", description=__doc__.split("\n")[0])
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-torch", metavar="PATH", help="torch state_dict or pytorch-vdsr pickle")
    direction.add_argument("--to-torch", metavar="DIR", help="vdsr_jax checkpoint directory")
    parser.add_argument("--out", required=True, help="checkpoint directory (from torch) or .pth file (to torch)")
    args = parser.parse_args(argv)
    from absl import logging as absl_logging  # orbax logs routine warnings; keep stderr for errors

    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        if args.from_torch:
            written = from_torch(args.from_torch, args.out)
        else:
            written = to_torch(args.to_torch, args.out)
    except (ConversionError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
