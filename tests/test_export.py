"""`vdsr-export`: the exported graphs run elsewhere give what vdsr_jax gives.

- the ONNX Y model through onnxruntime against the jitted Flax model (float32 and float16);
- the pipeline ONNX through onnxruntime against the files `vdsr-upscale` writes, at ×2, ×3, ×4, colour and
  grey, uint8 and float input, NHWC and NCHW;
- the StableHLO artefact deserialised by `jax.export` and run, against the jitted model;
- bad options, existing and unwritable outputs, missing weights: one error line, before any work.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_one_error_line, without_modules

from vdsr_jax import export, upscale_files
from vdsr_jax.media import read_image, write_image
from vdsr_jax.model import VDSR
from vdsr_jax.pretrained import export_pretrained

onnx = pytest.importorskip("onnx", reason='needs onnx (ONNX export): pip install -e ".[test]"')
ort = pytest.importorskip("onnxruntime",
                          reason='needs onnxruntime (runs the exported graphs): pip install -e ".[test]"')

# Twenty layers as the paper's network, fewer features so the test runs fast; the last layer scaled down so
# the residual has a natural size (a few levels) and outputs are rarely clipped.
MODEL = VDSR(depth=20, features=16)
SIZES = [(17, 23), (32, 32), (41, 9)]
Y_TOLERANCE = 1e-4
# float16 carries 11 significant bits: 20 layers of rounding leave a few 1e-3 on outputs around 1
FP16_TOLERANCE = 1e-2


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(path of a .npz weights file, params) of a random VDSR."""
    params = MODEL.init(jax.random.key(3), jnp.zeros((1, 8, 8, 1)))["params"]
    params["conv_19"]["kernel"] = params["conv_19"]["kernel"] * 0.1
    path = export_pretrained(params, MODEL, tmp_path_factory.mktemp("weights") / "vdsr.npz", {})
    return path, params


def run_export(weights_path, output, *options) -> None:
    assert export.main(["--checkpoint", str(weights_path), "-o", str(output), *map(str, options)]) == 0
    assert output.is_file()


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def flax_y(params, y_nchw):
    """The jitted Flax model on NCHW Y images, as NCHW float32."""
    out = jax.jit(MODEL.apply)({"params": params}, jnp.asarray(y_nchw.transpose(0, 2, 3, 1)))
    return np.asarray(out).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("fp16", [False, True], ids=["float32", "float16"])
def test_onnx_y_model_matches_flax(tmp_path, weights, fp16):
    run_export(weights[0], tmp_path / "y.onnx", "--format", "onnx", *(["--fp16"] if fp16 else []))
    graph = onnx.load(tmp_path / "y.onnx")
    assert graph.opset_import[0].version >= 17 and graph.ir_version == 8  # readable by onnxruntime >= 1.12
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.graph.input,
                                                                                          *graph.graph.output]]
    assert dims == [["batch", 1, "height", "width"]] * 2  # dynamic batch, height and width
    net = session(tmp_path / "y.onnx")
    rng = np.random.default_rng(0)
    for height, width in SIZES:
        y = rng.random((2, 1, height, width), dtype=np.float32)
        expected = flax_y(weights[1], y)
        got = net.run(None, {"input": y.astype(np.float16) if fp16 else y})[0]
        assert got.dtype == (np.float16 if fp16 else np.float32) and got.shape == y.shape
        assert np.abs(got.astype(np.float32) - expected).max() <= (FP16_TOLERANCE if fp16 else Y_TOLERANCE)


