"""Weight conversion between pytorch-vdsr (torch_reference) and vdsr_jax: exact round trips, the CLI, and
refusal of unsafe or malformed torch files."""
import collections
import os
import pickle
import re
import shlex
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import needs_torch  # noqa: E402 - before any torch import

torch = needs_torch()
import torch_reference
from conftest import PRETRAINED, assert_one_error_line, require, run_cli
from vdsr_jax import convert, torch_weights, weight_forms
from vdsr_jax.checkpoint import load_model, save_model
from vdsr_jax.model import VDSR, model_spec

def torch_state(seed: int = 0) -> collections.OrderedDict:
    torch.manual_seed(seed)
    return torch_reference.Net().state_dict()


def assert_trees_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype == np.float32
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_states_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = (np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v) for v in (a[name], b[name]))
        assert x.dtype == y.dtype == np.float32 and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


MODELS = {"pytorch-vdsr": VDSR(), "small with bias": VDSR(depth=4, features=5, use_bias=True)}


@pytest.fixture(scope="module", params=list(MODELS))
def flax_model(request):
    """A model and random float32 parameters of its shapes (biases included)."""
    model, rng = MODELS[request.param], np.random.default_rng(3)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4, 4, 1)))["params"]
    return model, jax.tree.map(lambda a: rng.standard_normal(a.shape, dtype=np.float32), shapes)


# ---------------------------------------------------------------- round trips


def test_flax_torch_flax_is_exact(flax_model):
    model, params = flax_model
    state = torch_weights.flax_to_torch(params)
    names = ["input"] + [f"residual_layer.{i}.conv" for i in range(model.depth - 2)] + ["output"]
    kinds = ("weight", "bias") if model.use_bias else ("weight",)
    assert set(state) == {f"{n}.{k}" for n in names for k in kinds}
    assert state["input.weight"].shape == (model.features, 1, 3, 3)  # OIHW
    assert state["output.weight"].shape == (1, model.features, 3, 3)
    back, back_model, notes = torch_weights.torch_to_flax(state)
    assert notes == []
    assert model_spec(back_model) == model_spec(model)
    assert_trees_identical(back, params)


def test_torch_flax_torch_is_exact():
    state = {k: v.numpy() for k, v in torch_state(1).items()}
    params, model, _ = torch_weights.torch_to_flax(state)
    assert model_spec(model) == {"depth": 20, "features": 64, "use_bias": False}
    assert_states_identical(torch_weights.flax_to_torch(params), state)


