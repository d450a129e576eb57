"""Image files (vdsr_jax.media.images): round trips checked against Pillow's own decoding and the PNG
specification's header, the listing rule, refusals, atomic writes (never replacing what another process
wrote meanwhile); every TIFF photometric interpretation against Pillow (libtiff's conventions), the TIFF
specification or scikit-image; ICC profile and EXIF per output format, read back by Pillow, tifffile and the
formats' own chunk and segment structure. EXIF orientation, a 16-bit PNG with a Sub filter and metadata
through the command are in test_upscale; palette and colour-key transparency, and hidden files through the
commands, in test_inputs; multi-page TIFFs and animations in test_video."""
import errno
import functools
import io
import itertools
import struct

import numpy as np
import pytest
import tifffile
from conftest import png_chunks
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


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg", ".webp", ".bmp"])
def test_views_that_are_not_c_ordered_are_written_as_their_pixels(tmp_path, suffix):
    """A transposed or strided view (what numpy slicing and resizing give) is written as the pixels it shows:
    the same file as its C-ordered copy."""
    image = pixels(3, np.uint8, seed=2)
    view = image.transpose(1, 0, 2)[::-1]
    assert not view.flags.c_contiguous
    written = image_files.write_image(tmp_path / f"view{suffix}", view).read_bytes()
    assert written == image_files.write_image(tmp_path / f"copy{suffix}", view.copy()).read_bytes()


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
    (tmp_path / "cut.gif").write_bytes(buffer.getvalue()[:20])  # a GIF whose header Pillow cannot read
    for name, message in [("f.tif", "float32 samples are not supported"), ("t.png", "not an image file"),
                          ("a.gif", "holds 2 frames"), ("absent.png", "no such file"),
                          ("cut.gif", "damaged or unreadable image")]:
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


# ---- TIFF photometric interpretations ----------------------------------------------------------------------

def smooth(height, width, channels, seed=0):
    """8-bit smooth colours (JPEG-compressed files stay close to them)."""
    yy, xx = np.mgrid[0:height, 0:width]
    phase = np.random.default_rng(seed).uniform(0, 3, channels)
    return np.stack([127.5 + 100 * np.sin(yy / (6 + c) + xx / (9 - c) + phase[c]) for c in range(channels)],
                    -1).round().astype(np.uint8)


def tiff_bytes(data, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, data, **options)
    return buffer.getvalue()