def test_onnx_y_model_with_biases_matches_flax(tmp_path):
    """The bias branch (models trained with use_bias), on a small network."""
    model = VDSR(depth=3, features=4, use_bias=True)
    params = jax.tree.map(lambda p: p + 0.1, model.init(jax.random.key(4), jnp.zeros((1, 8, 8, 1)))["params"])
    path = export_pretrained(params, model, tmp_path / "bias.npz", {})
    run_export(path, tmp_path / "y.onnx", "--format", "onnx")
    y = np.random.default_rng(1).random((1, 1, 13, 7), dtype=np.float32)
    expected = np.asarray(model.apply({"params": params}, y.transpose(0, 2, 3, 1))).transpose(0, 3, 1, 2)
    assert np.abs(session(tmp_path / "y.onnx").run(None, {"input": y})[0] - expected).max() <= Y_TOLERANCE


def lr_image(height, width, channels, seed):
    """Smooth gradients plus noise, uint8 H×W×C: both flat regions and edges for the bicubic filters."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([0.5 + 0.4 * np.sin(yy / (3 + c) + xx / (4 + c)) for c in range(channels)], -1)
    return np.round(np.clip(smooth + 0.1 * rng.standard_normal(smooth.shape), 0, 1) * 255).astype(np.uint8)


def cli_upscale(tmp_path, weights_path, pixels, scale, name="lr"):
    """What `vdsr-upscale` writes for `pixels` at `scale` (uint8 H×W×C)."""
    source, target = tmp_path / f"{name}.png", tmp_path / f"{name}_x{scale}.png"
    write_image(source, pixels)
    assert upscale_files.main([str(source), "--scale", str(scale), "-o", str(target), "--checkpoint",
                               str(weights_path)]) == 0
    return read_image(target)


def level_differences(got: np.ndarray, expected: np.ndarray) -> tuple[int, float]:
    """(max abs difference in levels, fraction of samples that differ)."""
    diff = np.abs(got.astype(np.int64) - expected.astype(np.int64))
    return int(diff.max()), float(np.mean(diff > 0))


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "grey"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pipeline_matches_vdsr_upscale(tmp_path, weights, scale, channels):
    """uint8 NHWC pipeline vs the PNG vdsr-upscale writes: at most one level apart, on a small share of the
    samples (float32 here, float64 colour and bicubic there, so a value within rounding of a half may fall
    either way)."""
    pixels = lr_image(19, 14, channels, seed=scale)
    expected = cli_upscale(tmp_path, weights[0], pixels, scale)
    path = tmp_path / "pipeline.onnx"
    run_export(weights[0], path, "--format", "onnx-pipeline", "--scale", scale, "--channels", channels,
               "--input-dtype", "uint8", "--layout", "nhwc")
    got = session(path).run(None, {"input": pixels[None]})[0][0]
    assert got.dtype == np.uint8 and got.shape == expected.shape == (19 * scale, 14 * scale, channels)
    worst, share = level_differences(got, expected)
    print(f"x{scale} {channels} channels: max {worst} level, {share:.2e} of samples differ")
    assert worst <= 1 and share < 0.01


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "grey"])
def test_pipeline_on_the_smallest_images(tmp_path, weights, channels):
    """2 pixels a side, where the symmetric padding mirrors the whole axis (and 2×2 is what vdsr-upscale takes)."""
    pixels = lr_image(2, 3, channels, seed=8)
    expected = cli_upscale(tmp_path, weights[0], pixels, 3)
    run_export(weights[0], tmp_path / "p.onnx", "--format", "onnx-pipeline", "--scale", "3", "--channels", channels,
               "--input-dtype", "uint8", "--layout", "nhwc")
    got = session(tmp_path / "p.onnx").run(None, {"input": pixels[None]})[0][0]
    assert got.shape == expected.shape == (6, 9, channels)
    assert level_differences(got, expected)[0] <= 1


def test_float_nchw_pipeline_matches_vdsr_upscale(tmp_path, weights):
    """The default pipeline (float32 [0, 1], NCHW, as chaiNNer feeds PyTorch-style models) on a batch of two
    images: unquantized output, within a level of vdsr-upscale once rounded."""
    images = [lr_image(11, 16, 3, seed=s) for s in (5, 6)]
    expected = [cli_upscale(tmp_path, weights[0], p, 3, name=f"lr{i}") for i, p in enumerate(images)]
    path = tmp_path / "pipeline.onnx"
    run_export(weights[0], path, "--format", "onnx-pipeline", "--scale", "3")
    batch = np.stack(images).transpose(0, 3, 1, 2).astype(np.float32) / 255
    got = session(path).run(None, {"input": batch})[0]
    assert got.dtype == np.float32 and got.shape == (2, 3, 33, 48)
    assert 0 <= got.min() and got.max() <= 1
    for out, reference in zip(got, expected):
        worst, share = level_differences(np.floor(out.transpose(1, 2, 0) * 255 + 0.5), reference)
        assert worst <= 1 and share < 0.01


def test_pipeline_fp16_network_stays_close(tmp_path, weights):
    pixels = lr_image(12, 10, 3, seed=7)
    expected = cli_upscale(tmp_path, weights[0], pixels, 2)
    run_export(weights[0], tmp_path / "p16.onnx", "--format", "onnx-pipeline", "--scale", "2", "--fp16",
               "--input-dtype", "uint8", "--layout", "nhwc")
    got = session(tmp_path / "p16.onnx").run(None, {"input": pixels[None]})[0][0]
    assert level_differences(got, expected)[0] <= 2


def test_pipeline_metadata(tmp_path, weights):
    run_export(weights[0], tmp_path / "p.onnx", "--format", "onnx-pipeline", "--scale", "4", "--channels", "1")
    graph = onnx.load(tmp_path / "p.onnx")
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["vdsr_jax.model"]) == {"depth": 20, "features": 16, "use_bias": False}
    assert (props["scale"], props["channels"], props["dtype"], props["layout"]) == ("4", "1", "float32", "nchw")
    onnx.checker.check_model(graph, full_check=True)


def test_stablehlo_equals_jitted_model(tmp_path, weights):
    run_export(weights[0], tmp_path / "y.stablehlo", "--format", "stablehlo")
    exported = jax.export.deserialize(bytearray((tmp_path / "y.stablehlo").read_bytes()))
    assert "cpu" in exported.platforms
    rng = np.random.default_rng(2)
    for height, width in SIZES:
        y = rng.random((2, height, width, 1), dtype=np.float32)
        expected = np.asarray(jax.jit(MODEL.apply)({"params": weights[1]}, y))
        np.testing.assert_array_equal(np.asarray(exported.call(y)), expected)


# ---- bad input ---------------------------------------------------------------------------------------------

def error_lines(capsys, argv) -> tuple[int, list[str]]:
    status = export.main(argv)
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("options, fragment", [
    (["--format", "onnx", "--scale", "2"], "--scale: for --format onnx-pipeline only"),
    (["--format", "stablehlo", "--layout", "nhwc"], "--layout: for --format onnx-pipeline only"),
    (["--format", "onnx-pipeline"], "needs --scale"),
    (["--format", "stablehlo", "--fp16"], "--fp16 applies to the ONNX formats"),
])
def test_options_that_do_not_go_together(tmp_path, capsys, weights, options, fragment):
    status, lines = error_lines(capsys, ["--checkpoint", str(weights[0]), "-o", str(tmp_path / "m"), *options])
    assert_one_error_line(status, lines, fragment)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("scale", ["2.5", "0", "17", "nan", "two"])
def test_pipeline_scale_must_be_an_integer(tmp_path, capsys, weights, scale):
    with pytest.raises(SystemExit) as stop:
        export.main(["--format", "onnx-pipeline", "--scale", scale, "-o", str(tmp_path / "m.onnx")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert_one_error_line(stop.value.code, lines, "scale")
    assert not (tmp_path / "m.onnx").exists()


def test_existing_output_is_kept(tmp_path, capsys, weights):
    target = tmp_path / "y.onnx"
    target.write_bytes(b"keep")
    status, lines = error_lines(capsys, ["--checkpoint", str(weights[0]), "--format", "onnx", "-o", str(target)])
    assert_one_error_line(status, lines, "already exists", "--overwrite")
    assert target.read_bytes() == b"keep"
    run_export(weights[0], target, "--format", "onnx", "--overwrite")
    assert onnx.load(target).graph.name == "vdsr_y"


def test_an_output_written_meanwhile_by_another_process_is_kept(tmp_path, capsys, weights, monkeypatch):
    """The name was free when the command checked it; another process writes it before this one finishes."""
    target = tmp_path / "y.stablehlo"
    real = export.exported_bytes

    def the_other_finishes_first(*args):
        target.write_bytes(b"another process's model")
        return real(*args)

    monkeypatch.setattr(export, "exported_bytes", the_other_finishes_first)
    status, lines = error_lines(capsys, ["--checkpoint", str(weights[0]), "--format", "stablehlo", "-o", str(target)])
    assert_one_error_line(status, lines, str(target), "already exists")
    assert target.read_bytes() == b"another process's model" and sorted(tmp_path.iterdir()) == [target]


def test_unwritable_output_is_refused_before_the_weights_are_read(tmp_path, capsys):
    """The missing folder is reported, not the missing checkpoint: the output is checked first."""
    status, lines = error_lines(capsys, ["--checkpoint", str(tmp_path / "none.npz"), "--format", "onnx",
                                         "-o", str(tmp_path / "missing" / "y.onnx")])
    assert_one_error_line(status, lines, "missing", "does not exist")
    assert "none.npz" not in lines[0]


def test_bad_and_absent_weights(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    status, lines = error_lines(capsys, ["--checkpoint", str(bad), "--format", "stablehlo",
                                         "-o", str(tmp_path / "a.stablehlo")])
    assert_one_error_line(status, lines, "bad.npz")
    status, lines = error_lines(capsys, ["--format", "onnx", "-o", str(tmp_path / "b.onnx")])  # no bundled weights
    assert_one_error_line(status, lines, "--checkpoint")
    assert not (tmp_path / "a.stablehlo").exists() and not (tmp_path / "b.onnx").exists()


@pytest.mark.parametrize("fmt, name, fragment", [
    ("onnx", "y.onx", "did you mean '.onnx'"),
    ("onnx", "y.stablehlo", "writes a .onnx file"),
    ("onnx-pipeline", "p", "writes a .onnx file"),
    ("stablehlo", "y.onnx", "writes a .stablehlo file"),
])
def test_an_output_name_of_another_format_is_refused_before_the_weights_are_read(tmp_path, capsys, fmt, name,
                                                                                fragment):
    """The file's suffix says what it holds (as for vdsr-upscale and vdsr-convert outputs): a misspelt or
    mismatched one is refused in one line, before the (here absent) weights would be read."""
    options = ["--scale", "2"] if fmt == "onnx-pipeline" else []
    status, lines = error_lines(capsys, ["--checkpoint", str(tmp_path / "absent"), "--format", fmt, *options,
                                         "-o", str(tmp_path / name)])
    assert_one_error_line(status, lines, name, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_without_onnx_onnx_export_says_what_to_install_and_stablehlo_works(tmp_path, weights):
    import subprocess
    import sys

    def run(*options):
        command = "import sys; from vdsr_jax.export import main; sys.exit(main(sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", command, "--checkpoint", str(weights[0]), *options],
                              env=without_modules("onnx", "onnxruntime"), capture_output=True, text=True,
                              timeout=300)

    done = run("--format", "onnx-pipeline", "--scale", "2", "-o", str(tmp_path / "p.onnx"))
    assert_one_error_line(done.returncode, done.stderr.strip().splitlines(), "onnx", 'pip install "vdsr_jax[export]"')
    assert not (tmp_path / "p.onnx").exists()
    done = run("--format", "stablehlo", "-o", str(tmp_path / "y.stablehlo"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "y.stablehlo").stat().st_size > 0
