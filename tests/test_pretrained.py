"""`vdsr_jax.pretrained`: the weights format round-trips bit for bit in .npz and .safetensors, bad files are
refused with a CheckpointError that says why (never unpickled), and the bundled weights, once they ship, still evaluate on
Set5 as their own provenance says."""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BENCHMARKS, require
from flax.traverse_util import flatten_dict

from vdsr_jax import pretrained
from vdsr_jax.checkpoint import expected_shapes
from vdsr_jax.errors import CheckpointError
from vdsr_jax.model import VDSR, model_spec

PROVENANCE = {"config": "vdsr_jax.configs.x234", "steps": 3, "patches": 192, "precision": "float32",
              "wall_seconds": 1.5, "hardware": "test", "evaluation": []}


def small_model(**kw):
    model = VDSR(depth=3, features=4, use_bias=True, **kw)
    rng = np.random.default_rng(0)  # random values everywhere (biases ≠ 0), without compiling an init
    params = jax.tree.map(lambda shape: jnp.asarray(rng.normal(size=shape), jnp.float32), expected_shapes(model),
                          is_leaf=lambda x: isinstance(x, tuple))
    return model, params


def rewrite(path, out, change):
    """Copy the npz at `path` to `out` with `change(entries)` applied to its {name: array} entries."""
    with np.load(path, allow_pickle=False) as z:
        entries = {k: z[k] for k in z.files}
    change(entries)
    np.savez(out, **entries)
    return out


@pytest.mark.parametrize("name", ["w.npz", "w.safetensors"])
def test_round_trip_is_bit_exact(tmp_path, name):
    model, params = small_model()
    path = pretrained.export_pretrained(params, model, tmp_path / name, PROVENANCE)
    loaded_model, loaded = pretrained.load_pretrained(path)
    assert model_spec(loaded_model) == model_spec(model)
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)):
        assert b.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    meta = pretrained.pretrained_info(path)
    assert meta["provenance"] == PROVENANCE and meta["format"] == pretrained.FORMAT
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


