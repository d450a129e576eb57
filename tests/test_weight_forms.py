"""`vdsr_jax.weight_forms`: one loader for every form of weights (checkpoint folder, training workdir, .npz,
.safetensors in either layout, torch file), one line for anything else, and `vdsr-convert` between the forms
with exact round trips."""
import json
import pickle
import subprocess
import sys
import zipfile

import jax
import numpy as np
import optax
import pytest
from conftest import ROOT, assert_one_error_line, needs_torch, without_modules
from flax.training.train_state import TrainState
from flax.traverse_util import flatten_dict
from safetensors.numpy import save_file

from vdsr_jax import checkpoint, convert, pretrained, weight_forms
from vdsr_jax.errors import CheckpointError, UserError
from vdsr_jax.model import VDSR, model_spec

MODEL = VDSR(depth=3, features=4, use_bias=True)
NAMES = ["input", "residual_layer.0.conv", "output"]  # pytorch-vdsr's names for MODEL's three convs


def random_params(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda shape: rng.standard_normal(shape, dtype=np.float32), checkpoint.expected_shapes(MODEL),
                        is_leaf=lambda x: isinstance(x, tuple))


def torch_layout(params) -> dict:
    """pytorch-vdsr's state_dict of `params`: torch's Conv2d weight is (out, in, height, width), Flax's kernel
    (height, width, in, out)."""
    state = {}
    for i, name in enumerate(NAMES):
        state[f"{name}.weight"] = np.ascontiguousarray(params[f"conv_{i}"]["kernel"].transpose(3, 2, 0, 1))
        state[f"{name}.bias"] = params[f"conv_{i}"]["bias"]
    return state


def assert_params_equal(loaded, expected):
    flat, want = flatten_dict(loaded, sep="/"), flatten_dict(expected, sep="/")
    assert sorted(flat) == sorted(want)
    for name, value in want.items():
        assert np.asarray(flat[name]).dtype == np.float32
        np.testing.assert_array_equal(np.asarray(flat[name]), value, err_msg=name)


def training_workdir(path, steps: dict) -> None:
    """A workdir as vdsr-train leaves it: checkpoints/ with one training step (params, model, optimiser state)
    per {step: params}."""
    with checkpoint.training_manager(path / "checkpoints", keep_last=5) as manager:
        for step, params in steps.items():
            state = TrainState.create(apply_fn=MODEL.apply, params=params, tx=optax.sgd(0.1, momentum=0.9))
            checkpoint.save_training(manager, state.replace(step=step), MODEL, jax.random.key(step))


def test_every_form_loads_the_same_weights(tmp_path):
    params, older = random_params(0), random_params(1)
    forms = {
        "checkpoint folder": checkpoint.save_model(tmp_path / "ckpt", params, MODEL),
        ".npz": pretrained.export_pretrained(params, MODEL, tmp_path / "w.npz"),
        ".safetensors": pretrained.export_pretrained(params, MODEL, tmp_path / "w.safetensors"),
    }
    save_file(torch_layout(params), tmp_path / "torch_layout.safetensors")  # as safetensors.torch writes one
    forms["torch-layout .safetensors"] = tmp_path / "torch_layout.safetensors"
    training_workdir(tmp_path / "run", {5: older, 10: params})  # the latest step is loaded
    forms["training workdir"] = tmp_path / "run"
    for form, path in forms.items():
        model, loaded = weight_forms.load_weights(path)
        assert model_spec(model) == model_spec(MODEL), form
        assert_params_equal(loaded, params)
    model, _ = weight_forms.load_weights(forms[".safetensors"], compute_dtype="bfloat16")
    assert model.dtype == np.dtype("bfloat16")


def test_a_torch_file_loads_as_it_converts(tmp_path):
    torch = needs_torch()
    params = random_params()
    torch.save({"params": {k: torch.from_numpy(v) for k, v in torch_layout(params).items()}}, tmp_path / "w.pth")
    notes = []
    model, loaded = weight_forms.load_weights(tmp_path / "w.pth", notes=notes)
    assert model_spec(model) == model_spec(MODEL) and notes == []
    assert_params_equal(loaded, params)


