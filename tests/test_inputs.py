"""Issue 10: every kind of input the commands cannot take as given, made here (no binary fixtures), at every
place it can reach. Where the input cannot be handled: one `error:` line on stderr, a non-zero exit, no
traceback, and no partial or silently wrong output. Commands run in-process (capsys) for speed, and at least
once each in a subprocess, as a user runs them."""
import collections
import contextlib
import json
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, assert_one_error_line, needs_torch, run_cli, without_modules
from PIL import Image

from vdsr_jax import checkpoint, configs, convert, evaluate, media, training, upscale_files
from vdsr_jax import data as datasets
from vdsr_jax.configs import demo
from vdsr_jax.errors import ConfigError, UserError
from vdsr_jax.metric_writer import MetricWriter
from vdsr_jax.model import VDSR
from vdsr_jax.protocol import evaluate_image
from vdsr_jax.training import validate_config

TINY = VDSR(depth=3, features=8)
TORCH_NAMES = ["input", "residual_layer.0.conv", "output"]  # pytorch-vdsr's names for TINY's three convs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint folder, params) of a small random VDSR."""
    params = jax.tree.map(lambda p: p / 2, TINY.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))["params"])
    return checkpoint.save_model(tmp_path_factory.mktemp("tiny") / "ckpt", params, TINY), params


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Files of the wrong kind: a torch state_dict as torch.save writes it, and plain text."""
    torch = needs_torch()
    import torch_reference

    root = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    torch.save(torch_reference.Net().state_dict(), root / "model_epoch_50.pth")
    (root / "notes.txt").write_text("not a checkpoint\n")
    return root


def picture(height, width, channels=3, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(dtype).max, (height, width, channels), dtype=dtype, endpoint=True)


def folder_of(path, images: dict):
    """A folder holding {name: pixels} images (written with vdsr_jax.media) and {name: bytes} files."""
    path.mkdir(parents=True, exist_ok=True)
    for name, content in images.items():
        if isinstance(content, bytes):
            (path / name).write_bytes(content)
        else:
            media.write_image(path / name, content)
    return path


def one_error_line(capsys, status, *fragments):
    assert_one_error_line(status, capsys.readouterr().err.strip().splitlines(), *fragments)


def snapshot(path):
    """Every file under `path` (or `path` itself) with its bytes, to prove an output is untouched."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def torch_state(params, dtype: str = "float32") -> collections.OrderedDict:
    """pytorch-vdsr state_dict (OIHW) of TINY params, derived here rather than with torch_weights."""
    torch = needs_torch()
    dtype = getattr(torch, dtype)
    return collections.OrderedDict(
        (f"{name}.weight", torch.tensor(np.transpose(np.asarray(params[f"conv_{i}"]["kernel"]), (3, 2, 0, 1)),
                                        dtype=dtype))
        for i, name in enumerate(TORCH_NAMES))


def flax_kernels(state) -> list[np.ndarray]:
    """The HWIO float32 kernels a state_dict stands for, upcast by torch itself."""
    torch = needs_torch()
    return [np.transpose(state[f"{name}.weight"].to(torch.float32).numpy(), (2, 3, 1, 0)) for name in TORCH_NAMES]


def loaded_kernels(folder) -> list[np.ndarray]:
    _, params = checkpoint.load_model(folder)
    return [np.asarray(params[f"conv_{i}"]["kernel"]) for i in range(len(TORCH_NAMES))]


# ---- a. a file of the wrong kind where a checkpoint or a folder is expected ---------------------------------

def checkpoint_commands(tmp_path, path):
    data = folder_of(tmp_path / "data", {"a.png": picture(40, 40)})
    return {
        "upscale": (upscale_files, [str(folder_of(tmp_path / "in", {"a.png": picture(8, 8)}) / "a.png"),
                                    "--checkpoint", path,
                                    "--scale", "2", "-o", str(tmp_path / "out.png")]),
        "evaluate": (evaluate, ["--checkpoint", path, "--data-dir", str(data), "--scales", "2"]),
        "convert": (convert, ["--to-torch", path, "--out", str(tmp_path / "out.pth")]),
    }


@pytest.mark.parametrize("command", ["upscale", "evaluate", "convert"])
def test_checkpoint_argument_given_a_file_of_another_kind_says_what_it_is(tmp_path, capsys, files, command):
    path = str(files / "notes.txt")
    module, argv = checkpoint_commands(tmp_path, path)[command]
    one_error_line(capsys, module.main(argv), path, "is text, not VDSR weights", "a checkpoint is a folder")
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "out.pth").exists()


