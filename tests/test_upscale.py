"""`python -m vdsr_jax.upscale_files`: every kind of image against whole-image VDSR on MATLAB-bicubic input, and
every kind of bad input against the one-line-error standard (run as a user would, in a subprocess)."""
import io
import math
import os
import struct
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tifffile
from conftest import assert_one_error_line, png_chunks, run_cli
from PIL import Image, ImageOps, PngImagePlugin

from vdsr_jax import checkpoint, media, upscale_files
from vdsr_jax.color import rgb2ycbcr, ycbcr2rgb
from vdsr_jax.resize import imresize
from vdsr_jax.model import VDSR

TINY = VDSR(depth=3, features=8)  # the CLI's behaviour does not depend on the weights; this one runs fast


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(checkpoint folder, params) of a small random VDSR, scaled so its residuals are of a natural size."""
    params = jax.tree.map(lambda p: p / 2, TINY.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))["params"])
    return checkpoint.save_model(tmp_path_factory.mktemp("tiny") / "ckpt", params, TINY), params


def picture(height, width, channels, dtype=np.uint8, seed=0):
    """Smooth colour gradients plus texture, as integer samples."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = [0.5 + 0.4 * np.sin(yy / (5 + c) + xx / (7 - c)) for c in range(channels)]
    values = np.clip(np.stack(base, -1) + 0.05 * rng.standard_normal((height, width, channels)), 0, 1)
    return np.round(values * np.iinfo(dtype).max).astype(dtype)


def expected_upscale(pixels, scale, params):
    """Whole-image reference: MATLAB bicubic of the YCbCr (and alpha) image, VDSR on all of Y at once; a
    grey image is its own Y (no YCbCr), as the MATLAB scripts treat one-channel images."""
    top = np.iinfo(pixels.dtype).max
    values = pixels.astype(np.float64) / top
    channels = values.shape[-1]
    grey = channels in (1, 2)
    colour = values[..., :1] if grey else values[..., :3]
    upscaled = imresize(colour if grey else rgb2ycbcr(colour), scale)
    y = np.asarray(TINY.apply({"params": params}, jnp.asarray(upscaled[None, ..., :1], jnp.float32))[0], np.float64)
    result = y if grey else ycbcr2rgb(np.concatenate([y, upscaled[..., 1:]], -1))
    if channels in (2, 4):
        result = np.concatenate([result, imresize(values[..., -1], scale)[..., None]], -1)
    return np.round(np.clip(result, 0, 1) * top)


def save(path, pixels):
    media.write_image(path, pixels)
    return path


# ---- what the output must be -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,channels,dtype,scale,output", [
    ("rgb.png", 3, np.uint8, 3.7, "out.png"),
    ("grey.png", 1, np.uint8, 2, "out.png"),
    ("rgba.png", 4, np.uint8, 1.5, "out.png"),
    ("grey_alpha.png", 2, np.uint8, 3, "out.png"),
    ("rgb16.png", 3, np.uint16, 2, "out.png"),
    ("rgba16.tif", 4, np.uint16, 1, "out.tif"),
    ("grey16.png", 1, np.uint16, 2.5, "out.png"),
    ("rgb.webp", 3, np.uint8, 2, "out.bmp"),  # a lossless output, to compare exactly
])
def test_output_equals_whole_image_vdsr(tmp_path, tiny, name, channels, dtype, scale, output):
    folder, params = tiny
    source = save(tmp_path / name, picture(37, 29, channels, dtype))
    pixels = media.read_image(source)  # WebP is lossy: compare with what was stored
    assert upscale_files.main([str(source), "--checkpoint", str(folder), "--scale", str(scale), "-o",
                               str(tmp_path / output), "--tile", "16"]) == 0  # 16-pixel tiles: many of them
    out = media.read_image(tmp_path / output)
    assert out.dtype == dtype
    assert out.shape == (math.ceil(scale * 37), math.ceil(scale * 29), pixels.shape[-1])
    assert np.abs(out - expected_upscale(pixels, scale, params)).max() <= 1
    if dtype == np.uint16:
        inner = out[(out > 0) & (out < 65535)]
        assert (inner % 257 != 0).mean() > 0.9  # real 16-bit values, not 8-bit ones widened