@pytest.mark.slow
def test_readable_with_numpy_alone(tmp_path):
    """The file needs neither JAX nor pickle: a plain numpy process reads every array and the JSON."""
    model, params = small_model()
    path = pretrained.export_pretrained(params, model, tmp_path / "w.npz", PROVENANCE)
    code = ("import json, sys, numpy as np; z = np.load(sys.argv[1], allow_pickle=False); "
            "m = json.loads(str(z['__meta__'][()])); "
            "print(m['model']['depth'], sorted(k for k in z.files if k != '__meta__')[0], z['conv_0/kernel'].shape); "
            "assert 'jax' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split()[:2] == ["3", "conv_0/bias"]


def test_default_architecture_fits_in_3_mb(tmp_path):
    model = VDSR(depth=20, features=64, use_bias=True)
    rng = np.random.default_rng(0)  # He-normal values, as trained weights spread: they barely compress
    params = jax.tree.map(lambda shape: rng.normal(0, (2 / (9 * shape[-1])) ** 0.5, shape).astype(np.float32),
                          expected_shapes(model), is_leaf=lambda x: isinstance(x, tuple))
    path = pretrained.export_pretrained(params, model, tmp_path / "w.npz", PROVENANCE)
    assert path.stat().st_size <= 3 * 2**20


@pytest.mark.parametrize("case", ["wrong shape", "missing layer", "extra layer", "corrupt zip", "pickled object",
                                  "no description", "bad description", "integer layer", "non-finite", "missing file",
                                  "not a zip"])
def test_bad_files_are_refused(tmp_path, case):
    model, params = small_model()
    good = pretrained.export_pretrained(params, model, tmp_path / "good.npz", PROVENANCE)
    bad = tmp_path / "bad.npz"
    expected = {
        "wrong shape": "layer conv_1/kernel has shape (3, 3, 4, 5), expected (3, 3, 4, 4)",
        "missing layer": "layer conv_2/bias is missing",
        "extra layer": "unexpected layer conv_9/kernel",
        "corrupt zip": "not a readable weights file",
        "pickled object": "without unpickling",
        "no description": "lacks the __meta__ entry",
        "bad description": "is not a vdsr_jax.pretrained/1 description",
        "integer layer": "layer conv_0/bias holds int32 values",
        "non-finite": "layer conv_1/bias holds non-finite values",
        "missing file": "does not exist",
        "not a zip": "not a readable weights file",
    }[case]
    if case == "wrong shape":
        rewrite(good, bad, lambda e: e.update({"conv_1/kernel": np.zeros((3, 3, 4, 5), np.float32)}))
    elif case == "missing layer":
        rewrite(good, bad, lambda e: e.pop("conv_2/bias"))
    elif case == "extra layer":
        rewrite(good, bad, lambda e: e.update({"conv_9/kernel": np.zeros((3, 3, 4, 4), np.float32)}))
    elif case == "corrupt zip":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2] + bytes(64) + data[len(data) // 2 + 64:])
    elif case == "pickled object":
        marker = tmp_path / "ran"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        buffer = io.BytesIO()
        np.save(buffer, np.array([Evil()], dtype=object), allow_pickle=True)
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
            for item in src.infolist():
                data = buffer.getvalue() if item.filename == "conv_0/kernel.npy" else src.read(item)
                dst.writestr(item.filename, data)
    elif case == "no description":
        rewrite(good, bad, lambda e: e.pop("__meta__"))
    elif case == "bad description":
        rewrite(good, bad, lambda e: e.update({"__meta__": np.array(json.dumps({"model": {}}))}))
    elif case == "integer layer":
        rewrite(good, bad, lambda e: e.update({"conv_0/bias": e["conv_0/bias"].astype(np.int32)}))
    elif case == "non-finite":
        rewrite(good, bad, lambda e: e["conv_1/bias"].__setitem__(0, np.nan))
    elif case == "not a zip":
        bad.write_bytes(pickle.dumps({"conv_0": 1}))
    with pytest.raises(CheckpointError) as info:
        pretrained.load_pretrained(bad)
    assert expected in str(info.value), str(info.value)
    if case == "pickled object":
        assert not marker.exists()


def safetensors_file(path, arrays: dict, metadata: dict | None) -> bytes:
    """A .safetensors file as its specification lays it out (https://github.com/huggingface/safetensors#format),
    built here without the safetensors package: an 8-byte little-endian header size, the JSON header (dtype,
    shape, byte range of each array; string metadata), then the arrays' little-endian bytes."""
    header, chunks, offset = {}, [], 0
    for name, array in arrays.items():
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        dtype = {"f4": "F32", "f8": "F64", "f2": "F16", "i4": "I32"}[array.dtype.str[1:]]
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return Path(path).read_bytes()


def test_safetensors_follow_the_specification(tmp_path):
    """What export_pretrained writes is the layout the specification gives, read back here by hand, and a
    file laid out by hand from the specification loads."""
    model, params = small_model()
    path = pretrained.export_pretrained(params, model, tmp_path / "w.safetensors", PROVENANCE)
    data = path.read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    meta = json.loads(header.pop("__metadata__")["vdsr_jax"])
    assert meta == {"format": pretrained.FORMAT, "model": model_spec(model), "provenance": PROVENANCE}
    flat = flatten_dict(params, sep="/")
    assert set(header) == set(flat)
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        array = np.frombuffer(data[8 + size + start:8 + size + end], "<f4").reshape(entry["shape"])
        assert entry["dtype"] == "F32"
        np.testing.assert_array_equal(array, np.asarray(flat[name]))

    safetensors_file(tmp_path / "hand.safetensors", {k: np.asarray(v) for k, v in flat.items()},
                               {"vdsr_jax": json.dumps(meta)})
    _, loaded = pretrained.load_pretrained(tmp_path / "hand.safetensors")
    for name, value in flatten_dict(loaded, sep="/").items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat[name]))


SAFETENSORS_CASES = {
    "bad header JSON": "is not a readable safetensors file",
    "truncated data": "is not a readable safetensors file",
    "header too short": "is not a readable safetensors file",
    "integer layer": "layer conv_0/bias holds int32 values",
    "NaN weights": "layer conv_1/bias holds non-finite values",
    "missing layer": "layer conv_2/bias is missing",
    "wrong shape": "layer conv_1/kernel has shape (3, 3, 4, 5), expected (3, 3, 4, 4)",
    "no description": "lacks the vdsr_jax metadata entry",
    "bad description": "is not a vdsr_jax.pretrained/1 description",
}