def pillow_reading(data: bytes, mode: str) -> np.ndarray:
    """Pixels as Pillow (libtiff's conventions) reads the file and converts them to `mode`."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert(mode))


def test_a_cmyk_tiff_reads_as_pillow_converts_it_not_as_rgba(tmp_path):
    """The issue's instance: Pillow's own CMYK TIFF, read with K taken for alpha before."""
    rgb = smooth(9, 11, 3)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "x.tif")
    got = image_files.read_image(tmp_path / "x.tif")
    np.testing.assert_array_equal(got, pillow_reading((tmp_path / "x.tif").read_bytes(), "RGB"))
    np.testing.assert_array_equal(got, rgb)  # Pillow's RGB -> CMYK (K = 0) is undone exactly


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_cmyk_of_8_and_16_bits_any_planar_configuration_with_alpha(planar):
    cmyk = pixels(4, np.uint8, seed=4)
    alpha = pixels(1, np.uint8, seed=5)
    expected = pillow_reading(tiff_bytes(cmyk, photometric="separated"), "RGB")
    layout = (lambda a: np.moveaxis(a, -1, 0)) if planar == "separate" else (lambda a: a)
    got = image_files.decode_image(tiff_bytes(layout(np.dstack([cmyk, alpha])), photometric="separated",
                                              planarconfig=planar, extrasamples=["unassalpha"]))
    np.testing.assert_array_equal(got, np.dstack([expected, alpha]))
    got16 = image_files.decode_image(tiff_bytes(layout(cmyk.astype(np.uint16) * 257), photometric="separated",
                                                planarconfig=planar))
    assert got16.dtype == np.uint16 and np.abs(got16 / 257 - expected).max() <= 0.5 + 1e-9


def test_a_cmyk_jpeg_reads_as_pillow_converts_it(tmp_path):
    Image.fromarray(smooth(16, 24, 3)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)  # Adobe, inverted
    np.testing.assert_array_equal(image_files.read_image(tmp_path / "c.jpg"),
                                  pillow_reading((tmp_path / "c.jpg").read_bytes(), "RGB"))


def s15_fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def cmyk_profile() -> bytes:
    """A CMYK ICC v2 output profile (ICC.1:2001-04): header, an A2B0 lut8Type ('mft1', 6.5.7) mapping the 16
    corners of CMYK to Lab D50 (yellowish paper, inks darkening it; LittleCMS interpolates between them),
    and the media white point. Pillow cannot make one, and none is installed here."""
    corners = []
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # the first input channel varies slowest
        ink = min(1.0, 0.25 * (c + m + y) + 0.7 * k)
        corners += [round((95 - 80 * ink) * 2.55), 10 * (m - c) + 130, 10 * (y - c) + 133]  # 8-bit Lab v2
    identity = bytes(range(256))
    lut = (b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(map(s15_fixed16, (1, 0, 0, 0, 1, 0, 0, 0, 1)))
           + identity * 4 + bytes(corners) + identity * 3)
    d50 = s15_fixed16(0.9642) + s15_fixed16(1.0) + s15_fixed16(0.8249)
    tags = [(b"A2B0", lut), (b"wtpt", b"XYZ " + bytes(4) + d50)]
    start, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    header = (struct.pack(">I", start + len(data)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b"prtr" + b"CMYK"
              + b"Lab " + bytes(12) + b"acsp" + bytes(28) + d50 + bytes(48))  # size, version 2.1, class, spaces
    return header + struct.pack(">I", len(tags)) + table + data


@pytest.mark.parametrize("fmt", ["TIFF", "JPEG"])
def test_cmyk_with_its_profile_converts_through_it_and_the_profile_is_not_kept(fmt):
    """Pillow's ImageCms (LittleCMS) applied to Pillow's reading is the expectation; the naive conversion
    differs (paper white is not 255, 255, 255)."""
    from PIL import ImageCms
    cmyk = pixels(4, np.uint8, seed=13)
    buffer = io.BytesIO()
    if fmt == "TIFF":
        tifffile.imwrite(buffer, cmyk, photometric="separated", iccprofile=cmyk_profile())
    else:
        Image.fromarray(cmyk, "CMYK").save(buffer, format="JPEG", quality=95, icc_profile=cmyk_profile())
    got, metadata = image_files.decode_image_and_metadata(buffer.getvalue())
    with Image.open(buffer) as im:
        assert im.mode == "CMYK"
        expected = np.asarray(ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(cmyk_profile())),
                                                        ImageCms.createProfile("sRGB"), outputMode="RGB",
                                                        flags=ImageCms.Flags.NOOPTIMIZE))  # no lookup table
        naive = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(got, expected)
    assert np.abs(got.astype(int) - naive).max() > 30
    assert metadata.icc_profile is None  # the pixels are sRGB now


def test_separated_inks_other_than_cmyk_are_refused_by_name():
    with pytest.raises(ImageError, match="SEPARATED with 4 inks other than CMYK"):
        image_files.decode_image(tiff_bytes(pixels(4, np.uint8), photometric="separated",
                                            extratags=[(332, "H", 1, 2, True)]))  # InkSet 2: not CMYK


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.uint16])
def test_min_is_white_is_inverted(dtype):
    """TIFF 6.0 PhotometricInterpretation 0: 0 is white. Pillow's reading for 1 and 8 bits; the definition
    (top - v) for 16 bits, which Pillow leaves as stored."""
    grey = pixels(1, np.uint16, seed=6)[..., 0]
    samples = grey > 30000 if dtype is bool else (grey >> 8).astype(np.uint8) if dtype is np.uint8 else grey
    data = tiff_bytes(samples, photometric="miniswhite")
    got = image_files.decode_image(data)[..., 0]
    if dtype is np.uint16:
        np.testing.assert_array_equal(got, 65535 - grey)
    else:
        np.testing.assert_array_equal(got, pillow_reading(data, "L"))


@pytest.mark.parametrize("bits", [1, 4, 8])
def test_palette_colours_as_pillow_looks_them_up(bits):
    rng = np.random.default_rng(7)
    colormap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)  # tifffile writes 256 entries for 1-4 bits
    indices = rng.integers(0, 2 ** bits, (13, 17), dtype=np.uint8)
    data = tiff_bytes(indices, photometric="palette", colormap=colormap, bitspersample=bits)
    np.testing.assert_array_equal(image_files.decode_image(data), pillow_reading(data, "RGB"))


def test_a_grey_palette_reads_grey():
    levels = (np.arange(256, dtype=np.uint16)[::-1] * 257)  # inverted grey ramp
    data = tiff_bytes(pixels(1, np.uint8)[..., 0], photometric="palette", colormap=np.stack([levels] * 3))
    got = image_files.decode_image(data)
    assert got.shape[-1] == 1
    np.testing.assert_array_equal(got[..., 0], pillow_reading(data, "L"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_planar_configuration_separate_reads_as_contiguous(dtype):
    image = pixels(4, dtype, seed=8)
    separate = tiff_bytes(np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate",
                          extrasamples=["unassalpha"])
    np.testing.assert_array_equal(image_files.decode_image(separate), image)


def test_extra_samples_associated_alpha_unpremultiplied_unspecified_dropped():
    """TIFF 6.0 ExtraSamples: 1 = associated (premultiplied) alpha, 2 = unassociated, 0 = unspecified data,
    as Pillow reads them (RGBa -> RGBA, RGBA, RGBX -> RGB)."""
    image = pixels(4, np.uint8, seed=9)
    premultiplied = np.dstack([(image[..., :3].astype(int) * image[..., 3:] // 255).astype(np.uint8),
                               image[..., 3:]])
    data = tiff_bytes(premultiplied, photometric="rgb", extrasamples=["assocalpha"])
    got = image_files.decode_image(data).astype(int)
    expected = pillow_reading(data, "RGBA").astype(int)
    np.testing.assert_array_equal(got[..., 3], expected[..., 3])
    assert np.abs(got - expected).max() <= 1  # Pillow divides in integers, this rounds
    data = tiff_bytes(image, photometric="rgb", extrasamples=["unspecified"])
    np.testing.assert_array_equal(image_files.decode_image(data), pillow_reading(data, "RGB"))


@pytest.mark.parametrize("bits", [2, 4, 12])
def test_samples_of_other_bit_depths_scale_to_full_range(bits):
    """v of `bits` bits means v / (2^bits - 1) of full scale: Pillow's reading for 2 and 4 bits (to 8);
    12 bits, which Pillow leaves unscaled, to 16 by that definition."""
    top = 2 ** bits - 1
    samples = np.random.default_rng(10).integers(0, top + 1, (13, 17), dtype=np.uint16 if bits > 8 else np.uint8)
    data = tiff_bytes(samples, photometric="minisblack", bitspersample=bits)
    got = image_files.decode_image(data)[..., 0]
    if bits > 8:
        np.testing.assert_array_equal(got, np.round(samples / top * 65535).astype(np.uint16))
    else:
        np.testing.assert_array_equal(got, pillow_reading(data, "L"))


@pytest.mark.parametrize("subsampling", [(1, 1), (2, 2), (2, 1)])
def test_jpeg_ycbcr_tiff_decodes_as_pillow_decodes_it(subsampling):
    rgb = smooth(32, 48, 3)
    ycbcr = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    data = tiff_bytes(ycbcr, photometric="ycbcr", compression="jpeg", subsampling=subsampling)
    got = image_files.decode_image(data)
    np.testing.assert_array_equal(got, pillow_reading(data, "RGB"))
    assert np.abs(got.astype(int) - rgb).mean() < 3


def test_uncompressed_ycbcr_reads_as_pillow_converts_it_and_other_ranges_are_refused():
    rgb = smooth(9, 11, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).convert("YCbCr").save(buffer, format="TIFF")
    np.testing.assert_array_equal(image_files.decode_image(buffer.getvalue()),
                                  pillow_reading(buffer.getvalue(), "RGB"))
    studio = tiff_bytes(rgb, photometric="ycbcr",  # ReferenceBlackWhite of studio range (16-235)
                        extratags=[(532, 5, 6, (16, 1, 235, 1, 128, 1, 240, 1, 128, 1, 240, 1), True)])
    with pytest.raises(ImageError, match="YCBCR uncompressed"):
        image_files.decode_image(studio)


def srgb_of_lab(lab):
    """sRGB (0-255) of CIE L*a*b* (D50) by the definitions: CIE Lab -> XYZ (D50, scikit-image), Bradford
    adaptation D50 -> D65 (matrix from Lindbloom, brucelindbloom.com), XYZ -> sRGB (IEC 61966-2-1)."""
    from skimage import color
    bradford = np.array([[0.9555766, -0.0230393, 0.0631636], [-0.0282895, 1.0099416, 0.0210077],
                         [0.0122982, -0.0204830, 1.3299098]])
    return np.clip(color.xyz2rgb(color.lab2xyz(lab, illuminant="D50") @ bradford.T), 0, 1) * 255


def test_cielab_and_icclab_convert_to_srgb():
    rng = np.random.default_rng(11)  # colours inside sRGB's gamut
    lab = np.stack([rng.uniform(30, 80, (8, 9)), rng.uniform(-25, 25, (8, 9)), rng.uniform(-25, 25, (8, 9))], -1)
    lightness = np.round(lab[..., 0] * 255 / 100)
    a_b = np.round(lab[..., 1:]).astype(np.int8)
    cielab = np.dstack([lightness.astype(np.uint8), a_b.view(np.uint8)])  # a*, b* signed (TIFF 6.0, 23)
    icclab = np.dstack([lightness.astype(np.uint8), (a_b.astype(int) + 128).astype(np.uint8)])  # offset by 128
    expected = srgb_of_lab(np.dstack([lightness * 100 / 255, a_b]))
    got = image_files.decode_image(tiff_bytes(cielab, photometric="cielab"))
    assert np.abs(got - expected).max() <= 0.51  # rounded to 8 bits
    np.testing.assert_array_equal(image_files.decode_image(tiff_bytes(icclab, photometric="icclab")), got)
    with pytest.raises(ImageError, match="CIELAB with uint16 samples"):
        image_files.decode_image(tiff_bytes(cielab.astype(np.uint16) * 257, photometric="cielab"))


@pytest.mark.parametrize("photometric,data,fragment", [
    ("mask", np.zeros((8, 9), bool), "MASK \\(a transparency mask\\)"),
    (32803, np.zeros((8, 9), np.uint8), "CFA \\(raw colour filter array samples\\)"),
    (32845, np.zeros((8, 9, 3), np.float32), "LOGLUV"),
    ("itulab", np.zeros((8, 9, 3), np.uint8), "ITULAB is not supported"),
])
def test_interpretations_that_are_not_pictures_are_refused_by_name(photometric, data, fragment):
    with pytest.raises(ImageError, match=f"image: TIFF photometric interpretation {fragment}"):
        image_files.decode_image(tiff_bytes(data, photometric=photometric))


def test_floating_point_and_signed_samples_are_refused():
    for data, photometric in ((np.zeros((8, 9, 3), np.float32), "rgb"), (np.zeros((8, 9), np.int16), "minisblack")):
        with pytest.raises(ImageError, match=f"{data.dtype} samples are not supported"):
            image_files.decode_image(tiff_bytes(data, photometric=photometric))


# ---- ICC profile and EXIF ----------------------------------------------------------------------------------

ADOBE_RGB = dict(whitepoint=[0.3127, 0.3290, 1.0], primaries=[0.64, 0.33, 1.0, 0.21, 0.71, 1.0, 0.15, 0.06, 1.0],
                 gamma=563 / 256)  # Adobe RGB (1998) Color Image Encoding, 4.2-4.3: D65, these primaries, γ 2.2


@functools.cache  # one profile: its header holds the time it was made
def adobe_rgb_profile() -> bytes:
    """An ICC profile of Adobe RGB (1998), made by LittleCMS (imagecodecs) from the encoding's definition."""
    import imagecodecs
    return imagecodecs.cms_profile("rgb", **ADOBE_RGB)