def test_compare_and_single_file_output(tmp_path, tiny):
    folder, params = tiny
    pixels = picture(20, 30, 3)
    target = tmp_path / "big.jpg"
    assert upscale_files.main([str(save(tmp_path / "small.png", pixels)), "--checkpoint", str(folder),
                               "--scale", "2", "-o", str(target), "--compare"]) == 0
    with Image.open(target) as im:
        assert (im.format, im.size) == ("JPEG", (60, 40))
    compare = np.asarray(Image.open(tmp_path / "big_compare.png"))
    strip = compare.shape[0] - 40
    assert compare.shape[1] > 120 and strip > 0
    assert (compare[:strip] < 128).any()  # a label was drawn
    bicubic = np.round(np.clip(ycbcr2rgb(imresize(rgb2ycbcr(pixels / 255.0), 2)), 0, 1) * 255)
    assert np.abs(compare[strip:, :60] - bicubic).max() <= 1
    assert np.abs(compare[strip:, -60:] - expected_upscale(pixels, 2, params)).max() <= 1


@pytest.mark.slow
def test_folder_input_names_outputs(tmp_path, tiny):
    folder, _ = tiny
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.bmp"):
        save(tmp_path / "in" / name, picture(9, 8, 3))
    status, stdout, _ = run_cli("upscale_files", tmp_path / "in", "--checkpoint", folder, "--scale", "3", "-o",
                                tmp_path / "out")
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_x3.png", "b_x3.bmp"]
    assert len(stdout.splitlines()) == 2