def test_round_trip_through_files_is_exact(flax_model, tmp_path):
    model, params = flax_model
    save_model(tmp_path / "ckpt", params, model)
    written, _ = weight_forms.convert(tmp_path / "ckpt", tmp_path / "weights.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "weights.pth"]  # no partial file left
    assert_states_identical(torch.load(written, weights_only=True), torch_weights.flax_to_torch(params))

    weight_forms.convert(written, tmp_path / "again")
    again_model, again = load_model(tmp_path / "again")
    assert model_spec(again_model) == model_spec(model)
    assert_trees_identical(again, params)

    if model_spec(model) == model_spec(VDSR()):  # what convert writes loads into pytorch-vdsr itself
        net = torch_reference.Net()
        net.load_state_dict(torch.load(written, weights_only=True))  # strict: same names and shapes
        assert_states_identical(net.state_dict(), torch_weights.flax_to_torch(params))


# ---------------------------------------------------------------- the CLI on the published weights


@pytest.mark.slow
def test_cli_converts_published_weights_both_ways(tmp_path, monkeypatch):
    require(PRETRAINED)
    # independent expectation: the trusted file unpickled the ordinary (unsafe) way
    monkeypatch.setitem(sys.modules, "vdsr", torch_reference.model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.load(PRETRAINED, map_location="cpu", weights_only=False)["model"].state_dict()

    status, _, stderr = run_cli("convert", "--from-torch", PRETRAINED, "--out", tmp_path / "ckpt")
    assert status == 0, stderr
    model, params = load_model(tmp_path / "ckpt")
    assert model_spec(model) == {"depth": 20, "features": 64, "use_bias": False}
    assert_states_identical(torch_weights.flax_to_torch(params), expected)

    status, _, stderr = run_cli("convert", "--to-torch", tmp_path / "ckpt", "--out", tmp_path / "back.pth")
    assert status == 0, stderr
    net = torch_reference.Net()
    net.load_state_dict(torch.load(tmp_path / "back.pth", weights_only=True))
    assert_states_identical(net.state_dict(), expected)


# ---------------------------------------------------------------- malicious pickles


class RunsCommand:
    """Unpickling this runs `command`."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def binstring(data: bytes) -> bytes:
    """Python 2's BINSTRING opcode, which torch's weights_only unpickler does not know."""
    return b"T" + struct.pack("<i", len(data)) + data


def write_python2_legacy(path: Path, command: str):
    """torch's legacy format (magic number, protocol version, sys info, object, storage keys) whose object
    pickle is hand-written: a BINSTRING first (so torch's weights_only load fails with 'Unsupported
    operand' and convert falls back to its own restricted unpickler), then GLOBAL posix.system applied to
    the command."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    system = os.system.__module__.encode()  # 'posix' (or 'nt')
    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION}):
            pickle.dump(header, f, protocol=2)
        f.write(b"\x80\x02" + binstring(b"epoch") + b"0"  # PROTO 2, BINSTRING, POP
                + b"c" + system + b"\nsystem\n"  # GLOBAL posix.system
                + binstring(command.encode()) + b"\x85R.")  # BINSTRING, TUPLE1, REDUCE, STOP
        pickle.dump([], f, protocol=2)


MALICIOUS = {
    "zip": lambda path, cmd: torch.save({"model": RunsCommand(cmd)}, path),
    "legacy": lambda path, cmd: torch.save({"model": RunsCommand(cmd)}, path,
                                           _use_new_zipfile_serialization=False),
    "python2 legacy": write_python2_legacy,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(MALICIOUS))
def test_cli_refuses_pickles_that_run_code(kind, tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    MALICIOUS[kind](path, f"touch {shlex.quote(str(marker))}")

    status, _, stderr = run_cli("convert", "--from-torch", path, "--out", tmp_path / "ckpt")
    assert_one_error_line(status, stderr, "refusing", str(path), "system")
    assert not marker.exists()
    assert not (tmp_path / "ckpt").exists()

    # the payload is live: an ordinary unpickling does run it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.load(path, weights_only=False)
    assert marker.exists()


# ---------------------------------------------------------------- malformed input: one clear line


def run_main(capsys, *args):
    """convert.main in this process (a fresh interpreter per case would cost seconds each)."""
    code = convert.main([str(a) for a in args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert_one_error_line(code, lines, "error: ")
    return code, lines[0]


def wrong_shape(state):
    state["residual_layer.3.conv.weight"] = torch.zeros(64, 64, 5, 5)


BROKEN = {
    "residual_layer.3.conv": wrong_shape,
    "residual_layer.5.conv": lambda state: state.pop("residual_layer.5.conv.weight"),
    "output": lambda state: state.pop("output.weight"),
}


@pytest.mark.parametrize("layer", list(BROKEN))
def test_state_dict_that_is_not_a_vdsr_names_the_layer(layer, tmp_path, capsys):
    state = torch_state()
    BROKEN[layer](state)
    torch.save(state, tmp_path / "bad.pth")
    code, line = run_main(capsys, "--from-torch", tmp_path / "bad.pth", "--out", tmp_path / "ckpt")
    assert code != 0 and re.search(rf"\b{re.escape(layer)}\b", line)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"\x80\x02\xff\xfe", b""])
def test_non_torch_file(content, tmp_path, capsys):
    (tmp_path / "x.pth").write_bytes(content)
    code, line = run_main(capsys, "--from-torch", tmp_path / "x.pth", "--out", tmp_path / "ckpt")
    assert code != 0 and "not a readable torch checkpoint" in line and "x.pth" in line
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_cli_missing_torch_file(tmp_path):
    status, _, stderr = run_cli("convert", "--from-torch", tmp_path / "absent.pth", "--out",
                                tmp_path / "ckpt")
    assert_one_error_line(status, stderr, "absent.pth")
    assert not (tmp_path / "ckpt").exists()


def test_to_torch_of_missing_checkpoint(tmp_path, capsys):
    code, line = run_main(capsys, "--to-torch", tmp_path / "absent", "--out", tmp_path / "w.pth")
    assert code != 0 and "absent" in line and "does not exist" in line
    assert list(tmp_path.iterdir()) == []


def test_to_torch_into_missing_directory(tmp_path, capsys):
    model, ones = VDSR(depth=2, features=1), np.ones((3, 3, 1, 1), np.float32)
    params = {f"conv_{i}": {"kernel": ones} for i in range(2)}
    save_model(tmp_path / "ckpt", params, model)
    code, line = run_main(capsys, "--to-torch", tmp_path / "ckpt", "--out", tmp_path / "no" / "w.pth")
    assert code != 0 and "does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# ---------------------------------------------------------------- layouts of the common training frameworks


def optimizer_state(net, kind=torch.optim.SGD, **kw) -> dict:
    """An optimiser's state_dict after one step: tensors (momentum buffers, Adam moments) beside numbers."""
    optimizer = kind(net.parameters(), lr=0.1, **kw)
    net(torch.zeros(1, 1, 4, 4)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def lightning(state, prefix="model."):
    """What PyTorch Lightning's Trainer.save_checkpoint writes: the LightningModule's state_dict, whose names
    start with the attribute holding the network, beside the loop and optimiser state."""
    net = torch_reference.Net()
    return {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
            "state_dict": collections.OrderedDict((prefix + k, v) for k, v in state.items()),
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4, "completed": 3}}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": "", "best_model_score": None}},
            "optimizer_states": [optimizer_state(net, torch.optim.Adam)], "lr_schedulers": [],
            "hparams_name": "kwargs", "hyper_parameters": {"lr": 0.1, "depth": 20}}


def torchscript(path, state=None, net=None):
    """torch.jit.save(torch.jit.script(net)): pytorch-vdsr's Net holding `state`, or `net`."""
    if net is None:
        net = torch_reference.Net()
        net.load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch ≥ 2.10 points to torch.export instead
        torch.jit.save(torch.jit.script(net), path)


def whole_model(state):
    net = torch_reference.Net()
    net.load_state_dict(state)
    return net


# layout -> (write the file holding `state`, `other` (another VDSR's weights), the fragment of its note)
LAYOUTS = {
    "state_dict": (lambda path, state, other: torch.save(state, path), None),
    "DataParallel state_dict": (lambda path, state, other: torch.save(
        collections.OrderedDict(("module." + k, v) for k, v in state.items()), path), None),
    "pytorch-vdsr {epoch, model: Net}": (lambda path, state, other: torch.save(
        {"epoch": 50, "model": whole_model(state)}, path), None),
    "{model, optimizer}": (lambda path, state, other: torch.save(
        {"model": state, "optimizer": optimizer_state(whole_model(other), momentum=0.9), "epoch": 7}, path), None),
    "BasicSR params": (lambda path, state, other: torch.save({"params": state}, path), None),
    "BasicSR params and params_ema": (lambda path, state, other: torch.save(
        {"params": other, "params_ema": state}, path), "converted params_ema"),
    "PyTorch Lightning": (lambda path, state, other: torch.save(lightning(state), path), None),
    "Lightning net. in DataParallel": (lambda path, state, other: torch.save(lightning(state, "net.module."), path),
                                       None),
    "Lightning model.* beside loss.*": (lambda path, state, other: torch.save(
        {**lightning(state), "state_dict": {**lightning(state)["state_dict"],
                                            "loss.vgg.0.weight": torch.ones(8, 3, 3, 3)}}, path),
        "converted the VDSR under model.*, leaving out loss.*"),
    "TorchScript": (lambda path, state, other: torchscript(path, state), None),
    "safetensors from torch": (lambda path, state, other: safetensors_torch().save_file(dict(state), path), None),
}


def safetensors_torch():
    import safetensors.torch

    return safetensors.torch


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layouts_of_training_frameworks_convert_exactly(layout, tmp_path, capsys):
    """Each layout holding a VDSR converts; the kernels are the torch tensors themselves, permuted OIHW -> HWIO
    by torch, bit for bit; BasicSR's EMA weights are taken when both are there, and a note says so."""
    write, note = LAYOUTS[layout]
    state, other = torch_state(5), torch_state(6)
    path = tmp_path / ("weights.safetensors" if "safetensors" in layout else "weights.pth")
    write(path, state, other)

    code = convert.main([str(path), "--out", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert (note or "note:") in err if note else err == ""
    model, params = load_model(tmp_path / "ckpt")
    assert model_spec(model) == model_spec(VDSR())
    names = ["input"] + [f"residual_layer.{i}.conv" for i in range(18)] + ["output"]
    for i, name in enumerate(names):
        expected = state[f"{name}.weight"].permute(2, 3, 1, 0).contiguous().numpy()
        np.testing.assert_array_equal(np.asarray(params[f"conv_{i}"]["kernel"]), expected, err_msg=name)


def resnet_state() -> collections.OrderedDict:
    """The start of a ResNet: conv, batch norm (with its int64 counter), another conv."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(collections.OrderedDict(
        conv1=torch.nn.Conv2d(3, 8, 7), bn1=torch.nn.BatchNorm2d(8), layer1=torch.nn.Conv2d(8, 8, 3)))
    return net.state_dict()


def scripted_other(path):
    torchscript(path, net=torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU()))


OTHER_LAYOUTS = {
    "a state_dict": (lambda path: torch.save(resnet_state(), path), "conv1.weight"),
    "a BasicSR file (params_ema)": (lambda path: torch.save({"params": resnet_state(), "params_ema": resnet_state()},
                                                            path), "conv1.weight"),
    "a PyTorch Lightning checkpoint": (lambda path: torch.save(lightning(resnet_state(), "backbone."), path),
                                       "conv1.weight"),
    "a TorchScript archive of __torch__.torch.nn.modules.container.Sequential": (scripted_other, "0.weight"),
    "a BasicSR file (params)": (lambda path: torch.save({"params": [1, 2]}, path), "its params entry is a list"),
    "a PyTorch Lightning checkpoint): holds several VDSRs": (lambda path: torch.save(
        {**lightning(torch_state()), "state_dict": {**lightning(torch_state())["state_dict"],
                                                    **lightning(torch_state(), "model_ema.")["state_dict"]}}, path),
        "model.*, model_ema.*"),
    "a dict without a state_dict, model, params or params_ema entry": (
        lambda path: torch.save({"weights": resnet_state(), "step": 3}, path), "keys: weights, step"),
}


@pytest.mark.parametrize("layout", list(OTHER_LAYOUTS))
def test_layouts_holding_something_else_name_the_layout_and_the_missing_layers(layout, tmp_path, capsys):
    write, found = OTHER_LAYOUTS[layout]
    write(tmp_path / "other.pth")
    code, line = run_main(capsys, tmp_path / "other.pth", "--out", tmp_path / "ckpt")
    assert str(tmp_path / "other.pth") in line and layout in line and found in line, line
    if "entry" not in layout and "list" not in found and "several" not in layout:
        assert "not a VDSR: layers input.weight, residual_layer.<i>.conv.weight, output.weight missing" in line
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_torchscript_archive_is_read_without_running_its_code(tmp_path):
    """A TorchScript archive whose data.pkl calls os.system is refused, and nothing runs: its pickle goes
    through the restricted unpickler, its code is never compiled (torch.jit.load is not used)."""
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    torchscript(tmp_path / "good.pt", torch_state())
    payload = pickle.dumps(RunsCommand(f"touch {shlex.quote(str(marker))}"), protocol=2)
    with zipfile.ZipFile(tmp_path / "good.pt") as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, payload if item.filename.endswith("/data.pkl") else src.read(item))

    status, _, stderr = run_cli("convert", path, "--out", tmp_path / "ckpt")
    assert_one_error_line(status, stderr, "refusing", str(path), "system")
    assert not marker.exists() and not (tmp_path / "ckpt").exists()
    pickle.loads(payload)  # the payload is live
    assert marker.exists()


@pytest.mark.parametrize("direction", ["--from-torch", "--to-torch"])
def test_an_output_written_meanwhile_by_another_process_is_kept_and_refused_in_one_line(
        direction, tmp_path, capsys, monkeypatch):
    """Both conversions found the output free; the other process's output appears while this one converts."""
    model, ones = VDSR(depth=2, features=1), np.ones((3, 3, 1, 1), np.float32)
    save_model(tmp_path / "ckpt", {f"conv_{i}": {"kernel": ones} for i in range(2)}, model)
    if direction == "--from-torch":
        source, out = tmp_path / "w.pth", tmp_path / "out"
        convert.main(["--to-torch", str(tmp_path / "ckpt"), "--out", str(source)])
    else:
        source, out = tmp_path / "ckpt", tmp_path / "out.pth"
    real = weight_forms.load_weights

    def the_other_finishes_first(*args, **kwargs):
        if direction == "--from-torch":
            save_model(out, {f"conv_{i}": {"kernel": 2 * ones} for i in range(2)}, model)
        else:
            out.write_bytes(b"another process's weights")
        return real(*args, **kwargs)

    monkeypatch.setattr(weight_forms, "load_weights", the_other_finishes_first)
    capsys.readouterr()
    code, line = run_main(capsys, direction, source, "--out", out)
    assert "already exists" in line and str(out) in line
    if direction == "--from-torch":
        np.testing.assert_array_equal(load_model(out)[1]["conv_0"]["kernel"], 2 * ones)
    else:
        assert out.read_bytes() == b"another process's weights"
    assert not list(tmp_path.glob(".*"))  # no temporary file or staging folder left