def exif_with_thumbnail(exif: Image.Exif, thumbnail: bytes) -> bytes:
    """`exif.tobytes()` with an IFD1 holding a JPEG thumbnail (EXIF 2.32, 4.5.4), linked from IFD0's next
    pointer; Pillow writes no IFD1 itself."""
    from PIL import TiffImagePlugin
    raw = bytearray(exif.tobytes()[6:])
    order = "big" if raw[:2] == b"MM" else "little"
    ifd0 = int.from_bytes(raw[4:8], order)
    next_at = ifd0 + 2 + 12 * int.from_bytes(raw[ifd0:ifd0 + 2], order)
    at = len(raw) + len(raw) % 2
    ifd1 = TiffImagePlugin.ImageFileDirectory_v2(bytes(raw[:8]))
    ifd1[0x0201], ifd1[0x0202] = 0, len(thumbnail)  # JPEGInterchangeFormat (offset), its length
    ifd1[0x0201] = at + len(ifd1.tobytes(at))
    raw[next_at:next_at + 4] = at.to_bytes(4, order)
    return b"Exif\0\0" + bytes(raw.ljust(at, b"\0")) + ifd1.tobytes(at) + thumbnail


def photo_exif(width, height) -> Image.Exif:
    exif = Image.Exif()
    exif[image_files.EXIF_ORIENTATION] = 6
    exif[0x010F], exif[0x0110], exif[0x8298] = "Camera maker", "Model 1", "(c) someone"
    exif.get_ifd(0x8769).update({0x9003: "2026:01:02 03:04:05", 0xA002: width, 0xA003: height, 0x829A: 0.004})
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.5)})
    return exif


