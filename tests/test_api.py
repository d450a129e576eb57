"""The Python API (`vdsr_jax.upscale`, `vdsr_jax.load`, `__all__`) and the examples of docs/api.md.

`upscale` is checked against the command it stands for: the same pixels, written as a file by imagecodecs
or Pillow (not by vdsr_jax), go through `vdsr-upscale` (`upscale_files.main`, in process), and its output,
read back by imagecodecs, must equal what `upscale` returns."""
import os
import re
import subprocess
import sys
from pathlib import Path

import imagecodecs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_torch
from PIL import Image

import vdsr_jax
from vdsr_jax import api, checkpoint, pretrained, upscale_files, weight_forms
from vdsr_jax.errors import CheckpointError
from vdsr_jax.inference import TiledVDSR
from vdsr_jax.model import VDSR, model_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = VDSR(depth=3, features=8)  # the API's behaviour does not depend on the weights; this one runs fast


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(.npz weights file, checkpoint folder, params) of one small random VDSR, scaled so that its residuals
    are of a natural size."""
    params = jax.tree.map(lambda p: p / 2, TINY.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))["params"])
    folder = tmp_path_factory.mktemp("tiny")
    return (pretrained.export_pretrained(params, TINY, folder / "tiny.npz", {}),
            checkpoint.save_model(folder / "ckpt", params, TINY), params)


def picture(shape, dtype=np.uint8, seed=0):
    """Smooth gradients plus noise (every channel different), as integer samples of `dtype`."""
    rng = np.random.default_rng(seed)
    height, width = shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    planes = [0.5 + 0.4 * np.sin(yy / (5 + c) + xx / (7 - c)) for c in range(shape[2] if len(shape) == 3 else 1)]
    values = np.clip(np.stack(planes, -1) + 0.05 * rng.standard_normal((height, width, len(planes))), 0, 1)
    return np.round(values * np.iinfo(dtype).max).astype(dtype).reshape(shape)


def command_output(source: Path, scale, weights: Path) -> np.ndarray:
    """What `vdsr-upscale SOURCE --scale S -o OUT.png` writes, decoded by libpng (imagecodecs)."""
    target = source.with_name(f"{source.stem}_out.png")
    assert upscale_files.main([str(source), "--checkpoint", str(weights), "--scale", str(scale),
                               "-o", str(target), "--overwrite"]) == 0
    return imagecodecs.png_decode(target.read_bytes())


def as_file(path: Path, pixels: np.ndarray) -> Path:
    path.write_bytes(imagecodecs.png_encode(pixels))  # libpng: 8 or 16 bits, 1 to 4 channels
    return path


# ---- arrays: what the command writes ----------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype,scale", [
    ((23, 19, 3), np.uint8, 2),
    ((23, 19, 3), np.uint8, 3),
    ((23, 19, 3), np.uint8, 2.5),
    ((21, 26, 4), np.uint8, 3),
    ((23, 19), np.uint8, 2.5),  # grey as H×W
    ((18, 22, 1), np.uint8, 2),  # grey as H×W×1
    ((20, 17, 2), np.uint8, 3),  # grey + alpha
    ((23, 19, 3), np.uint16, 2.5),
    ((19, 23), np.uint16, 3),
    ((17, 20, 4), np.uint16, 2),
])
def test_integer_arrays_equal_the_command(tmp_path, tiny, shape, dtype, scale):
    pixels = picture(shape, dtype)
    out = vdsr_jax.upscale(pixels, scale, weights=tiny[0])
    expected = command_output(as_file(tmp_path / "in.png", pixels), scale, tiny[0])
    height, width = (int(np.ceil(n * scale)) for n in shape[:2])
    assert out.dtype == dtype and out.shape == (height, width, *shape[2:])
    np.testing.assert_array_equal(out.reshape(expected.shape), expected)  # libpng gives grey as H×W


@pytest.mark.parametrize("shape,top,scale", [((23, 19, 3), 65535, 2.5), ((21, 18), 255, 2), ((19, 22, 4), 255, 3)])
def test_float64_arrays_round_to_the_command(tmp_path, tiny, shape, top, scale):
    """float64 `k / top` through the same computation as the integers `k`: rounding the (clipped, unrounded)
    result to the integer levels gives the command's output exactly."""
    levels = picture(shape, np.uint16 if top == 65535 else np.uint8)
    out = vdsr_jax.upscale(levels / top, scale, weights=tiny[0])
    expected = command_output(as_file(tmp_path / "in.png", levels), scale, tiny[0])
    assert out.dtype == np.float64 and 0 <= out.min() and out.max() <= 1
    assert np.any(np.abs(out * top - np.round(out * top)) > 0.01)  # not rounded
    np.testing.assert_array_equal(np.floor(out * top + 0.5).reshape(expected.shape), expected)