@pytest.mark.slow
def test_checkpoint_given_a_torch_file_without_torch_says_torch_is_needed(tmp_path, files):
    """A torch file is read where torch is installed (tests/test_weight_forms.py); without it, one line."""
    torch_file = files / "model_epoch_50.pth"
    for module, argv in checkpoint_commands(tmp_path, torch_file).values():
        done = subprocess.run([sys.executable, "-m", module.__name__, *argv], env=without_modules("torch"),
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert_one_error_line(done.returncode, done.stderr.strip().splitlines(), "needs PyTorch, which is not installed")


def test_folder_arguments_given_a_file(tmp_path, capsys, tiny, files):
    text = str(files / "notes.txt")
    one_error_line(capsys, evaluate.main(["--checkpoint", str(tiny[0]), "--data-dir", text]),
                   text, "is a file, not a folder of images")
    one_error_line(capsys, convert.main(["--from-torch", str(tiny[0]), "--out", str(tmp_path / "c")]),
                   str(tiny[0]), "is a checkpoint folder, not a torch file", "--to-torch")
    # upscale: INPUT a non-image file, a folder without images, a folder with -o naming one file
    one_error_line(capsys, upscale_files.main([text, "--checkpoint", str(tiny[0]), "--scale", "2", "-o",
                                               str(tmp_path / "o.png")]), text, "not an image file")
    empty = folder_of(tmp_path / "empty", {"readme.txt": b"text"})
    one_error_line(capsys, upscale_files.main([str(empty), "--checkpoint", str(tiny[0]), "--scale", "2", "-o",
                                               str(tmp_path / "o")]), str(empty), "holds no image files")
    one = folder_of(tmp_path / "one", {"a.png": picture(8, 8)})
    one_error_line(capsys, upscale_files.main([str(one), "--checkpoint", str(tiny[0]), "--scale", "2", "-o",
                                               str(tmp_path / "o.png")]), "names a file", "give a folder")
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("field", ["train_manual_dir", "eval_sets"])
def test_training_data_folders_given_a_file(files, field):
    config = demo.get_config()
    where = str(files / "notes.txt")
    if field == "train_manual_dir":
        config.train_data, config.train_manual_dir = "image_folder/mine", where
    else:
        config.eval_sets = {"mine": where}
    with pytest.raises(ConfigError, match=f"config.{field}.*{where} is a file, not a folder"):
        validate_config(config, device_count=1)
    # test_train.py runs `train` with a bad config in a subprocess: the same one-line path as this ConfigError


# ---- b. tensor dtypes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_weights_convert_exactly(tmp_path, capsys, tiny, dtype):
    torch = needs_torch()
    state = torch_state(tiny[1], dtype)
    torch.save(state, tmp_path / "half.pth")
    assert convert.main(["--from-torch", str(tmp_path / "half.pth"), "--out", str(tmp_path / "ckpt")]) == 0
    assert capsys.readouterr().err == ""
    for got, want in zip(loaded_kernels(tmp_path / "ckpt"), flax_kernels(state)):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_float64_weights_round_with_one_note(tmp_path, capsys):
    torch = needs_torch()
    torch.manual_seed(0)
    state = collections.OrderedDict((f"{name}.weight", torch.randn(shape, dtype=torch.float64))
                                    for name, shape in zip(TORCH_NAMES, [(8, 1, 3, 3), (8, 8, 3, 3), (1, 8, 3, 3)]))
    torch.save(state, tmp_path / "double.pth")
    assert convert.main(["--from-torch", str(tmp_path / "double.pth"), "--out", str(tmp_path / "ckpt")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note:") and "rounded" in err[0] and "3 of 3" in err[0], err
    for got, want in zip(loaded_kernels(tmp_path / "ckpt"), flax_kernels(state)):
        np.testing.assert_array_equal(got, want)


def test_integer_weights_are_refused(tmp_path, capsys, tiny):
    needs_torch().save(torch_state(tiny[1], "int32"), tmp_path / "int.pth")
    one_error_line(capsys, convert.main(["--from-torch", str(tmp_path / "int.pth"), "--out", str(tmp_path / "c")]),
                   "torch.int32", "floating point")
    assert not (tmp_path / "c").exists()


# ---- c. writing where an output already is -----------------------------------------------------------------

def test_convert_refuses_an_existing_checkpoint_and_overwrite_replaces_a_training_run(tmp_path, capsys, tiny):
    needs_torch().save(torch_state(tiny[1]), tmp_path / "w.pth")
    out = tmp_path / "D"
    argv = ["--from-torch", str(tmp_path / "w.pth"), "--out", str(out)]
    assert convert.main(argv) == 0
    before = snapshot(out)
    one_error_line(capsys, convert.main(argv), str(out), "--overwrite")
    assert snapshot(out) == before

    run = tmp_path / "run"  # a training workdir whose latest step is 1000, with other weights
    other = jax.tree.map(lambda p: p + 1, tiny[1])
    checkpoint.save_model(run / "checkpoints", other, TINY, step=1000)
    one_error_line(capsys, convert.main([*argv[:3], str(run)]), "--overwrite")
    assert convert.main([*argv[:3], str(run), "--overwrite"]) == 0
    for got, want in zip(loaded_kernels(run), flax_kernels(torch_state(tiny[1]))):
        np.testing.assert_array_equal(got, want)  # the converted weights, not step 1000


def test_to_torch_evaluate_json_and_upscale_refuse_existing_outputs(tmp_path, capsys, tiny):
    needs_torch()  # to_torch writes a torch file
    folder = str(tiny[0])
    cases = {
        "out.pth": (convert, ["--to-torch", folder, "--out"]),
        "out.json": (evaluate, ["--checkpoint", folder, "--scales", "2", "--data-dir",
                                str(folder_of(tmp_path / "data", {"a.png": picture(24, 24)})), "--json"]),
        "out.png": (upscale_files, [str(folder_of(tmp_path / "in", {"a.png": picture(8, 8)}) / "a.png"),
                                    "--checkpoint", folder, "--scale", "2", "-o"]),
    }
    for name, (module, argv) in cases.items():
        target = tmp_path / name
        target.write_bytes(b"old")
        one_error_line(capsys, module.main([*argv, str(target)]), str(target), "--overwrite")
        assert target.read_bytes() == b"old"
        assert module.main([*argv, str(target), "--overwrite"]) == 0
        capsys.readouterr()
    state = needs_torch().load(tmp_path / "out.pth", weights_only=True)
    np.testing.assert_array_equal(state["output.weight"].numpy(),
                                  np.transpose(np.asarray(tiny[1]["conv_2"]["kernel"]), (3, 2, 0, 1)))
    assert json.loads((tmp_path / "out.json").read_text())["results"][0]["images"] == 1
    assert media.read_image(tmp_path / "out.png").shape == (16, 16, 3)


# ---- d. transparency -------------------------------------------------------------------------------------

SQUARE = (slice(8, 24), slice(8, 24))  # the transparent square of a 32×32 image


def colour_key_png(path):
    rgb = np.zeros((32, 32, 3), np.uint8) + np.array([10, 120, 200], np.uint8)
    rgb[SQUARE] = (255, 0, 255)
    Image.fromarray(rgb).save(path, transparency=(255, 0, 255))
    return "RGBA"


def grey_key_png(path):
    grey = np.full((32, 32), 90, np.uint8)
    grey[SQUARE] = 7
    Image.fromarray(grey).save(path, transparency=7)
    return "LA"


def palette_image(path):
    index = np.ones((32, 32), np.uint8)
    index[SQUARE] = 0
    image = Image.fromarray(index, "P")
    image.putpalette([255, 0, 255, 10, 120, 200, 200, 30, 30])
    image.save(path, transparency=0)
    return "RGBA"


def alpha_webp(path):
    rgba = np.zeros((32, 32, 4), np.uint8) + np.array([10, 120, 200, 255], np.uint8)
    rgba[SQUARE] = (255, 0, 255, 0)
    Image.fromarray(rgba).save(path, lossless=True)
    return "RGBA"


@pytest.mark.parametrize("name,make", [("key.png", colour_key_png), ("grey_key.png", grey_key_png),
                                       ("palette.png", palette_image), ("palette.gif", palette_image),
                                       ("alpha.webp", alpha_webp)])
def test_transparency_is_kept_as_alpha(tmp_path, capsys, tiny, name, make):
    source = tmp_path / name
    mode = make(source)
    pixels = media.read_image(source)
    with Image.open(source) as im:
        np.testing.assert_array_equal(pixels, np.asarray(im.convert(mode)).reshape(32, 32, len(mode)))
    alpha = np.full((32, 32), 255)
    alpha[SQUARE] = 0
    np.testing.assert_array_equal(pixels[..., -1], alpha)  # derived from how the file was made
    assert upscale_files.main([str(source), "--checkpoint", str(tiny[0]), "--scale", "2", "-o",
                               str(tmp_path / "out.png")]) == 0
    out = media.read_image(tmp_path / "out.png")
    assert out.shape == (64, 64, len(mode))
    assert out[24:40, 24:40, -1].max() <= 1  # inside the square, beyond bicubic's reach of its edges
    assert out[:8, :, -1].min() >= 254 and out[56:, :, -1].min() >= 254


# ---- e. output limits known before inference ---------------------------------------------------------------

@pytest.fixture
def no_inference(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("inference ran before the output was known to be writable")

    monkeypatch.setattr(upscale_files, "upscale_image", fail)


@pytest.mark.parametrize("pixels,scale,output,fragments", [
    (picture(2, 1025), 16, "out.webp", ["16400×32", "16383", ".png or .tif"]),
    (picture(8, 8, 4), 2, "out.jpg", ["JPEG", "alpha", ".png"]),
    (picture(8, 8, 2), 2, "out.bmp", ["BMP", "alpha", ".png"]),
])
def test_unwritable_output_is_refused_before_inference(tmp_path, capsys, tiny, no_inference, pixels, scale,
                                                       output, fragments):
    source = media.write_image(tmp_path / ("in.webp" if pixels.shape[-1] == 3 else "in.png"), pixels)
    one_error_line(capsys, upscale_files.main([str(source), "--checkpoint", str(tiny[0]), "--scale", str(scale), "-o",
                                               str(tmp_path / output)]), output, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


# ---- f. non-finite metrics -------------------------------------------------------------------------------

def strict_json(text):
    def refuse(constant):
        raise ValueError(f"{constant} is not RFC 8259 JSON")

    return json.loads(text, parse_constant=refuse)


def test_infinite_psnr_is_written_as_the_string_inf(tmp_path, capsys, tiny):
    # A flat black grey image is its own Y: bicubic and VDSR (no biases) reproduce it exactly.
    data = folder_of(tmp_path / "set", {"flat.png": np.zeros((32, 32, 1), np.uint8), "photo.png": picture(32, 32)})
    assert evaluate.main(["--checkpoint", str(tiny[0]), "--data-dir", str(data), "--scales", "2",
                          "--json", str(tmp_path / "r.json")]) == 0
    row = strict_json((tmp_path / "r.json").read_text())["results"][0]
    assert row["images"] == 2 and row["bicubic_psnr"] == row["vdsr_psnr"] == "inf"
    assert 0 < row["bicubic_ssim"] <= 1 + 1e-9
    assert "| inf |" in capsys.readouterr().out


def test_metrics_jsonl_is_strict_json_and_the_plot_survives_resume(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(10, {"loss": 0.5})
    writer.write(20, {"loss": 0.25, "psnr/set": float("inf"), "bicubic_psnr/set": 30.0})
    writer.plot()
    writer.close()
    records = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["psnr/set"] == "inf" and records[1]["bicubic_psnr/set"] == 30.0
    resumed = MetricWriter(tmp_path, resume_step=20)
    assert resumed.history[1]["psnr/set"] == float("inf")
    resumed.write(30, {"loss": 0.125, "psnr/set": 31.0})
    assert media.read_image(resumed.plot()).shape[-1] in (3, 4)
    resumed.close()
    assert [strict_json(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [10, 20, 30]


# ---- g. one rule for listing a folder --------------------------------------------------------------------

APPLEDOUBLE = struct.pack(">IIl16sH", 0x00051607, 0x00020000, 0, b"Mac OS X        ", 0) + bytes(64)


def test_hidden_and_appledouble_files_are_skipped_everywhere(tmp_path, capsys, tiny):
    folder = folder_of(tmp_path / "photos", {"photo.png": picture(32, 32)})
    (folder / "._photo.png").write_bytes(APPLEDOUBLE)
    media.write_image(folder / ".hidden.png", picture(4, 4))  # too small to evaluate: would fail if read
    assert media.list_images([folder]) == [folder / "photo.png"]

    assert evaluate.main(["--checkpoint", str(tiny[0]), "--data-dir", str(folder), "--scales", "2",
                          "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["images"] == 1
    assert upscale_files.main([str(folder), "--checkpoint", str(tiny[0]), "--scale", "2", "-o",
                               str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["photo_x2.png"]
    assert capsys.readouterr().err == ""

    hidden_dir = folder_of(folder / ".thumbnails", {"t.png": picture(8, 8)})  # the builder searches sub-folders
    assert hidden_dir.is_dir()
    source = datasets.load("image_folder/photos", tmp_path / "tfds", manual_dir=folder)
    assert [e["name"].decode() for e in source] == ["photo"]


@pytest.mark.parametrize("module", [evaluate, upscale_files])
def test_help_says_hidden_files_are_skipped(capsys, module):
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "hidden names" in text and "._" in text and "skipped" in text


# ---- h. images of several frames -------------------------------------------------------------------------

def frames(path, **options):
    images = [Image.fromarray(picture(24, 24, seed=i)) for i in range(3)]
    images[0].save(path, save_all=True, append_images=images[1:], **options)
    return path


MULTI_FRAME = {"anim.webp": {"duration": 100}, "anim.gif": {"duration": 100}, "anim.png": {"duration": 100},
               "pages.tif": {}}


@pytest.mark.parametrize("name", list(MULTI_FRAME))
def test_multi_frame_images_keep_their_frames_in_upscale_and_are_refused_by_evaluate(tmp_path, capsys, tiny, name):
    (tmp_path / "in").mkdir()
    source = frames(tmp_path / "in" / name, **MULTI_FRAME[name])
    with Image.open(source) as im:
        assert im.n_frames == 3  # what the file is, by Pillow
    assert upscale_files.main([str(source), "--checkpoint", str(tiny[0]), "--scale", "2", "-o",
                               str(tmp_path / "out")]) == 0
    (written,) = (tmp_path / "out").iterdir()
    with Image.open(written) as im:
        assert (im.n_frames, im.size) == (3, (48, 48))  # never cut to one frame (vdsr_jax.media)
    # evaluation stays single-frame; GIF is not among the listed suffixes (media.IMAGE_SUFFIXES)
    fragments = ["holds no image files"] if name.endswith(".gif") else [name, "only single-frame images"]
    one_error_line(capsys, evaluate.main(["--checkpoint", str(tiny[0]), "--data-dir", str(tmp_path / "in"),
                                          "--scales", "2", "--json", str(tmp_path / "r.json")]), *fragments)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_multi_frame_image_to_a_still_format_is_refused_in_a_subprocess(tmp_path, tiny):
    source = frames(tmp_path / "anim.gif", duration=100)
    status, _, err = run_cli("upscale_files", source, "--checkpoint", tiny[0], "--scale", "2", "-o", tmp_path / "o.jpg")
    assert_one_error_line(status, err, "o.jpg")
    assert not (tmp_path / "o.jpg").exists()


# ---- point 1: grey images stay grey ----------------------------------------------------------------------

def png_grey16(pixels: np.ndarray) -> bytes:
    """A one-channel 16-bit PNG written here byte by byte (no codec under test)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_grey_16_bit_and_grey_alpha_stay_grey(tmp_path, tiny):
    grey16 = picture(12, 10, 1, dtype=np.uint16)[..., 0]
    (tmp_path / "g16.png").write_bytes(png_grey16(grey16))
    np.testing.assert_array_equal(media.read_image(tmp_path / "g16.png")[..., 0], grey16)
    Image.fromarray(picture(12, 10, 2), "LA").save(tmp_path / "la.png")
    assert upscale_files.main([str(tmp_path / "g16.png"), str(tmp_path / "la.png"), "--checkpoint", str(tiny[0]),
                               "--scale", "2", "-o", str(tmp_path / "o")]) == 0
    g16, la = (media.read_image(tmp_path / "o" / n) for n in ("g16_x2.png", "la_x2.png"))
    assert (g16.shape, g16.dtype, la.shape, la.dtype) == ((24, 20, 1), np.uint16, (24, 20, 2), np.uint8)


def test_evaluate_names_folders_of_the_same_name_by_their_paths(tmp_path, capsys, tiny):
    images = {"A": picture(30, 33, seed=1), "B": picture(30, 33, seed=2)}
    folders = [folder_of(tmp_path / name / "HR", {"x.png": pixels}) for name, pixels in images.items()]
    out = tmp_path / "r.json"
    argv = ["--checkpoint", str(tiny[0]), "--scales", "2", "--json", str(out)]
    assert evaluate.main([*argv, "--data-dir", str(folders[0]), "--data-dir", str(folders[1])]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [row["dataset"] for row in rows] == ["A/HR", "B/HR"]
    # each row holds its own folder's image: bicubic PSNR of that image alone, by the protocol's own function
    for row, pixels in zip(rows, images.values()):
        assert row["bicubic_psnr"] == evaluate_image(lambda y: y, pixels, 2)["bicubic_psnr"]
    table = capsys.readouterr().out
    assert "| A/HR | ×2 | 1 |" in table and "| B/HR | ×2 | 1 |" in table
    one_error_line(capsys, evaluate.main([*argv, "--overwrite", "--data-dir", str(folders[0]),
                                          "--data-dir", str(tmp_path / "A" / "." / "HR")]), "given twice")


def test_evaluate_checks_the_json_location_first_and_keeps_the_table_when_writing_fails(tmp_path, capsys, tiny,
                                                                                         monkeypatch):
    folder = folder_of(tmp_path / "HR", {"x.png": picture(30, 33)})
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be\n")
    argv = ["--checkpoint", str(tiny[0]), "--scales", "2", "--data-dir", str(folder)]
    monkeypatch.setattr(evaluate, "evaluate_sets", lambda *a: pytest.fail("evaluated before checking --json"))
    one_error_line(capsys, evaluate.main([*argv, "--json", str(blocker / "r.json")]), str(blocker), "not a folder")
    monkeypatch.undo()

    @contextlib.contextmanager
    def failing_output(path, overwrite):
        raise UserError(f"cannot write {path}: disk full")
        yield

    monkeypatch.setattr(evaluate, "atomic_output", failing_output)
    status = evaluate.main([*argv, "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert status == 1 and "| HR | ×2 | 1 |" in captured.out
    assert captured.err.strip() == f"error: cannot write {tmp_path / 'r.json'}: disk full"


@pytest.mark.parametrize("layout, compare, fragments", [
    ({"a/x.png": 1, "b/x.png": 2}, False, ["a/x.png", "b/x.png", "x_x2.png"]),
    ({"a/x.png": 1, "a/x.jpg": 2}, True, ["x.png", "x.jpg", "x_x2_compare.png"]),
])
def test_upscale_refuses_two_files_written_to_one_path_before_any_work(tmp_path, capsys, tiny, monkeypatch,
                                                                       layout, compare, fragments):
    inputs = []
    for name, seed in layout.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        media.write_image(tmp_path / name, picture(12, 10, seed=seed))
        inputs.append(str(tmp_path / name))
    monkeypatch.setattr(upscale_files, "load_checkpoint",
                        lambda *a: pytest.fail("weights loaded before the outputs were checked"))
    argv = [*inputs, "--scale", "2", "-o", str(tmp_path / "out"), *(["--compare"] if compare else [])]
    one_error_line(capsys, upscale_files.main(argv), *fragments)
    assert not (tmp_path / "out").exists()


def test_upscale_refuses_a_misspelt_output_format(tmp_path, capsys, tiny):
    media.write_image(tmp_path / "x.png", picture(12, 10))
    one_error_line(capsys, upscale_files.main([str(tmp_path / "x.png"), "--checkpoint", str(tiny[0]), "--scale", "2",
                                               "-o", str(tmp_path / "out.pnj")]), ".pnj", "'.png'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]


def test_convert_checks_its_output_location_before_reading(tmp_path, capsys):
    needs_torch()
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be\n")
    # the torch file is absent: the output is refused first, so it is never read
    one_error_line(capsys, convert.main(["--from-torch", str(tmp_path / "absent.pth"),
                                         "--out", str(blocker / "ckpt")]), str(blocker), "not a folder")


def test_training_checks_its_workdir_before_any_work(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be\n")
    monkeypatch.setattr(training, "load_eval_sets", lambda *a: pytest.fail("data loaded before the workdir check"))
    with pytest.raises(UserError, match=f"{blocker} is a file, not a folder"):
        training.train_and_evaluate(demo.get_config(), blocker / "run")


@pytest.mark.parametrize("field, value, fragments", [
    ("train_data", "set_5", ["config.train_data", "'set5'"]),
    ("train_data", "skimage:astronat", ["config.train_data", "'astronaut'"]),
    ("eval_sets", {"urban10": "/"}, ["config.eval_sets.urban10", "'urban100'"]),
])
def test_misspelt_data_sources_are_refused_with_the_closest_names(field, value, fragments):
    config = demo.get_config()
    config.unlock()
    config[field] = value
    with pytest.raises(ConfigError) as error:
        validate_config(config, device_count=1)
    assert all(fragment in str(error.value) for fragment in fragments), error.value


def test_misspelt_config_name_gives_the_closest_installed_ones():
    with pytest.raises(ConfigError, match="did you mean 'x234'"):
        configs.resolve("x243")