def a_photo(tmp_path):
    """A JPEG 30 wide, 20 high, shown rotated (Orientation 6), with an Adobe RGB profile, EXIF (IFD0, Exif and
    GPS IFDs) and a thumbnail."""
    thumbnail = io.BytesIO()
    Image.new("RGB", (6, 4), "red").save(thumbnail, format="JPEG")
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth(20, 30, 3)).save(path, quality=95, icc_profile=adobe_rgb_profile(),
                                            exif=exif_with_thumbnail(photo_exif(30, 20), thumbnail.getvalue()))
    return path


def test_reading_keeps_the_profile_and_the_picture_exif_marked_upright(tmp_path):
    from PIL import ExifTags
    path = a_photo(tmp_path)
    with Image.open(path) as im:
        assert im.getexif().get_ifd(ExifTags.IFD.IFD1)[0x0202] > 0  # Pillow sees the input's thumbnail
    pixels, metadata = image_files.read_image_and_metadata(path)
    assert pixels.shape == (30, 20, 3)
    assert metadata.icc_profile == adobe_rgb_profile()
    exif = Image.Exif()
    exif.load(metadata.exif)
    assert exif[image_files.EXIF_ORIENTATION] == 1
    assert (exif[0x010F], exif[0x8298]) == ("Camera maker", "(c) someone")
    assert exif.get_ifd(0x8769)[0x9003] == "2026:01:02 03:04:05"
    assert exif.get_ifd(0x8825)[2] == (52.0, 31.0, 12.5)
    assert not exif.get_ifd(ExifTags.IFD.IFD1)