@pytest.mark.parametrize("case", list(SAFETENSORS_CASES))
def test_tampered_safetensors_are_refused(tmp_path, case):
    """Each damage, made by hand after the specification, gives a CheckpointError saying what is wrong."""
    model, params = small_model()
    good = pretrained.export_pretrained(params, model, tmp_path / "good.safetensors", PROVENANCE)
    arrays = {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}
    metadata = {"vdsr_jax": pretrained.read_safetensors(good)[0]["vdsr_jax"]}
    bad = tmp_path / "bad.safetensors"
    data = good.read_bytes()
    if case == "bad header JSON":
        bad.write_bytes(data[:8] + b"{'" + data[10:])  # the first key quoted with ' : not JSON
    elif case == "truncated data":
        bad.write_bytes(data[:-10])
    elif case == "header too short":
        bad.write_bytes(data[:6])
    elif case == "integer layer":
        safetensors_file(bad, {**arrays, "conv_0/bias": arrays["conv_0/bias"].astype(np.int32)}, metadata)
    elif case == "NaN weights":
        safetensors_file(bad, {**arrays, "conv_1/bias": np.full_like(arrays["conv_1/bias"], np.nan)}, metadata)
    elif case == "missing layer":
        safetensors_file(bad, {k: v for k, v in arrays.items() if k != "conv_2/bias"}, metadata)
    elif case == "wrong shape":
        safetensors_file(bad, {**arrays, "conv_1/kernel": np.zeros((3, 3, 4, 5), np.float32)}, metadata)
    elif case == "no description":
        safetensors_file(bad, arrays, None)
    elif case == "bad description":
        safetensors_file(bad, arrays, {"vdsr_jax": json.dumps({"model": {}})})
    with pytest.raises(CheckpointError) as info:
        pretrained.load_pretrained(bad)
    assert SAFETENSORS_CASES[case] in str(info.value) and str(bad) in str(info.value), str(info.value)


def test_default_without_bundled_weights_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(pretrained, "DEFAULT_PATH", tmp_path / "absent.npz")
    with pytest.raises(pretrained.NoBundledWeights, match="no pretrained weights ship.*--checkpoint"):
        pretrained.load_pretrained()
    assert issubclass(pretrained.NoBundledWeights, CheckpointError)


@pytest.mark.slow
def test_bundled_weights_reproduce_their_set5_figures():
    """CI check of the shipped file: Set5 PSNR on this CPU within 0.01 dB of the figures in its provenance."""
    if not pretrained.DEFAULT_PATH.is_file():
        pytest.skip(f"no bundled weights ship yet ({pretrained.DEFAULT_PATH.name} is made by the GPU run, "
                    "benchmarks/gpu_run.sh)")
    from vdsr_jax.inference import TiledVDSR
    from vdsr_jax.data import load_folder
    from vdsr_jax.protocol import evaluate_images

    meta = pretrained.pretrained_info()
    rows = [r for r in meta["provenance"]["evaluation"] if r["dataset"] == "Set5"]
    assert {r["scale"] for r in rows} == {2, 3, 4}, "the provenance must hold the Set5 ×2/×3/×4 figures"
    images = load_folder(require(BENCHMARKS / "Set5"), [2, 3, 4])
    net = TiledVDSR(*pretrained.load_pretrained())
    for row in rows:
        result = evaluate_images(net, images, row["scale"])
        assert abs(result["vdsr_psnr"] - row["vdsr_psnr"]) <= 0.01, (row, result)
        assert abs(result["vdsr_ssim"] - row["vdsr_ssim"]) <= 1e-4, (row, result)


@pytest.mark.slow
def test_cli_without_checkpoint_or_with_npz(tmp_path):
    """`vdsr-evaluate`/`vdsr-upscale` without --checkpoint: one clear line while no weights ship (else they
    run on the bundled file); with an exported .npz as --checkpoint both work."""
    from conftest import assert_one_error_line, run_cli

    from vdsr_jax.media import read_image, write_image

    rng = np.random.default_rng(2)
    (tmp_path / "set").mkdir()
    write_image(tmp_path / "set" / "a.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    model, params = small_model()
    npz = pretrained.export_pretrained(params, model, tmp_path / "w.npz", PROVENANCE)
    evaluate = ("evaluate", "--data-dir", tmp_path / "set", "--scales", "2")
    upscale = ("upscale_files", tmp_path / "set" / "a.png", "--scale", "2")
    if not pretrained.DEFAULT_PATH.is_file():
        for args in (evaluate, upscale + ("-o", tmp_path / "none.png")):
            status, _, lines = run_cli(*args)
            assert_one_error_line(status, lines, "no pretrained weights ship", "--checkpoint")
    status, stdout, lines = run_cli(*evaluate, "--checkpoint", npz, "--json", tmp_path / "r.json")
    assert status == 0, lines
    assert "| set" in stdout
    assert json.loads((tmp_path / "r.json").read_text())["checkpoint"] == str(npz)
    status, _, lines = run_cli(*upscale, "-o", tmp_path / "up.png", "--checkpoint", npz)
    assert status == 0, lines
    assert read_image(tmp_path / "up.png").shape == (48, 48, 3)