def test_reading_unpickles_nothing(tmp_path, monkeypatch):
    """.npz and both .safetensors layouts load with pickle's loaders replaced by ones that fail."""
    params = random_params()
    paths = [pretrained.export_pretrained(params, MODEL, tmp_path / "w.npz"),
             pretrained.export_pretrained(params, MODEL, tmp_path / "w.safetensors")]
    save_file(torch_layout(params), tmp_path / "t.safetensors")

    def refuse(*_args, **_kw):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    for path in [*paths, tmp_path / "t.safetensors"]:
        assert_params_equal(weight_forms.load_weights(path)[1], params)


@pytest.mark.slow
def test_torch_layout_safetensors_need_no_torch(tmp_path):
    params = random_params()
    save_file(torch_layout(params), tmp_path / "t.safetensors")
    code = ("import sys; from vdsr_jax.weight_forms import load_weights; "
            "model, params = load_weights(sys.argv[1]); print(model.depth, params['conv_2']['bias'][0])")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.safetensors")], cwd=ROOT,
                          env=without_modules("torch"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", str(params["conv_2"]["bias"][0])]


def other_files(tmp_path) -> dict:
    """{name: (bytes, fragment of the one line it gets)}: files that are not weights, and damaged weights."""
    zip_path = tmp_path / "made.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return {
        "photo.png": (b"\x89PNG\r\n\x1a\n" + bytes(32), "is a PNG image, not VDSR weights"),
        "notes.txt": (b"these are notes\n", "is text, not VDSR weights"),
        "blob.dat": (bytes(range(200, 216)), "is bytes b'\\xc8\\xc9"),
        "empty.dat": (b"", "is bytes b''"),
        "made.zip": (zip_path.read_bytes(), "lacks the __meta__ entry"),
        "cut.safetensors": (b"\x08\x00", "is not a readable safetensors file"),
        "cut.npz": (b"PK\x03\x04" + bytes(10), "is not a readable weights file (.npz)"),
    }


def test_other_files_get_one_line_naming_what_was_found(tmp_path, capsys):
    for name, (content, fragment) in other_files(tmp_path).items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError) as info:
            weight_forms.load_weights(tmp_path / name)
        assert fragment in str(info.value) and str(tmp_path / name) in str(info.value), str(info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="absent does not exist"):
        weight_forms.load_weights(tmp_path / "absent")


# ---------------------------------------------------------------- vdsr-convert between the forms


def run_main(capsys, *args):
    code = convert.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def test_convert_folder_to_safetensors_and_back_is_exact(tmp_path, capsys):
    params = random_params()
    checkpoint.save_model(tmp_path / "ckpt", params, MODEL)
    assert run_main(capsys, tmp_path / "ckpt", "--out", tmp_path / "w.safetensors")[0] == 0
    assert run_main(capsys, tmp_path / "w.safetensors", "--out", tmp_path / "again")[0] == 0
    model, loaded = checkpoint.load_model(tmp_path / "again")
    assert model_spec(model) == model_spec(MODEL)
    assert_params_equal(loaded, params)
    assert pretrained.pretrained_info(tmp_path / "w.safetensors")["provenance"] == {"converted_from": "ckpt"}


def test_convert_npz_to_safetensors_and_back_is_exact(tmp_path, capsys):
    params = random_params()
    pretrained.export_pretrained(params, MODEL, tmp_path / "w.npz")
    assert run_main(capsys, tmp_path / "w.npz", "--out", tmp_path / "w.safetensors")[0] == 0
    assert run_main(capsys, tmp_path / "w.safetensors", "--out", tmp_path / "back.npz")[0] == 0
    with np.load(tmp_path / "w.npz") as first, np.load(tmp_path / "back.npz") as back:
        assert sorted(first.files) == sorted(back.files)
        for name in first.files:
            if name != pretrained.META_KEY:
                assert back[name].dtype == np.float32
                np.testing.assert_array_equal(back[name], first[name], err_msg=name)
        assert json.loads(str(back[pretrained.META_KEY][()]))["model"] == model_spec(MODEL)