def jpeg_segments(data: bytes) -> list[bytes]:
    """The APPn segments of a JPEG file (ITU T.81, B.1.1.4: FFxx marker, 2-byte length), up to the scan."""
    segments, pos = [], 2
    while data[pos] == 0xFF and data[pos + 1] != 0xDA:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segments.append(data[pos:pos + 2 + length])
        pos += 2 + length
    return segments


def riff_chunks(data: bytes) -> list[bytes]:
    """The chunk names of a WebP file (RIFF: 4-byte name, little-endian size, data padded to even)."""
    names, pos = [], 12
    while pos + 8 <= len(data):
        names.append(data[pos:pos + 4])
        pos += 8 + (int.from_bytes(data[pos + 4:pos + 8], "little") + 1) // 2 * 2
    return names


def raw_metadata(data: bytes, fmt: str) -> tuple[bool, bool]:
    """(profile present, EXIF present) as each format's own structure carries them."""
    if fmt == "PNG":
        kinds = [c[4:8] for c in png_chunks(data)]
        before_pixels = kinds[:kinds.index(b"IDAT")]
        return b"iCCP" in before_pixels, b"eXIf" in kinds
    if fmt == "JPEG":
        segments = jpeg_segments(data)
        return (any(s[:2] == b"\xff\xe2" and s[4:16] == b"ICC_PROFILE\0" for s in segments),
                any(s[:2] == b"\xff\xe1" and s[4:10] == b"Exif\0\0" for s in segments))
    if fmt == "WEBP":
        return b"ICCP" in riff_chunks(data), b"EXIF" in riff_chunks(data)
    with tifffile.TiffFile(io.BytesIO(data)) as tiff:  # TIFF: tifffile's reading of tags 34675, 34665
        tags = tiff.pages[0].tags
        return 34675 in tags, 34665 in tags and tags[34665].value.get("DateTimeOriginal") == "2026:01:02 03:04:05"


@pytest.mark.parametrize("fmt,dtype", [("PNG", np.uint16), ("JPEG", np.uint8), ("WEBP", np.uint8),
                                       ("TIFF", np.uint16)])