def test_float32_arrays_stay_float32_within_half_a_level(tmp_path, tiny):
    levels = picture((22, 19, 3), np.uint16)
    out = vdsr_jax.upscale((levels / 65535).astype(np.float32), 2, weights=tiny[0])
    expected = command_output(as_file(tmp_path / "in.png", levels), 2, tiny[0])
    assert out.dtype == np.float32
    assert np.abs(out.astype(np.float64) * 65535 - expected).max() <= 0.5 + 0.01  # float32 input and output


def test_any_array_like(tiny):
    pixels = picture((12, 10, 3))
    out = vdsr_jax.upscale(jnp.asarray(pixels), 2, weights=tiny[0])
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, vdsr_jax.upscale(pixels, 2, weights=tiny[0]))


# ---- PIL images: what the command writes for the same file --------------------------------------------------

def oriented_jpeg(path: Path) -> Path:
    """An RGB JPEG whose EXIF says 'rotate 90° clockwise to display' (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(picture((16, 22, 3))).save(path, exif=exif, quality=95)
    return path


def transparent_palette(path: Path) -> Path:
    image = Image.fromarray(picture((18, 21, 3))).convert("P", palette=Image.Palette.ADAPTIVE, colors=12)
    image.save(path, transparency=3)
    return path


PIL_FILES = {  # name -> (make the file, the mode `upscale` returns)
    "rgb.png": (lambda p: Image.fromarray(picture((17, 20, 3))).save(p), "RGB"),
    "grey.png": (lambda p: Image.fromarray(picture((17, 20))).save(p), "L"),
    "grey_alpha.png": (lambda p: Image.fromarray(picture((20, 17, 2)), "LA").save(p), "LA"),
    "rgba.png": (lambda p: Image.fromarray(picture((19, 18, 4))).save(p), "RGBA"),
    "palette.png": (lambda p: Image.fromarray(picture((18, 21, 3))).convert("P", palette=Image.Palette.ADAPTIVE,
                                                                             colors=12).save(p), "RGB"),
    "palette_alpha.png": (transparent_palette, "RGBA"),
    "bilevel.png": (lambda p: Image.fromarray(picture((18, 20)) > 128).save(p), "L"),
    "grey16.png": (lambda p: Image.fromarray(picture((17, 19), np.uint16)).save(p), "I;16"),
    "cmyk.jpg": (lambda p: Image.fromarray(picture((16, 18, 3))).convert("CMYK").save(p, quality=95), "RGB"),
    "oriented.jpg": (oriented_jpeg, "RGB"),
    "grey_palette.bmp": (lambda p: Image.fromarray(picture((18, 17))).convert("P").save(p), "L"),
}


@pytest.mark.parametrize("name", PIL_FILES)
def test_pil_images_equal_the_command_on_their_file(tmp_path, tiny, name):
    make, mode = PIL_FILES[name]
    source = tmp_path / name
    make(source)
    with Image.open(source) as image:
        out = vdsr_jax.upscale(image, 2.5, weights=tiny[0])
        width, height = image.size
    expected = command_output(source, 2.5, tiny[0])
    assert isinstance(out, Image.Image) and out.mode == mode
    if name == "oriented.jpg":
        width, height = height, width
    assert out.size == (int(np.ceil(2.5 * width)), int(np.ceil(2.5 * height)))
    np.testing.assert_array_equal(np.asarray(out).reshape(expected.shape), expected)


def test_pil_cmyk_converts_through_its_profile_and_an_rgb_profile_is_kept(tmp_path, tiny):
    """As the command reads them: CMYK through its ICC profile (LittleCMS), whose profile then no longer
    applies; an RGB image's profile stays with the output, as in the command's PNG."""
    from PIL import ImageCms
    from test_media_images import cmyk_profile

    Image.fromarray(picture((16, 18, 4)), "CMYK").save(tmp_path / "cmyk.jpg", quality=95, icc_profile=cmyk_profile())
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(picture((17, 15, 3))).save(tmp_path / "tagged.jpg", quality=95, icc_profile=srgb)
    for name, profile in (("cmyk.jpg", None), ("tagged.jpg", srgb)):
        with Image.open(tmp_path / name) as image:
            out = vdsr_jax.upscale(image, 2, weights=tiny[0])
        expected = command_output(tmp_path / name, 2, tiny[0])
        np.testing.assert_array_equal(np.asarray(out), expected)
        assert out.info.get("icc_profile") == profile
        with Image.open(tmp_path / f"{Path(name).stem}_out.png") as written:
            assert written.info.get("icc_profile") == profile
    with Image.open(tmp_path / "cmyk.jpg") as image:
        naive = np.asarray(vdsr_jax.upscale(image.convert("RGB"), 2, weights=tiny[0]), int)
    assert np.abs(naive - command_output(tmp_path / "cmyk.jpg", 2, tiny[0])).max() > 10  # the profile matters


def test_pil_float_images_follow_the_float_rule(tmp_path, tiny):
    levels = picture((18, 21), np.uint16)
    out = vdsr_jax.upscale(Image.fromarray((levels / 65535).astype(np.float32), "F"), 2, weights=tiny[0])
    expected = command_output(as_file(tmp_path / "in.png", levels), 2, tiny[0])
    assert out.mode == "F"
    assert np.abs(np.asarray(out, np.float64) * 65535 - expected).max() <= 0.5 + 0.01


# ---- what is refused --------------------------------------------------------------------------------------

GOOD = picture((8, 8, 3))
NOT_IMAGES = {
    "int32": (GOOD.astype(np.int32), ["int32", "uint8, uint16"]),
    "int64": (GOOD.astype(np.int64), ["int64"]),
    "int16": (GOOD.astype(np.int16), ["int16"]),
    "uint32": (GOOD.astype(np.uint32), ["uint32"]),
    "bool": (GOOD > 100, ["bool"]),
    "complex": (GOOD.astype(np.complex64), ["complex64"]),
    "object": (np.array([[object()] * 3] * 3), ["object"]),
    "list of ints": ([[0, 1], [2, 3]], ["lists of Python ints", "np.uint8"]),
    "above 1": (np.array([[0, 0.5], [1.5, 1]]), ["from 0 to 1.5", "[0, 1]", "divide by 255"]),
    "below 0": (np.array([[-0.25, 0.5], [1, 1]], np.float32), ["float32", "from -0.25 to 1", "[0, 1]"]),
    "NaN": (np.where(GOOD > 200, np.nan, GOOD / 255), ["NaN"]),
    "infinity": (np.full((4, 4), np.inf, np.float32), ["infinite"]),
    "5 channels": (np.zeros((8, 8, 5), np.uint8), ["(8, 8, 5)", "C = 1"]),
    "batch": (np.zeros((2, 8, 8, 3), np.uint8), ["(2, 8, 8, 3)"]),
    "1-D": (np.zeros(8, np.uint8), ["(8,)"]),
    "empty": (np.zeros((0, 0), np.uint8), ["(0, 0)", "2×2"]),
    "one pixel": (np.zeros((1, 1, 3), np.uint8), ["(1, 1, 3)", "2×2"]),
    "one row": (np.zeros((1, 9)), ["(1, 9)", "2×2"]),
    "PIL mode I": (Image.fromarray(np.zeros((4, 4), np.int32)), ["mode I", "I;16"]),
    "PIL F above 1": (Image.fromarray(np.full((4, 4), 2, np.float32)), ["mode F", "[0, 1]"]),
}


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """Weights that fail the test if they are read: bad arguments are refused before."""
    monkeypatch.setattr(api, "load_weights", lambda *a: pytest.fail("weights loaded for a refused call"))
    return tmp_path / "never_read.npz"


@pytest.mark.parametrize("case", NOT_IMAGES)
def test_arrays_that_are_not_images_are_refused(no_weights, case):
    image, fragments = NOT_IMAGES[case]
    with pytest.raises(ValueError) as error:
        vdsr_jax.upscale(image, 2, weights=no_weights)
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.parametrize("scale", [0.5, 0, -2, 17, float("nan"), float("inf"), True, "2", None])
def test_scales_outside_1_to_16_are_refused(no_weights, scale):
    with pytest.raises(ValueError, match="scale must be a number from 1 to 16"):
        vdsr_jax.upscale(GOOD, scale, weights=no_weights)


def test_scales_at_the_limits_and_numpy_numbers(tiny):
    assert vdsr_jax.upscale(GOOD, 1, weights=tiny[0]).shape == (8, 8, 3)
    assert vdsr_jax.upscale(GOOD[:2, :3], 16, weights=tiny[0]).shape == (32, 48, 3)
    assert vdsr_jax.upscale(GOOD, np.float32(1.5), weights=tiny[0]).shape == (12, 12, 3)


@pytest.mark.parametrize("tile,message", [(10.5, "integer"), (True, "integer"), (6, "receptive field")])
def test_bad_tiles_are_refused(tiny, tile, message):
    with pytest.raises(ValueError, match=message):
        vdsr_jax.upscale(GOOD, 2, weights=tiny[0], tile=tile)


def test_tiles_do_not_change_the_result(tiny):
    pixels = picture((40, 33, 3))
    np.testing.assert_array_equal(vdsr_jax.upscale(pixels, 2, weights=tiny[0], tile=16),
                                  vdsr_jax.upscale(pixels, 2, weights=tiny[0]))


def test_bad_weights(tmp_path, tiny):
    with pytest.raises(TypeError, match="weights must be None, a path or a"):
        vdsr_jax.upscale(GOOD, 2, weights={"params": tiny[2]})
    with pytest.raises(CheckpointError, match="does not exist"):
        vdsr_jax.upscale(GOOD, 2, weights=tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="layer conv_0/kernel"):
        vdsr_jax.upscale(GOOD, 2, weights=(VDSR(depth=3, features=4), tiny[2]))


@pytest.mark.skipif(pretrained.DEFAULT_PATH.is_file(), reason="weights ship with this version")
def test_no_bundled_weights_says_to_give_a_path():
    for call in (lambda: vdsr_jax.load(), lambda: vdsr_jax.upscale(GOOD, 2)):
        with pytest.raises(pretrained.NoBundledWeights, match=r"no pretrained weights ship.*weights=path"):
            call()


# ---- weights: every form, loaded once ------------------------------------------------------------------

def test_load_takes_every_form(tmp_path, tiny):
    from safetensors.numpy import save_file

    from vdsr_jax.torch_weights import flax_to_torch

    npz, folder, params = tiny
    workdir = tmp_path / "run"
    checkpoint.save_model(workdir / "checkpoints", params, TINY, step=7)  # where vdsr-train keeps them
    ours = pretrained.export_pretrained(params, TINY, tmp_path / "w.safetensors", {})
    save_file(flax_to_torch(params), tmp_path / "state_dict.safetensors")  # pytorch-vdsr's names, OIHW
    for path in (npz, folder, workdir, str(npz), ours, tmp_path / "state_dict.safetensors"):
        model, loaded = vdsr_jax.load(path)
        assert model_spec(model) == model_spec(TINY), path
        jax.tree.map(np.testing.assert_array_equal, loaded, params)
    assert vdsr_jax.load(npz, compute_dtype="bfloat16")[0].dtype == jnp.bfloat16


def test_load_takes_a_torch_file_and_its_notes_are_warnings(tmp_path, tiny):
    torch = needs_torch()
    from vdsr_jax.torch_weights import flax_to_torch

    params = tiny[2]
    state = {name: torch.from_numpy(array) for name, array in flax_to_torch(params).items()}
    torch.save(state, tmp_path / "model.pth")
    model, loaded = vdsr_jax.load(tmp_path / "model.pth")
    assert model_spec(model) == model_spec(TINY)
    jax.tree.map(np.testing.assert_array_equal, loaded, params)
    torch.save({"params": {k: v * 0 for k, v in state.items()}, "params_ema": state}, tmp_path / "basicsr.pth")
    with pytest.warns(UserWarning, match="holds params and params_ema; converted params_ema"):
        _, loaded = vdsr_jax.load(tmp_path / "basicsr.pth")
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_the_three_forms_give_one_result(tiny):
    npz, folder, params = tiny
    pixels = picture((14, 11, 4))
    out = vdsr_jax.upscale(pixels, 2, weights=npz)
    np.testing.assert_array_equal(vdsr_jax.upscale(pixels, 2, weights=folder), out)
    np.testing.assert_array_equal(vdsr_jax.upscale(pixels, 2, weights=(TINY, params)), out)


def test_weights_are_loaded_once_while_unchanged(tmp_path, tiny, monkeypatch):
    loads = []
    monkeypatch.setattr(api, "load_weights", lambda *a: loads.append(a[0]) or weight_forms.load_weights(*a))
    npz = tmp_path / "w.npz"
    npz.write_bytes(tiny[0].read_bytes())
    pixels = picture((9, 8))
    first = vdsr_jax.upscale(pixels, 2, weights=npz)
    for _ in range(3):
        np.testing.assert_array_equal(vdsr_jax.upscale(pixels, 2, weights=str(npz)), first)
    assert loads == [npz]
    os.utime(npz, ns=(npz.stat().st_atime_ns, npz.stat().st_mtime_ns + 10**9))  # rewritten
    vdsr_jax.upscale(pixels, 2, weights=npz)
    vdsr_jax.upscale(pixels, 2, weights=tiny[1])
    vdsr_jax.upscale(pixels, 2, weights=tiny[1])
    assert loads == [npz, npz, tiny[1]]


def test_a_checkpoint_added_to_a_workdir_is_seen(tmp_path, tiny):
    workdir = tmp_path / "run"
    checkpoint.save_model(workdir / "checkpoints", tiny[2], TINY, step=1)
    pixels = picture((9, 8, 3))
    before = vdsr_jax.upscale(pixels, 2, weights=workdir)
    later = jax.tree.map(lambda p: -p, tiny[2])
    checkpoint.save_model(workdir / "checkpoints" / "next", later, TINY, step=2)  # a step folder of its own
    os.replace(workdir / "checkpoints" / "next" / "2", workdir / "checkpoints" / "2")
    after = vdsr_jax.upscale(pixels, 2, weights=workdir)
    np.testing.assert_array_equal(after, vdsr_jax.upscale(pixels, 2, weights=(TINY, later)))
    assert np.any(after != before)


def test_a_pair_is_checked_once(tiny, monkeypatch):
    checks = []
    monkeypatch.setattr(api, "validate_params", lambda *a: checks.append(1))
    pair = (TINY, jax.tree.map(lambda p: p * 1, tiny[2]))
    for _ in range(3):
        vdsr_jax.upscale(GOOD, 2, weights=pair)
    assert len(checks) == 1


# ---- the package's names --------------------------------------------------------------------------------

def test_all_names_are_their_modules_objects():
    from vdsr_jax import color, metrics, model, protocol, resize

    homes = {"upscale": api, "load": api, "imresize": resize, "rgb2ycbcr": color, "ycbcr2rgb": color,
             "psnr": metrics, "ssim": metrics, "evaluate_images": protocol, "VDSR": model, "create_model": model}
    assert sorted(vdsr_jax.__all__) == sorted(homes)
    for name, module in homes.items():
        assert getattr(vdsr_jax, name) is getattr(module, name)
    assert set(vdsr_jax.__all__) <= set(dir(vdsr_jax))
    assert callable(vdsr_jax.upscale)  # not the command's module, which is upscale_files
    with pytest.raises(AttributeError, match="no attribute 'load_pretrained'"):
        vdsr_jax.load_pretrained  # noqa: B018 - folded into load


@pytest.mark.slow
def test_import_is_light_and_star_import_gives_all():
    code = ("import sys, vdsr_jax; heavy = [m for m in ('jax', 'flax', 'PIL', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy; assert set(vdsr_jax.__all__) <= set(dir(vdsr_jax)); "
            "from vdsr_jax import *; print(upscale.__module__, VDSR.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["vdsr_jax.api", "vdsr_jax.model"]


# ---- the documentation's examples ------------------------------------------------------------------------

PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


@pytest.mark.slow
def test_the_documented_examples_run(tmp_path, tiny, monkeypatch):
    """Every Python block of docs/api.md, in order in one namespace, then the README's: run as written, in a
    folder that holds the files they name (the weights are the small random VDSR)."""
    monkeypatch.chdir(tmp_path)
    checkpoint.save_model(tmp_path / "ckpt" / "pytorch_vdsr", tiny[2], TINY)
    Image.fromarray(picture((120, 160, 3))).save("photo.jpg", quality=95)
    (tmp_path / "Set5").mkdir()
    for seed, name in enumerate(["baby", "bird", "butterfly"]):
        Image.fromarray(picture((36, 30, 3), seed=seed)).save(f"Set5/{name}.png")
    blocks = PYTHON_BLOCK.findall((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))
    readme = PYTHON_BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 6 and len(readme) == 1
    namespace = {}
    for block in blocks + readme:
        exec(compile(block, "docs/api.md", "exec"), namespace)  # noqa: S102 - the repository's own examples
    assert Image.open("photo_x2.png").size == (320, 240)
    assert namespace["big"].shape == (420, 560, 3) and namespace["grey"].shape == (240, 320)
    assert namespace["unit"].dtype == np.float64 and namespace["noisy"].shape == (64, 64, 3)
    tiled = TiledVDSR(TINY, tiny[2], tile=64)(namespace["y_bicubic"])  # "the Y that upscale computes tile by tile"
    np.testing.assert_allclose(namespace["y_vdsr"], tiled, atol=1e-5)
    assert sorted(p.name for p in tmp_path.glob("*_x3.png")) == ["baby_x3.png", "bird_x3.png", "butterfly_x3.png"]
    assert namespace["row"]["images"] == 3


def test_loading_a_checkpoint_folder_logs_no_routine_warnings(tiny, caplog):
    """orbax warns through absl on every read-only load; the API's user did not ask for that."""
    caplog.set_level("INFO")
    vdsr_jax.load(tiny[1])
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
