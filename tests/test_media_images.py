"""Image files (vdsr_jax.media.images): round trips checked against Pillow's own decoding and the PNG
specification's header, the listing rule, refusals, atomic writes. EXIF orientation and a 16-bit PNG
with a Sub filter are in test_upscale; palette and colour-key transparency, and hidden files through the
commands, in test_inputs; multi-page TIFFs and animations in test_video."""
import errno
import io
import struct

import numpy as np
import pytest
import tifffile
from PIL import Image

from vdsr_jax.media import images as image_files
from vdsr_jax.errors import ImageError, OutputExists

# PNG colour type of C channels (PNG specification, 11.2.2 IHDR): grey, grey + alpha, truecolour, + alpha
PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}


def pixels(channels, dtype, shape=(13, 17), seed=0):
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (*shape, channels), dtype=dtype)


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from the IHDR chunk, which follows the 8-byte signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png_keeps_every_sample_at_8_and_16_bits(tmp_path, channels, dtype):
    image = pixels(channels, dtype)
    path = image_files.write_image(tmp_path / "x.png", image)
    data = path.read_bytes()
    assert png_header(data) == (17, 13, 8 * np.dtype(dtype).itemsize, PNG_COLOUR_TYPE[channels])
    decoded = image_files.read_image(path)
    assert decoded.dtype == dtype
    np.testing.assert_array_equal(decoded, image)
    if dtype == np.uint8:  # Pillow reads the same samples
        theirs = np.asarray(Image.open(path))
        np.testing.assert_array_equal(theirs.reshape(decoded.shape), image)


@pytest.mark.parametrize("channels, dtype", [(c, d) for d in (np.uint8, np.uint16) for c in (1, 2, 3, 4)])
def test_tiff_keeps_every_sample_and_marks_alpha_as_extra_sample(tmp_path, channels, dtype):
    """Every layout written is read back, 16-bit grey + alpha too (which Pillow cannot identify)."""
    image = pixels(channels, dtype, seed=1)
    path = image_files.write_image(tmp_path / "x.tif", image)
    np.testing.assert_array_equal(image_files.read_image(path), image)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert page.bitspersample == 8 * np.dtype(dtype).itemsize
        assert len(page.extrasamples) == (1 if channels in (2, 4) else 0)
    if dtype == np.uint8 and channels in (1, 3):
        np.testing.assert_array_equal(np.asarray(Image.open(path)).reshape(image.shape), image)


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_decodes_as_pillow_decodes_it(tmp_path, channels):
    smooth = np.cumsum(np.cumsum(np.random.default_rng(2).normal(0, 1, (32, 40, 1)), 0), 1)
    image = np.clip(smooth + [128, 100, 150][:channels], 0, 255).astype(np.uint8)  # smooth colour too
    path = image_files.write_image(tmp_path / "x.jpg", image)
    decoded = image_files.read_image(path)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.asarray(Image.open(path)).reshape(image.shape))
    assert np.abs(decoded.astype(int) - image).mean() < 2  # quality 95


def test_16_bit_samples_round_to_the_nearest_8_bit_value_for_8_bit_formats(tmp_path):
    values = np.array([0, 128, 129, 385, 386, 257 * 77, 65535], np.uint16)
    expected = np.array([0, 0, 1, 1, 2, 77, 255], np.uint8)  # nearest of v / 257
    np.testing.assert_array_equal(image_files.to_8_bits(values), expected)
    image = np.broadcast_to(values[None, :, None], (2, 7, 3))
    path = image_files.write_image(tmp_path / "x.bmp", image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), np.broadcast_to(expected[None, :, None], (2, 7, 3)))


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_into_a_format_without_it_is_refused_and_nothing_is_written(tmp_path, suffix):
    with pytest.raises(ImageError, match="cannot hold the image's alpha channel; write .png, .webp or .tif"):
        image_files.write_image(tmp_path / f"x{suffix}", pixels(4, np.uint8))
    assert not list(tmp_path.iterdir())


def test_sizes_a_format_cannot_store_and_unknown_suffixes_are_refused():
    image_files.check_encodable("x.jpg", 65500, 10, 3)
    with pytest.raises(ImageError, match="JPEG stores at most 65500 per side; write .png or .tif"):
        image_files.check_encodable("x.jpg", 10, 65501, 3)
    with pytest.raises(ImageError, match="WEBP stores at most 16383 per side"):
        image_files.check_encodable("x.webp", 16384, 10, 3)
    with pytest.raises(ImageError, match="unknown output format"):
        image_files.output_format("x.gif")