def test_each_format_that_can_holds_profile_and_exif_with_the_pixels_unchanged(tmp_path, fmt, dtype):
    from PIL import ExifTags
    _, metadata = image_files.read_image_and_metadata(a_photo(tmp_path))
    image = pixels(3, dtype, shape=(40, 60), seed=12)
    plain, data = image_files.encode_image(image, fmt), image_files.encode_image(image, fmt, metadata)
    assert raw_metadata(data, fmt) == (True, True) and raw_metadata(plain, fmt) == (False, False)
    np.testing.assert_array_equal(image_files.decode_image(data), image_files.decode_image(plain))
    with Image.open(io.BytesIO(data)) as im:  # Pillow, reading the output
        assert im.info["icc_profile"] == adobe_rgb_profile()
        exif = im.getexif()
    assert exif.get(image_files.EXIF_ORIENTATION, 1) == 1  # TIFF: absent, which is 1
    assert (exif[0x010F], exif[0x0110], exif[0x8298]) == ("Camera maker", "Model 1", "(c) someone")
    details = exif.get_ifd(ExifTags.IFD.Exif)
    assert details[0x9003] == "2026:01:02 03:04:05" and details[0x829A] == 0.004
    assert (details[0xA002], details[0xA003]) == (60, 40)  # PixelXDimension, PixelYDimension: the new size
    assert exif.get_ifd(ExifTags.IFD.GPSInfo) == {1: "N", 2: (52.0, 31.0, 12.5)}
    assert not exif.get_ifd(ExifTags.IFD.IFD1)  # no thumbnail of the old pixels


def bmp_v5_profile(data: bytes) -> bytes | None:
    """The profile a BMP file embeds, read as Microsoft's BITMAPV5HEADER documentation lays it out: the info
    header at byte 14, 124 bytes long; bV5CSType (byte 56) PROFILE_EMBEDDED, 'MBED' = 0x4D424544;
    bV5ProfileData (112), its offset from the header's start, and bV5ProfileSize (116)."""
    size, cs_type = int.from_bytes(data[14:18], "little"), int.from_bytes(data[70:74], "little")
    if size != 124 or cs_type != 0x4D424544:
        return None
    offset, length = int.from_bytes(data[126:130], "little"), int.from_bytes(data[130:134], "little")
    return data[14 + offset:14 + offset + length]


def test_bmp_keeps_the_profile_in_a_v5_header_and_notes_the_exif(tmp_path):
    """BMP holds an ICC profile (BITMAPV5HEADER) but no EXIF: the profile is written where the header says,
    the pixels decode (Pillow) as without it, and the note names the EXIF only. A grey BMP is stored as a
    palette of RGB greys, so a GRAY profile is noted, not written."""
    _, metadata = image_files.read_image_and_metadata(a_photo(tmp_path))
    assert image_files.kept_metadata("BMP", metadata, 3) == image_files.ImageMetadata(adobe_rgb_profile(), None)
    assert image_files.metadata_note(tmp_path / "x.bmp", metadata, 3) == \
        f"{tmp_path / 'x.bmp'}: the EXIF of the input not kept (BMP holds none)"
    assert image_files.metadata_note(tmp_path / "x.png", metadata, 3) is None
    assert "colour profile of the input not kept (its colour space" in \
        image_files.metadata_note(tmp_path / "x.png", metadata, 1)  # an RGB profile cannot describe grey
    image = pixels(3, np.uint8)
    data, plain = image_files.encode_image(image, "BMP", metadata), image_files.encode_image(image, "BMP")
    assert bmp_v5_profile(data) == adobe_rgb_profile() and bmp_v5_profile(plain) is None
    with Image.open(io.BytesIO(data)) as a, Image.open(io.BytesIO(plain)) as b:
        assert a.mode == b.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert image_files.decode_image_and_metadata(data)[1].icc_profile == adobe_rgb_profile()
    import imagecodecs
    grey = image_files.ImageMetadata(imagecodecs.cms_profile("gray"), None)
    assert image_files.metadata_note(tmp_path / "g.bmp", grey, 1) == \
        f"{tmp_path / 'g.bmp'}: the colour profile of the input not kept (BMP holds RGB profiles only)"
    assert bmp_v5_profile(image_files.encode_image(pixels(1, np.uint8), "BMP", grey)) is None