@pytest.mark.parametrize("where", ["eXIf", "eXIf after the pixels", "XMP", "raw profile"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow(tmp_path, orientation, where):
    """PNG orientation wherever Pillow reads it: an eXIf chunk before or after the image data, XMP's
    tiff:Orientation, ImageMagick's "Raw profile type exif" text."""
    pixels = picture(6, 11, 3)
    exif = Image.Exif()
    exif[media.EXIF_ORIENTATION] = orientation
    if where.startswith("eXIf"):
        Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif)
    else:
        info = PngImagePlugin.PngInfo()
        if where == "XMP":
            info.add_itxt("XML:com.adobe.xmp", f'<x:xmpmeta><rdf:Description tiff:Orientation="{orientation}"/>'
                                               '</x:xmpmeta>')
        else:
            raw = exif.tobytes()
            info.add_text("Raw profile type exif", f"\nexif\n{len(raw)}\n{raw.hex()}")
        Image.fromarray(pixels).save(tmp_path / "o.png", pnginfo=info)
    if where == "eXIf after the pixels":  # allowed by the PNG 3rd edition; Pillow finds it only after decoding
        data = (tmp_path / "o.png").read_bytes()
        chunks = png_chunks(data)
        exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
        chunks.remove(exif_chunk)
        chunks.insert(len(chunks) - 1, exif_chunk)  # just before IEND
        (tmp_path / "o.png").write_bytes(data[:8] + b"".join(chunks))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(media.read_image(tmp_path / "o.png"), expected)


def test_exif_rotated_jpeg_is_upscaled_upright(tmp_path, tiny):
    folder, _ = tiny
    exif = Image.Exif()
    exif[media.EXIF_ORIENTATION] = 6  # stored 30 wide, 20 high; shown rotated: 20 wide, 30 high
    Image.fromarray(picture(20, 30, 3)).save(tmp_path / "r.jpg", exif=exif)
    assert upscale_files.main([str(tmp_path / "r.jpg"), "--checkpoint", str(folder), "--scale", "2",
                               "-o", str(tmp_path / "r2.png")]) == 0
    assert Image.open(tmp_path / "r2.png").size == (40, 60)


def test_16bit_png_with_sub_filter_is_read_exactly(tmp_path):
    """PNG filters work per pixel (6 bytes in 16-bit RGB): a decoder with the wrong width garbles these rows."""
    pixels = picture(5, 7, 3, np.uint16)
    png = bytearray(media.encode_image(pixels, "PNG"))
    raw = pixels.astype(">u2").reshape(5, -1).view(np.uint8).astype(int)
    sub = np.concatenate([raw[:, :6], raw[:, 6:] - raw[:, :-6]], axis=1) % 256
    rows = np.concatenate([np.ones((5, 1), int), sub], axis=1).astype(np.uint8)
    data = zlib.compress(rows.tobytes())
    start = png.index(b"IDAT") - 4
    length = struct.unpack(">I", png[start:start + 4])[0]
    png[start:start + 12 + length] = struct.pack(">I", len(data)) + b"IDAT" + data + struct.pack(
        ">I", zlib.crc32(b"IDAT" + data))
    (tmp_path / "sub.png").write_bytes(bytes(png))
    np.testing.assert_array_equal(media.read_image(tmp_path / "sub.png"), pixels)
    np.testing.assert_array_equal(media.read_image(save(tmp_path / "t.tif", pixels)), tifffile.imread(tmp_path / "t.tif"))


# ---- bad input: one line, non-zero exit, no traceback, no partial file ------------------------------------

@pytest.fixture
def bad_files(tmp_path):
    good = save(tmp_path / "good.png", picture(12, 10, 3))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    tiny_image = save(tmp_path / "dot.png", picture(1, 1, 3))
    return {"good": good, "truncated": truncated, "not an image": text, "missing": tmp_path / "missing.png",
            "1×1": tiny_image}


@pytest.mark.slow
@pytest.mark.parametrize("kind,message", [("truncated", "damaged"), ("not an image", "not an image"),
                                          ("missing", "no such file"), ("1×1", "at least 2×2")])
def test_bad_image_file(tmp_path, tiny, bad_files, kind, message):
    out = tmp_path / "out.png"
    status, _, lines = run_cli("upscale_files", bad_files[kind], "--checkpoint", tiny[0], "--scale", "2", "-o", out)
    assert_one_error_line(status, lines, message, bad_files[kind].name)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


@pytest.mark.slow
def test_batch_goes_past_bad_files_and_lists_them(tmp_path, tiny, bad_files):
    out = tmp_path / "out"
    inputs = [bad_files[k] for k in ("truncated", "good", "not an image", "missing", "1×1")]
    status, stdout, lines = run_cli("upscale_files", *inputs, "--checkpoint", tiny[0], "--scale", "2", "-o", out)
    assert status == 1
    assert [p.name for p in out.iterdir()] == ["good_x2.png"]
    assert stdout.strip() == str(out / "good_x2.png")
    assert len(lines) == 5 and "4 of 5" in lines[-1]
    for line, path in zip(lines, [inputs[0], *inputs[2:]]):
        assert line.startswith("error: ") and path.name in line


@pytest.mark.slow
def test_damaged_metadata_gives_notes_not_library_warnings(tmp_path, tiny):
    """A PNG whose iCCP chunk holds 10 bytes (libpng warns "iCCP: too short" through imagecodecs' logger) and a
    JPEG whose EXIF IFD0 points a tag past its end (Pillow warns "Tag data larger than file"): both are
    upscaled; stderr holds the one note on the profile (a damaged profile is not written) and no library
    warning."""
    image = Image.fromarray(picture(12, 10, 3))
    image.save(tmp_path / "a.png")
    png = (tmp_path / "a.png").read_bytes()
    body = b"ICC profile\0\0" + zlib.compress(b"x" * 10)  # name, compression method 0 (PNG 11.3.2.3)
    chunk = len(body).to_bytes(4, "big") + b"iCCP" + body + zlib.crc32(b"iCCP" + body).to_bytes(4, "big")
    (tmp_path / "short_profile.png").write_bytes(png[:33] + chunk + png[33:])  # after the signature and IHDR
    # EXIF (TIFF structure, little-endian): IFD0 at 8 with one entry, Make (0x010F, ASCII) of 100 bytes at 5000
    ifd = (1).to_bytes(2, "little") + bytes.fromhex("0f01 0200") + (100).to_bytes(4, "little") + \
        (5000).to_bytes(4, "little") + bytes(4)
    image.save(tmp_path / "bad_exif.jpg", exif=b"Exif\0\0II*\0" + (8).to_bytes(4, "little") + ifd)
    out = tmp_path / "out"
    status, _, lines = run_cli("upscale_files", tmp_path / "short_profile.png", tmp_path / "bad_exif.jpg",
                               "--checkpoint", tiny[0], "--scale", "2", "-o", out)
    assert status == 0 and sorted(p.name for p in out.iterdir()) == ["bad_exif_x2.jpg", "short_profile_x2.png"]
    messages = [line for line in lines if "it/s]" not in line and "s/it]" not in line]  # (progress bars)
    assert messages == [f"note: {out / 'short_profile_x2.png'}: the colour profile of the input not kept "
                        "(damaged: no ICC profile header)"], messages


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["0", "0.5", "nan", "17", "two"])
def test_bad_scale(tmp_path, tiny, bad_files, scale):
    status, _, lines = run_cli("upscale_files", bad_files["good"], "--checkpoint", tiny[0], "--scale", scale, "-o",
                               tmp_path / "out.png")
    assert_one_error_line(status, lines, "scale")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_missing_and_mismatched_checkpoint(tmp_path, tiny, bad_files):
    status, _, lines = run_cli("upscale_files", bad_files["good"], "--checkpoint", tmp_path / "nowhere", "--scale", "2",
                               "-o", tmp_path / "out.png")
    assert_one_error_line(status, lines, "does not exist")

    mismatched = tmp_path / "mismatched"  # says depth 5, holds the 3 layers of TINY
    with ocp.CheckpointManager(mismatched, options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False)) as m:
        m.save(0, args=ocp.args.Composite(**{
            checkpoint.PARAMS: ocp.args.StandardSave(tiny[1]),
            checkpoint.MODEL: ocp.args.JsonSave({"depth": 5, "features": 8, "use_bias": False})}))
    status, _, lines = run_cli("upscale_files", bad_files["good"], "--checkpoint", mismatched, "--scale", "2",
                               "-o", tmp_path / "out.png")
    assert_one_error_line(status, lines, "layer conv_2")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_unwritable_output(tmp_path, tiny, bad_files):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be\n")
    for output in (blocker / "out.png", blocker / "folder"):
        status, _, lines = run_cli("upscale_files", bad_files["good"], "--checkpoint", tiny[0], "--scale", "2",
                                   "-o", output)
        assert_one_error_line(status, lines, str(blocker))
    taken = tmp_path / "out" / "good_x2.png"
    taken.mkdir(parents=True)  # the output name is a folder: found only when the finished file is renamed
    status, _, lines = run_cli("upscale_files", bad_files["good"], "--checkpoint", tiny[0], "--scale", "2",
                               "-o", tmp_path / "out")
    assert_one_error_line(status, lines, str(taken))
    assert os.listdir(tmp_path / "out") == ["good_x2.png"] and not os.listdir(taken)
    assert sorted(os.listdir(tmp_path)) == sorted(["file", "out", *(p.name for p in bad_files.values() if p.exists())])