def test_convert_torch_layout_safetensors_to_npz(tmp_path, capsys):
    params = random_params()
    save_file(torch_layout(params), tmp_path / "t.safetensors")
    assert run_main(capsys, tmp_path / "t.safetensors", "--out", tmp_path / "w.npz")[0] == 0
    assert_params_equal(pretrained.load_pretrained(tmp_path / "w.npz")[1], params)


def tampered(tmp_path) -> dict:
    """{name: fragment of its error}: damaged .safetensors files in both layouts."""
    params = random_params()
    good = pretrained.export_pretrained(params, MODEL, tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(good[:-7])
    (tmp_path / "header.safetensors").write_bytes(good[:8] + b"[" + good[9:])
    state = torch_layout(params)
    save_file({k: v for k, v in state.items() if k != "output.weight"}, tmp_path / "no_output.safetensors")
    save_file({**state, "input.bias": np.full(4, np.nan, np.float32)}, tmp_path / "nan.safetensors")
    save_file({**state, "input.weight": state["input.weight"].astype(np.int32)}, tmp_path / "int.safetensors")
    return {"truncated.safetensors": "is not a readable safetensors file",
            "header.safetensors": "is not a readable safetensors file",
            "no_output.safetensors": "output.weight missing",
            "nan.safetensors": "layer input.bias holds non-finite values",
            "int.safetensors": "layer input.weight holds int32 values"}


def test_convert_refuses_tampered_safetensors_in_one_line(tmp_path, capsys):
    for name, fragment in tampered(tmp_path).items():
        code, out, err = run_main(capsys, tmp_path / name, "--out", tmp_path / "out.npz")
        assert_one_error_line(code, err, str(tmp_path / name), fragment)
        assert out == "" and not (tmp_path / "out.npz").exists()


def test_convert_names_the_output_forms_for_another_suffix(tmp_path, capsys):
    checkpoint.save_model(tmp_path / "ckpt", random_params(), MODEL)
    code, _, err = run_main(capsys, tmp_path / "ckpt", "--out", tmp_path / "w.safetensor")
    assert_one_error_line(code, err, "no weights form has the suffix .safetensor", "did you mean '.safetensors'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_commands_take_a_torch_file_as_checkpoint_and_print_its_notes(tmp_path, capsys):
    """evaluate's --checkpoint reads a BasicSR file directly: its params_ema (the figures equal those of a
    folder holding them), with the note saying so."""
    torch = needs_torch()
    from vdsr_jax import evaluate
    from vdsr_jax.media import write_image

    ema, plain = random_params(0), random_params(1)
    as_torch = lambda params: {k: torch.from_numpy(v) for k, v in torch_layout(params).items()}  # noqa: E731
    torch.save({"params": as_torch(plain), "params_ema": as_torch(ema)}, tmp_path / "basicsr.pth")
    checkpoint.save_model(tmp_path / "ema", ema, MODEL)
    (tmp_path / "set").mkdir()
    write_image(tmp_path / "set" / "a.png", np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8))
    results, errors = [], []
    for weights in ("basicsr.pth", "ema"):
        out = tmp_path / f"{weights}.json"
        assert evaluate.main(["--checkpoint", str(tmp_path / weights), "--data-dir", str(tmp_path / "set"),
                              "--scales", "2", "--json", str(out)]) == 0
        errors.append(capsys.readouterr().err.strip().splitlines())
        results.append({k: v for k, v in json.loads(out.read_text())["results"][0].items() if k != "seconds"})
    assert results[0] == results[1]
    assert len(errors[0]) == 1 and errors[0][0].startswith("note: ") and "converted params_ema" in errors[0][0]
    assert errors[1] == []


def test_a_lightning_checkpoint_with_pickled_hyperparameters_is_refused_naming_the_class(tmp_path, capsys):
    torch = needs_torch()
    import argparse

    state = {f"model.{k}": torch.from_numpy(v) for k, v in torch_layout(random_params()).items()}
    torch.save({"state_dict": state, "pytorch-lightning_version": "2.4.0",
                "hyper_parameters": {"args": argparse.Namespace(lr=0.1)}}, tmp_path / "run.ckpt")
    code, _, err = run_main(capsys, tmp_path / "run.ckpt", "--out", tmp_path / "ckpt")
    assert_one_error_line(code, err, "refusing to load", "argparse.Namespace")