def test_an_rgb_profile_of_a_grey_palette_is_kept_as_read_and_noted_where_it_cannot_go(tmp_path):
    """A palette BMP whose colours are grey is read as grey; its profile is RGB, as a palette's colours are. It
    is kept as read, so that an output that stores RGB (BMP) carries it, and a grey PNG, which cannot (PNG 3rd
    edition, 11.3.2.3: a greyscale image takes a GRAY profile), says so in a note rather than dropping it in
    silence."""
    image = Image.fromarray(pixels(1, np.uint8)[..., 0], "P")
    image.putpalette([v for g in range(256) for v in (g, g, g)])
    (tmp_path / "grey.bmp").write_bytes(bmp_with_v5_profile(image, adobe_rgb_profile()))
    got, metadata = image_files.read_image_and_metadata(tmp_path / "grey.bmp")
    assert got.shape[-1] == 1 and metadata.icc_profile == adobe_rgb_profile()
    assert image_files.metadata_note(tmp_path / "x.png", metadata, 1) == \
        f"{tmp_path / 'x.png'}: the colour profile of the input not kept (its colour space is not the image's)"
    assert image_files.metadata_note(tmp_path / "x.bmp", metadata, 1) is None
    assert bmp_v5_profile(image_files.encode_image(got, "BMP", metadata)) == adobe_rgb_profile()
    with Image.open(io.BytesIO(image_files.encode_image(got, "PNG", metadata))) as im:
        assert im.mode == "L" and "icc_profile" not in im.info


def bmp_with_v5_profile(image: Image.Image, profile: bytes) -> bytes:
    """`image` as a BMP written by Pillow (a BITMAPINFOHEADER), given a BITMAPV5HEADER that embeds `profile`
    after the pixels, built from the documented layout (see `bmp_v5_profile`): the 84 more header bytes move
    the colour table and pixels, whose offset (bfOffBits, byte 10) and the file size (byte 2) grow with them;
    intent LCS_GM_IMAGES (4)."""
    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    old = buffer.getvalue()
    assert int.from_bytes(old[14:18], "little") == 40
    header = bytearray(old[14:54]) + bytearray(84)
    header[0:4] = (124).to_bytes(4, "little")
    header[56:60] = (0x4D424544).to_bytes(4, "little")
    header[108:112] = (4).to_bytes(4, "little")
    header[112:116] = (124 + len(old) - 54).to_bytes(4, "little")  # after the table and pixels
    header[116:120] = len(profile).to_bytes(4, "little")
    size, pixels_at = len(old) + 84 + len(profile), int.from_bytes(old[10:14], "little") + 84
    return b"BM" + size.to_bytes(4, "little") + bytes(4) + pixels_at.to_bytes(4, "little") + header + old[54:] + profile