def colour_managed(path) -> np.ndarray:
    """The file's pixels as a colour-managed viewer shows them: through its embedded ICC profile to sRGB
    (Pillow's ImageCms, LittleCMS); untagged pixels are sRGB already."""
    from PIL import ImageCms
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        profile = im.info.get("icc_profile")
        if profile:
            im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                           ImageCms.createProfile("sRGB"))
        return np.asarray(im).astype(int)


def test_a_photo_keeps_its_colour_profile_and_exif_across_formats(tmp_path, tiny):
    """The issue's instance: an Adobe RGB photo's colours, shown colour-managed, are those of the input only
    when the profile is kept (dropped, (200, 60, 60) shows as itself instead of about (219, 60, 60)); JPEG in,
    PNG and its comparison panel out; EXIF kept with Orientation 1 and the new size."""
    from test_media_images import adobe_rgb_profile, photo_exif
    _, params = tiny  # with no residual, VDSR gives bicubic: a flat image stays flat
    folder = checkpoint.save_model(tmp_path / "ckpt", jax.tree.map(jnp.zeros_like, params), TINY)
    flat = np.broadcast_to(np.array([200, 60, 60], np.uint8), (20, 30, 3))
    Image.fromarray(flat).save(tmp_path / "photo.jpg", quality=95, icc_profile=adobe_rgb_profile(),
                               exif=photo_exif(30, 20))
    assert upscale_files.main([str(tmp_path / "photo.jpg"), "--checkpoint", str(folder), "--scale", "2",
                               "-o", str(tmp_path / "photo.png"), "--compare"]) == 0
    shown = colour_managed(tmp_path / "photo.jpg")[0, 0]
    assert np.abs(shown - [200, 60, 60]).max() > 10  # the test can fail: the profile matters
    out = colour_managed(tmp_path / "photo.png")
    assert out.shape == (60, 40, 3)
    assert np.abs(out - shown).max() <= 1
    with Image.open(tmp_path / "photo.png") as im:
        exif = im.getexif()
        assert im.info["icc_profile"] == adobe_rgb_profile()
    assert exif[media.EXIF_ORIENTATION] == 1 and exif[0x010F] == "Camera maker"
    assert (exif.get_ifd(0x8769)[0xA002], exif.get_ifd(0x8769)[0xA003]) == (40, 60)
    with Image.open(tmp_path / "photo_compare.png") as im:
        assert im.info["icc_profile"] == adobe_rgb_profile()