def test_one_bit_images_read_as_0_and_255(tmp_path):
    bits = np.random.default_rng(3).random((9, 11)) > 0.5
    Image.fromarray(bits).save(tmp_path / "b.png")
    Image.fromarray(bits).save(tmp_path / "b.bmp")
    for name in ("b.png", "b.bmp"):
        np.testing.assert_array_equal(image_files.read_image(tmp_path / name)[..., 0], bits * 255)


def test_files_that_are_not_images_of_8_or_16_bits_are_refused(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.zeros((4, 4), np.float32))
    (tmp_path / "t.png").write_bytes(b"hello")
    buffer = io.BytesIO()
    frames = [Image.new("L", (4, 4), v) for v in (0, 255)]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    (tmp_path / "a.gif").write_bytes(buffer.getvalue())
    for name, message in [("f.tif", "float32 samples are not supported"), ("t.png", "not an image file"),
                          ("a.gif", "holds 2 frames"), ("absent.png", "no such file")]:
        with pytest.raises(ImageError, match=message):
            image_files.read_image(tmp_path / name)
    with pytest.raises(ImageError, match="not a file"):
        image_files.read_image(tmp_path)


def test_listing_skips_hidden_names_and_sorts_by_path(tmp_path):
    for name in ("b.png", "A.JPG", "c.tiff", ".hidden.png", "._b.png", "notes.txt", "sub/d.bmp", "sub/.e.png",
                 ".thumbnails/f.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert names(image_files.list_images([tmp_path])) == ["A.JPG", "b.png", "c.tiff"]
    assert names(image_files.list_images([tmp_path], recursive=True)) == ["A.JPG", "b.png", "c.tiff", "sub/d.bmp"]
    assert names(image_files.list_images([tmp_path / "notes.txt", tmp_path / "sub"])) == ["notes.txt", "sub/d.bmp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no image files"):
        image_files.list_images([tmp_path / "empty"])


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with image_files.atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    image_files.write_image(target, pixels(3, np.uint8), overwrite=True)
    np.testing.assert_array_equal(image_files.read_image(target), pixels(3, np.uint8))
    assert sorted(tmp_path.iterdir()) == [target]


def test_two_writers_of_one_new_file_never_replace_each_other(tmp_path):
    """Two writers (as two processes that both found the name free) get temporary files of their own; the
    first to finish publishes, the second is refused and its data removed, the first's file untouched."""
    target = tmp_path / "x.png"
    with pytest.raises(OutputExists, match="x.png already exists .*--overwrite"):
        with image_files.atomic_output(target) as second_tmp:
            second_tmp.write_bytes(b"second")
            with image_files.atomic_output(target) as first_tmp:
                assert first_tmp != second_tmp and first_tmp.parent == tmp_path
                first_tmp.write_bytes(b"first")
            assert target.read_bytes() == b"first"
    assert target.read_bytes() == b"first" and sorted(tmp_path.iterdir()) == [target]


def test_overwrite_replaces_and_a_file_system_without_hard_links_still_refuses(tmp_path, monkeypatch):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    with image_files.atomic_output(target, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"

    def no_hard_links(source, destination):  # as on FAT or an SMB share
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(image_files.os, "link", no_hard_links)
    with pytest.raises(OutputExists):
        with image_files.atomic_output(target) as tmp:
            tmp.write_bytes(b"newer")
    assert target.read_bytes() == b"new"
    with image_files.atomic_output(tmp_path / "y.png") as tmp:
        tmp.write_bytes(b"y")
    assert (tmp_path / "y.png").read_bytes() == b"y" and sorted(tmp_path.iterdir()) == [target, tmp_path / "y.png"]


def test_a_tiff_only_tifffile_reads_keeps_its_orientation_and_damage_is_one_error(tmp_path):
    """16-bit grey + alpha with Orientation 6 (rotate 90° clockwise to display, TIFF 6.0 tag 274): read rotated
    as Pillow's exif_transpose would; a truncated such file is an ImageError, not a traceback."""
    from vdsr_jax.errors import ImageError

    image = pixels(2, np.uint16, seed=3)
    tifffile.imwrite(tmp_path / "r.tif", image, photometric="minisblack", extrasamples=["unassalpha"],
                     extratags=[(274, "H", 1, 6, False)])
    np.testing.assert_array_equal(image_files.read_image(tmp_path / "r.tif"), np.rot90(image, k=-1))
    (tmp_path / "cut.tif").write_bytes((tmp_path / "r.tif").read_bytes()[:40])
    with pytest.raises(ImageError, match="cut.tif: damaged or unreadable image"):
        image_files.read_image(tmp_path / "cut.tif")