def test_a_damaged_profile_is_noted_and_not_written(tmp_path):
    """Profile bytes that are no whole ICC profile (ICC.1:2022, 7.2: the header's size field, bytes 0-3, is the
    profile's length; bytes 36-39 are "acsp") are not written into any output, and the note says why: a size
    that is not the length (a profile cut short, or one whose header was damaged) and no header at all."""
    whole = adobe_rgb_profile()
    wrong_size = (len(whole) + 1000).to_bytes(4, "big") + whole[4:]
    cases = [(wrong_size, f"damaged: its header gives {len(whole) + 1000} bytes, the file {len(whole)}"),
             (whole[:100], "damaged: no ICC profile header"), (b"X" * len(whole), "damaged: no ICC profile header")]
    for icc, why in cases:
        metadata = image_files.ImageMetadata(icc, None)
        for fmt, suffix in [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif")]:
            assert image_files.metadata_note(tmp_path / f"x.{suffix}", metadata, 3) == \
                f"{tmp_path / f'x.{suffix}'}: the colour profile of the input not kept ({why})"
            data = image_files.encode_image(pixels(3, np.uint8), fmt, metadata)
            assert image_files.decode_image_and_metadata(data)[1].icc_profile is None
    assert image_files.metadata_note(tmp_path / "x.png", image_files.ImageMetadata(whole, None), 3) is None


def test_a_bmp_profile_cut_short_by_the_end_of_the_file_is_noted(tmp_path):
    """A BMP whose V5 header places the profile partly, or wholly, past the end of the file: read as far as it
    goes, so that the note says the profile is damaged, not dropped in silence."""
    image = Image.fromarray(pixels(3, np.uint8))
    data = bmp_with_v5_profile(image, adobe_rgb_profile())[:-200]
    _, metadata = image_files.decode_image_and_metadata(data)
    assert metadata.icc_profile == adobe_rgb_profile()[:-200]
    assert "colour profile of the input not kept (damaged: its header gives" in \
        image_files.metadata_note(tmp_path / "x.png", metadata, 3)
    beyond = bmp_with_v5_profile(image, adobe_rgb_profile())[:-len(adobe_rgb_profile())]  # none of it is there
    _, metadata = image_files.decode_image_and_metadata(beyond)
    assert image_files.metadata_note(tmp_path / "x.png", metadata, 3) == \
        f"{tmp_path / 'x.png'}: the colour profile of the input not kept (damaged: no ICC profile header)"


def test_a_bmp_profile_is_read(tmp_path):
    """A BMP with a BITMAPV5HEADER embedding a profile (a palette image, whose table follows the header) gives
    its profile to the PNG written from it, where Pillow reads it."""
    image = Image.fromarray(pixels(3, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    (tmp_path / "v5.bmp").write_bytes(bmp_with_v5_profile(image, adobe_rgb_profile()))
    got, metadata = image_files.read_image_and_metadata(tmp_path / "v5.bmp")
    assert metadata.icc_profile == adobe_rgb_profile()
    np.testing.assert_array_equal(got, np.asarray(image.convert("RGB")))
    image_files.write_image(tmp_path / "v5.png", got, metadata=metadata)
    with Image.open(tmp_path / "v5.png") as im:
        assert im.info["icc_profile"] == adobe_rgb_profile()


def test_a_tiffs_own_tags_are_its_exif_and_tifffiles_shape_description_is_not(tmp_path):
    """A TIFF's IFD0 descriptive tags and Exif IFD, as tifffile reads them, come back after a round trip
    through our writer; tifffile's JSON description and its 1/1 resolution alone are no EXIF."""
    image = pixels(3, np.uint8)
    _, metadata = image_files.decode_image_and_metadata(tiff_bytes(image, photometric="rgb"))
    assert metadata == image_files.NO_METADATA
    _, photo = image_files.read_image_and_metadata(a_photo(tmp_path))
    _, again = image_files.decode_image_and_metadata(image_files.encode_image(image, "TIFF", photo))
    assert again.icc_profile == photo.icc_profile
    with tifffile.TiffFile(io.BytesIO(image_files.encode_image(image, "TIFF", again))) as tiff:
        tags = tiff.pages[0].tags
        assert (tags[271].value, tags[272].value, tags[33432].value) == ("Camera maker", "Model 1", "(c) someone")
        assert tags[34665].value["ExposureTime"] == 0.004  # RATIONAL 1/250
        assert tags[34853].value["GPSLatitudeRef"] == "N"
        assert 270 not in tags and 274 not in tags


def test_a_grey_profile_stays_with_grey_pixels():
    import imagecodecs
    grey = imagecodecs.cms_profile("gray")
    image = pixels(1, np.uint16)
    data = image_files.encode_image(image, "PNG", image_files.ImageMetadata(icc_profile=grey))
    decoded, metadata = image_files.decode_image_and_metadata(data)
    np.testing.assert_array_equal(decoded, image)
    assert metadata.icc_profile == grey and grey[16:20] == b"GRAY"
    with Image.open(io.BytesIO(data)) as im:
        assert im.info["icc_profile"] == grey


def test_exif_over_what_a_jpeg_segment_holds_is_left_out_with_a_note(tmp_path):
    """ITU T.81, B.1.1.4: a segment's 2-byte length counts itself, so APP1 holds 65533 bytes at most."""
    exif = photo_exif(60, 40)
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\0\0\0" + b"x" * 70000  # UserComment
    metadata = image_files.ImageMetadata(exif=exif.tobytes())
    assert len(metadata.exif) > 65533
    note = image_files.metadata_note(tmp_path / "x.jpg", metadata, 3)
    assert note == (f"{tmp_path / 'x.jpg'}: the EXIF of the input not kept ({len(metadata.exif)} bytes, "
                    "over JPEG's 65533)")
    data = image_files.encode_image(pixels(3, np.uint8, shape=(40, 60)), "JPEG", metadata)
    assert raw_metadata(data, "JPEG") == (False, False)
    assert raw_metadata(image_files.encode_image(pixels(3, np.uint8, shape=(40, 60)), "PNG", metadata),
                        "PNG") == (False, True)