def test_an_output_format_without_exif_says_so_in_one_note(tmp_path, tiny, capsys):
    from test_media_images import adobe_rgb_profile, photo_exif
    folder, params = tiny
    Image.fromarray(picture(20, 30, 3)).save(tmp_path / "p.tif", icc_profile=adobe_rgb_profile(),
                                              exif=photo_exif(30, 20))
    assert upscale_files.main([str(tmp_path / "p.tif"), "--checkpoint", str(folder), "--scale", "2",
                               "-o", str(tmp_path / "p.bmp")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {tmp_path / 'p.bmp'}: the EXIF of the input not kept (BMP holds none)"]
    assert media.read_image_and_metadata(tmp_path / "p.bmp")[1].icc_profile == adobe_rgb_profile()
    pixels = media.read_image(tmp_path / "p.tif")  # Pillow's TIFF: the pixels as written, rotated by EXIF 6
    np.testing.assert_array_equal(pixels, np.rot90(picture(20, 30, 3), k=-1))
    assert np.abs(media.read_image(tmp_path / "p.bmp") - expected_upscale(pixels, 2, params)).max() <= 1


def test_a_cmyk_tiff_is_upscaled_in_its_colours_not_as_transparent_rgba(tmp_path, tiny):
    """The issue's instance: K was taken for alpha, so the output was transparent and its colours inverted."""
    folder, params = tiny
    Image.fromarray(picture(20, 30, 3)).convert("CMYK").save(tmp_path / "x.tif")
    assert upscale_files.main([str(tmp_path / "x.tif"), "--checkpoint", str(folder), "--scale", "2",
                               "-o", str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "x.tif") as im:
        shown = np.asarray(im.convert("RGB"))  # Pillow's reading of the input
    out = media.read_image(tmp_path / "out" / "x_x2.tif")
    assert out.shape == (40, 60, 3)
    assert np.abs(out - expected_upscale(shown, 2, params)).max() <= 1


@pytest.mark.parametrize("kind", ["still", "pages"])
def test_an_output_written_meanwhile_by_another_process_is_kept_and_refused_in_one_line(
        tmp_path, tiny, kind, monkeypatch, capsys):
    """Another process writes the output after this one checked the name and before it publishes (both
    found it free): its file stays, and this command fails in one line (a still image and the frame path)."""
    if kind == "still":
        source, work = save(tmp_path / "in.png", picture(12, 10, 3)), "upscale_image"
    else:
        source, work = tmp_path / "in.tif", "upscale_frames"
        with tifffile.TiffWriter(source) as tif:
            for seed in range(2):
                tif.write(picture(12, 10, 3, seed=seed), photometric="rgb")
    target = tmp_path / f"out{source.suffix}"
    real = getattr(upscale_files, work)

    def finished_first_elsewhere(*args, **kwargs):
        if not target.exists():
            target.write_bytes(b"another process's output")
        return real(*args, **kwargs)

    monkeypatch.setattr(upscale_files, work, finished_first_elsewhere)
    status = upscale_files.main([str(source), "--checkpoint", str(tiny[0]), "--scale", "2", "-o", str(target)])
    assert_one_error_line(status, capsys.readouterr().err.strip().splitlines(), str(target), "already exists")
    assert target.read_bytes() == b"another process's output"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, target.name])
