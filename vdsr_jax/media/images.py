"""Still image files: the one place that lists folders, decodes, encodes and writes images.

Pixels are H×W×C numpy arrays of uint8 or uint16 samples, C = 1 (grey), 2 (grey + alpha), 3 (RGB) or
4 (RGBA), upright (EXIF orientation applied), with transparency kept however the file carries it (an
alpha channel, a palette entry or a PNG colour key), in RGB or grey (a TIFF's CMYK, palette, min-is-white,
YCbCr or Lab samples are converted: `tiff_page_pixels`). PNG goes through imagecodecs (libpng: 8 and 16
bits, colour keys), TIFF through tifffile, the 8-bit formats (JPEG, BMP, WebP, GIF) through Pillow. A
photo's ICC profile and EXIF are read beside the pixels (`read_image_and_metadata`, `ImageMetadata`) and
written with them where the format holds them (`encode_image`). Every write
goes to a temporary file in the target folder that takes the real name when complete, so a failure or a
kill never leaves a partial file under the real name, and (unless replacing is asked for) a file another
process wrote there meanwhile is never replaced.
"""
import contextlib
import dataclasses
import errno
import functools
import io
import numbers
import os
import secrets
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageCms, TiffImagePlugin, UnidentifiedImageError

from vdsr_jax.errors import ImageError, OutputExists, UserError
from vdsr_jax.media import bmp, gif

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LISTING_RULE = ("image files by suffix (" + ", ".join(IMAGE_SUFFIXES) + "), sorted by name; names starting "
                "with '.' (hidden files, macOS '._' metadata) are skipped")
EXIF_ORIENTATION = 0x0112
PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}  # Pillow mode of C channels


# ---- listing ---------------------------------------------------------------------------------------------

def is_image_name(relative: Path, suffixes=IMAGE_SUFFIXES) -> bool:
    """An image suffix (or one of `suffixes`), and no hidden part on the way (`._photo.png`, `.thumbnails/x.png`)."""
    return relative.suffix.lower() in suffixes and not any(p.startswith(".") for p in relative.parts)


def list_images(paths, recursive: bool = False, suffixes=IMAGE_SUFFIXES) -> list[Path]:
    """The given files as they are, and the image files inside the given folders (see LISTING_RULE).

    Folders are searched to any depth with `recursive`, else only directly inside. `suffixes` replaces
    IMAGE_SUFFIXES (e.g. to list videos). ImageError for a folder without such files.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            found = sorted((p for p in candidates if p.is_file() and is_image_name(p.relative_to(path), suffixes)),
                           key=lambda p: p.relative_to(path).as_posix())
            if not found:
                raise ImageError(f"{path} holds no image files ({', '.join(suffixes)}; hidden names skipped)")
            files.extend(found)
        else:
            files.append(path)  # read_image says if it is missing or not an image
    return files


# ---- reading ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ImageMetadata:
    """What a photo carries besides its pixels, for writing it again (`write_image(..., metadata=)`).

    `icc_profile`: the ICC colour profile's bytes as the file has them, whatever its colour space (an output
    takes it only where that is the colour space it stores: `kept_metadata`), damaged or empty where the
    file's are (`profile_damage`); None where the file has none and where its pixels were converted on
    reading (CMYK or Lab to sRGB: the profile no longer describes them). `exif`: EXIF as
    `PIL.Image.Exif.tobytes()` gives it (b"Exif\\0\\0", then a TIFF structure) with the tags that
    describe the picture (IFD0: description, make, model, resolution, date, artist, copyright; the Exif and
    GPS IFDs) and Orientation 1, since the pixels are read upright; the thumbnail (IFD1, a picture of the old
    pixels), the tags of the file's own encoding and the program that wrote it (Software, HostComputer) are
    left out. None where the file has none (resolution alone is none).
    """
    icc_profile: bytes | None = None
    exif: bytes | None = None


NO_METADATA = ImageMetadata()


def read_image(path) -> np.ndarray:
    """H×W×C uint8 or uint16 pixels of an image file (see the module docstring).

    Raises ImageError for a missing, damaged or unsupported file (floating-point or 32-bit samples, TIFF
    colour spaces listed in `tiff_page_pixels`), and for a file of several frames (an animation, a multi-page
    TIFF): those are not cut to their first frame.
    """
    return read_image_and_metadata(path)[0]


def read_image_and_metadata(path) -> tuple[np.ndarray, ImageMetadata]:
    """`read_image`'s pixels and the file's `ImageMetadata` (colour profile, EXIF)."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    return decode_image_and_metadata(data, name=str(path))


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """`read_image` for the bytes of a file; `name` is used in error messages."""
    return decode_image_and_metadata(data, name)[0]


# How the files of the formats Pillow reads here start: PNG, JPEG, BMP, GIF, WebP (RIFF, then WEBP at byte 8).
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a", b"RIFF")


def decode_image_and_metadata(data: bytes, name: str = "image") -> tuple[np.ndarray, ImageMetadata]:
    """`read_image_and_metadata` for the bytes of a file; `name` is used in error messages."""
    if data[:4] in TIFF_SIGNATURES:
        return _decode_tiff(data, name)
    try:
        with Image.open(io.BytesIO(data)) as im:
            _refuse_frames(getattr(im, "n_frames", 1), name)
            icc = im.info.get("icc_profile")
            if im.format == "PNG":
                pixels, exif = imagecodecs.png_decode(data), png_exif(data)
                if exif is None:  # in a text chunk: read as Pillow reads it (decoding it again)
                    exif = im.getexif()
            else:
                exif = im.getexif()
                pixels, icc = pillow_colours(im, name)
                if im.format in ("BMP", "GIF"):  # Pillow does not read their profiles
                    icc = (bmp if im.format == "BMP" else gif).read_icc_profile(data)
    except UnidentifiedImageError:
        if data.startswith(_SIGNATURES) and (data[:4] != b"RIFF" or data[8:12] == b"WEBP"):  # but unopenable
            raise ImageError(f"{name}: damaged or unreadable image (its header cannot be read)") from None
        raise ImageError(f"{name}: not an image file (PNG, JPEG, BMP, GIF, TIFF, WebP)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {e}") from None
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - codecs raise OSError, SyntaxError, zlib.error, ... for damaged files
        raise ImageError(f"{name}: damaged or unreadable image ({type(e).__name__}: {e})") from None
    return _upright(pixels, exif.get(EXIF_ORIENTATION, 1), exif, icc, name)


def profile_for(icc: bytes | None, channels: int) -> bytes | None:
    """`icc` where it is a whole ICC profile (`profile_damage`) whose colour space (ICC.1 header, bytes 16-19)
    is that of pixels of `channels` channels (GRAY for 1-2, RGB for 3-4), else None."""
    if not icc or profile_damage(icc):
        return None
    return icc if icc[16:20] == (b"GRAY" if channels <= 2 else b"RGB ") else None


def profile_damage(icc: bytes) -> str | None:
    """Why bytes said to be an ICC profile are none, or None: ICC.1:2022, 7.2, a profile starts with a 128-byte
    header that gives its size in bytes (bytes 0-3, big-endian) and the signature "acsp" (bytes 36-39)."""
    if len(icc) < 128 or icc[36:40] != b"acsp":
        return "damaged: no ICC profile header"
    size = int.from_bytes(icc[:4], "big")
    return None if size == len(icc) else f"damaged: its header gives {size} bytes, the file {len(icc)}"


def _refuse_frames(frames: int, name: str) -> None:
    if frames > 1:
        raise ImageError(f"{name}: holds {frames} frames (an animation or multi-page file); "
                         "only single-frame images are supported")


def _upright(pixels, orientation: int, exif: Image.Exif, icc: bytes | None, name: str):
    """(pixels upright as H×W×C, their ImageMetadata) from decoded samples and what the file carries."""
    pixels = orient(channels_last(pixels, name), orientation)
    return pixels, ImageMetadata(icc, picture_exif(exif))


# The IFD0 tags that describe the picture rather than its encoding or the program that wrote the file (EXIF
# 2.32, 4.6.4 A): ImageDescription, Make, Model, XResolution, YResolution, ResolutionUnit, DateTime, Artist,
# Copyright.
PICTURE_TAGS = (0x010E, 0x010F, 0x0110, 0x011A, 0x011B, 0x0128, 0x0132, 0x013B, 0x8298)
RESOLUTION_TAGS = (0x011A, 0x011B, 0x0128)
EXIF_IFD, GPS_IFD, INTEROP_IFD = 0x8769, 0x8825, 0xA005
PIXEL_X_DIMENSION, PIXEL_Y_DIMENSION = 0xA002, 0xA003


def picture_tags(exif: Image.Exif, size: tuple[int, int] | None = None) -> dict:
    """The picture tags of `exif` (see ImageMetadata) as {tag: value}, the Exif and GPS IFDs (and the Interop
    IFD inside the Exif IFD) as nested {tag: value} dicts; Orientation left out. With `size` (height, width),
    the Exif IFD's PixelXDimension and PixelYDimension, where present, give that size."""
    tags = {tag: exif[tag] for tag in PICTURE_TAGS if tag in exif}
    for ifd in (EXIF_IFD, GPS_IFD):
        values = dict(exif.get_ifd(ifd))
        if ifd == EXIF_IFD:  # Pillow gives the Interop pointer as an offset into the old bytes: nest its tags
            interop = values.pop(INTEROP_IFD, None) and exif.get_ifd(INTEROP_IFD)
            values.update({INTEROP_IFD: dict(interop)} if interop else {})
            if size is not None:
                values.update({tag: n for tag, n in ((PIXEL_X_DIMENSION, size[1]), (PIXEL_Y_DIMENSION, size[0]))
                               if tag in values})
        if values:
            tags[ifd] = values
    return tags


def picture_exif(exif: Image.Exif, size: tuple[int, int] | None = None) -> bytes | None:
    """EXIF bytes (`Image.Exif.tobytes`) of `picture_tags(exif, size)` with Orientation 1; None if none."""
    tags = picture_tags(exif, size)
    if not tags.keys() - set(RESOLUTION_TAGS):  # resolution alone (tifffile writes 1/1, no unit) says nothing
        return None
    kept = Image.Exif()
    kept.update(tags)
    kept[EXIF_ORIENTATION] = 1
    return kept.tobytes()


def load_exif(data: bytes) -> Image.Exif:
    """`Image.Exif` of EXIF bytes (with or without the b"Exif\\0\\0" header)."""
    exif = Image.Exif()
    exif.load(data)
    return exif


def exif_for(metadata: "ImageMetadata", size: tuple[int, int]) -> bytes | None:
    """EXIF bytes to write with pixels of `size` (H, W): `picture_exif` of `metadata`'s EXIF; None without."""
    return picture_exif(load_exif(metadata.exif), size) if metadata.exif else None


def exif_tags_for(metadata: "ImageMetadata", size: tuple[int, int]) -> dict | None:
    """TIFF tags to write with pixels of `size` (H, W): `picture_tags` of `metadata`'s EXIF; None without."""
    return picture_tags(load_exif(metadata.exif), size) if metadata.exif else None


TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little/big-endian TIFF and BigTIFF


def _decode_tiff(data: bytes, name: str):
    """`decode_image_and_metadata` of a TIFF, through tifffile (any layout it reads); its Orientation tag
    (274) applied, its EXIF read by Pillow (classic TIFF; BigTIFF keeps none)."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            _refuse_frames(len(tiff.pages), name)
            page = tiff.pages[0]
            pixels, icc = tiff_page_pixels(page, name)
            exif = tiff_exif(io.BytesIO(data), page)
            orientation = tiff_orientation(page)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises TiffFileError, ValueError, ... for damaged files
        raise ImageError(f"{name}: damaged or unreadable image ({type(e).__name__}: {e})") from None
    return _upright(pixels, orientation, exif, icc, name)


def tiff_orientation(page) -> int:
    """The Orientation tag (274) of a tifffile page; 1 where it has none."""
    tag = page.tags.get(EXIF_ORIENTATION)
    return int(tag.value) if tag else 1


def tiff_exif(file, page) -> Image.Exif:
    """The EXIF of a TIFF's first IFD (`page`, a tifffile page) read by Pillow from the binary `file` (classic
    TIFF; empty for BigTIFF); read its IFDs (`picture_exif`) while `file` is open."""
    exif = Image.Exif()
    if file.read(4) in TIFF_SIGNATURES[:2]:
        file.seek(0)
        exif.load_from_fp(file)
        if page.is_shaped:  # ImageDescription holds tifffile's JSON of the array's shape, not a description
            del exif[0x010E]
    return exif


# Photometric interpretations that are not pictures to upscale, and why (TIFF 6.0, DNG 1.4, TIFF/EP).
_NOT_PICTURES = {"MASK": "a transparency mask", "CFA": "raw colour filter array samples",
                 "LINEAR_RAW": "raw linear sensor samples", "LOGL": "floating-point log luminance",
                 "LOGLUV": "floating-point log luminance and chroma", "DEPTH_MAP": "a depth map",
                 "SEMANTIC_MASK": "a semantic mask"}
_COLOUR_SAMPLES = {"MINISWHITE": 1, "MINISBLACK": 1, "PALETTE": 1, "RGB": 3, "YCBCR": 3, "CIELAB": 3,
                   "ICCLAB": 3, "SEPARATED": 4}
_JPEG = 7  # TIFF Compression: JPEG ("new-style", TIFF Technical Note 2)


def tiff_page_pixels(page, name: str) -> tuple[np.ndarray, bytes | None]:
    """(H×W×C pixels, ICC profile or None) of one tifffile page, in the colours its photometric
    interpretation means: min-is-white inverted; palette indices looked up (8 bits, the top byte of each
    16-bit entry, as Pillow and libtiff read them; a grey palette gives grey); CMYK (separated, InkSet 1,
    4 inks) converted to RGB through its ICC profile where it has one, else as Pillow converts it,
    R = (1 - C)(1 - K); YCbCr decoded (JPEG-compressed by the JPEG codec; else with the TIFF defaults
    ReferenceBlackWhite 0/255/128/255/128/255 and Rec. 601 coefficients, as Pillow converts it); CIELab and
    ICCLab (8 bits, D50, the white point libtiff assumes) converted to sRGB by LittleCMS. Planar
    configuration separate is interleaved; samples of 2-7 bits are scaled to 8 and of 9-15 bits to 16
    (v · (2^out - 1) / (2^bits - 1), rounded); the first alpha extra sample is kept (associated alpha
    un-premultiplied), unspecified extra samples are dropped, as Pillow drops them. The profile is
    returned where the pixels are still in its colour space (not after a CMYK or Lab conversion).
    ImageError naming the interpretation for any other (mask, CFA, LogLuv, ITULab, other inks, chroma-
    subsampled or 16-bit uncompressed YCbCr, 16-bit Lab)."""
    photometric = getattr(page.photometric, "name", str(page.photometric))
    if photometric in _NOT_PICTURES:
        raise ImageError(f"{name}: TIFF photometric interpretation {photometric} ({_NOT_PICTURES[photometric]}) "
                         "is not an image to upscale")
    if photometric not in _COLOUR_SAMPLES:
        raise ImageError(f"{name}: TIFF photometric interpretation {photometric} is not supported")
    samples = page.asarray()
    if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1:
        samples = np.moveaxis(samples, -3, -1)
    if samples.ndim == 2:
        samples = samples[..., None]
    if samples.dtype == bool:  # 1 bit: 0/255, or palette indices 0/1
        samples = samples.astype(np.uint8) * (1 if photometric == "PALETTE" else 255)
    elif photometric != "PALETTE":
        samples = _full_range(samples, page.bitspersample)
    extras = [int(kind) for kind in page.extrasamples]
    split = samples.shape[-1] - len(extras)
    colours, extra = samples[..., :split], samples[..., split:]
    alphas = [i for i, kind in enumerate(extras) if kind in (1, 2)]  # associated, unassociated
    alpha = extra[..., alphas[:1]]
    icc = page.iccprofile
    if photometric == "SEPARATED":
        inkset = page.tags.get(332)  # InkSet: 1 = CMYK (the default), 2 = other inks
        if (inkset.value if inkset else 1) != 1 or colours.shape[-1] != 4:
            raise ImageError(f"{name}: TIFF photometric interpretation SEPARATED with {colours.shape[-1]} inks "
                             "other than CMYK is not supported")
    elif colours.shape[-1] != _COLOUR_SAMPLES[photometric]:
        raise ImageError(f"{name}: TIFF photometric interpretation {photometric} with {colours.shape[-1]} "
                         "colour samples is not supported")
    if photometric == "MINISWHITE":
        colours = np.iinfo(colours.dtype).max - colours
    elif photometric == "PALETTE":
        colours = _palette_colours(colours[..., 0], page.colormap)
    elif photometric == "SEPARATED":
        colours, icc = cmyk_to_rgb(colours, icc), None
    elif photometric == "YCBCR" and page.compression != _JPEG:
        colours = _ycbcr_to_rgb(colours, page, name)
    elif photometric in ("CIELAB", "ICCLAB"):
        colours, icc = _lab_to_rgb(colours, photometric, name), None
    if alpha.shape[-1] and extras[alphas[0]] == 1:  # associated: colour samples premultiplied by alpha
        colours = _unpremultiply(colours, alpha)
    return np.concatenate([colours, alpha.astype(colours.dtype)], axis=-1), icc


def _full_range(samples: np.ndarray, bits: int) -> np.ndarray:
    """Integer samples of `bits` bits scaled to the full range of 8 (2-7 bits) or 16 bits (9-15 bits)."""
    if not np.issubdtype(samples.dtype, np.unsignedinteger) or bits in (8, 16) or bits > 16:
        return samples  # channels_last refuses what is not 8 or 16 bits
    out = np.uint8 if bits < 8 else np.uint16
    return np.rint(samples * (np.iinfo(out).max / (2 ** bits - 1))).astype(out)


def _palette_colours(indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """H×W×3 (or ×1 for a grey palette) uint8 colours of palette `indices` in a 3×N 16-bit TIFF ColorMap;
    a colour map whose entries are all below 256 holds 8-bit values (a known writer error, read as libtiff
    reads it)."""
    entries = colormap if colormap.max() < 256 else colormap >> 8
    colours = np.moveaxis(entries.astype(np.uint8)[:, indices], 0, -1)
    return colours[..., :1] if (entries == entries[:1]).all() else colours


def cmyk_to_rgb(cmyk: np.ndarray, icc: bytes | None = None) -> np.ndarray:
    """H×W×3 RGB of H×W×4 uint8/uint16 CMYK samples: through `icc` (a CMYK ICC profile) to sRGB by LittleCMS,
    8 bits, where given; else as Pillow's convert("RGB") does, R = (1 - C)(1 - K), G and B alike, rounded."""
    if icc is not None:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        image = Image.fromarray(to_8_bits(cmyk), "CMYK")
        return np.asarray(ImageCms.profileToProfile(image, profile, _srgb(), outputMode="RGB",
                                                    flags=EXACT_TRANSFORM))
    top = np.iinfo(cmyk.dtype).max
    ink = cmyk.astype(np.float64) / top
    return np.rint((1 - ink[..., :3]) * (1 - ink[..., 3:]) * top).astype(cmyk.dtype)


def _ycbcr_to_rgb(ycbcr: np.ndarray, page, name: str) -> np.ndarray:
    """Uncompressed 8-bit YCbCr without chroma subsampling, at the TIFF defaults, to RGB (Pillow's convert)."""
    defaults = all(_tag_numbers(page, tag, default) == default for tag, default in (
        (532, (0, 255, 128, 255, 128, 255)), (529, (0.299, 0.587, 0.114))))  # ReferenceBlackWhite, coefficients
    if ycbcr.dtype != np.uint8 or tuple(page.subsampling or (1, 1)) != (1, 1) or not defaults:
        raise ImageError(f"{name}: TIFF photometric interpretation YCBCR uncompressed with chroma subsampling, "
                         "more than 8 bits or other than the default coefficients is not supported")
    return np.asarray(Image.fromarray(np.ascontiguousarray(ycbcr), "YCbCr").convert("RGB"))


def _tag_numbers(page, tag: int, default: tuple) -> tuple:
    """A RATIONAL tag's numbers (tifffile gives numerator, denominator pairs), rounded to 4 places; `default`
    where the page has none."""
    value = page.tags[tag].value if tag in page.tags else default
    if len(value) == 2 * len(default):
        value = np.divide(value[::2], value[1::2])
    return tuple(np.round(np.asarray(value, float), 4))


def _lab_to_rgb(lab: np.ndarray, photometric: str, name: str) -> np.ndarray:
    """8-bit CIELab (a*, b* signed) or ICCLab (a*, b* offset by 128) samples to sRGB, by LittleCMS from Lab D50."""
    if lab.dtype != np.uint8:
        raise ImageError(f"{name}: TIFF photometric interpretation {photometric} with {lab.dtype} samples "
                         "is not supported (8 bits)")
    if photometric == "ICCLAB":
        lab = lab ^ np.array([0, 128, 128], np.uint8)  # offset by 128 -> two's complement, as Pillow's LAB holds it
    image = Image.fromarray(np.ascontiguousarray(lab), "LAB")
    return np.asarray(ImageCms.profileToProfile(image, ImageCms.createProfile("LAB"), _srgb(), outputMode="RGB",
                                                flags=EXACT_TRANSFORM))


# LittleCMS computes each pixel's transform instead of interpolating in a precomputed table, which is off
# by up to 10 of 255 in dark Lab colours.
EXACT_TRANSFORM = ImageCms.Flags.NOOPTIMIZE


@functools.cache
def _srgb():
    return ImageCms.createProfile("sRGB")


def _unpremultiply(colours: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour samples premultiplied by `alpha` (same dtype) divided by it, rounded; 0 where alpha is 0."""
    top = np.iinfo(colours.dtype).max
    straight = colours.astype(np.float64) * top / np.maximum(alpha, 1)
    return np.where(alpha == 0, 0, np.minimum(np.rint(straight), top)).astype(colours.dtype)


def png_exif(data: bytes) -> Image.Exif | None:
    """The EXIF of PNG file bytes from its eXIf chunk (empty without one), found by walking the chunk
    headers; None where a text chunk may hold the orientation that eXIf lacks (ImageMagick's raw EXIF
    profile, XMP), which only Pillow's
    `getexif` reads. That decodes all the pixels first, because eXIf may follow the image data (PNG 3rd
    edition, eXIf); this skips them by their lengths."""
    pos, exif, in_text = 8, None, False  # after the signature
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"eXIf":
            exif = Image.Exif()
            exif.load(data[pos + 8:pos + 8 + length])
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):  # a keyword of 1-79 bytes, then a NUL
            keyword = data[pos + 8:pos + 8 + min(length, 80)].split(b"\0", 1)[0]
            in_text |= keyword in (b"Raw profile type exif", b"XML:com.adobe.xmp")
        elif kind == b"IEND":
            break
        pos += 12 + length  # length, type, data, CRC
    if exif is not None and (EXIF_ORIENTATION in exif or not in_text):
        return exif
    return None if in_text else Image.Exif()


def pillow_colours(im: Image.Image, name: str) -> tuple[np.ndarray, bytes | None]:
    """(H×W×C uint8 pixels, the ICC profile they are in or None) of a Pillow image, as `read_image` takes a
    file Pillow decodes: CMYK to RGB through its profile (`cmyk_to_rgb`; Pillow has undone the inverted
    samples of Adobe's CMYK JPEGs), any other mode by `pillow_pixels`."""
    icc = im.info.get("icc_profile")
    if im.mode == "CMYK":
        return cmyk_to_rgb(np.asarray(im), icc), None
    return pillow_pixels(im, name), icc


def pillow_pixels(im: Image.Image, name: str) -> np.ndarray:
    """H×W×C uint8 pixels (C = 1 to 4, see the module docstring) of the current frame of a Pillow image,
    keeping transparency (alpha, palette or colour key); H×W uint16 for 16-bit grey (Pillow's I;16 modes, of
    either byte order); ImageError naming `name` for 32-bit integer and float modes."""
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)  # (native byte order)
    if im.mode in ("F", "I"):
        raise ImageError(f"{name}: {im.mode} samples are not supported (8 or 16 bits expected)")
    transparent = "transparency" in im.info or im.mode in ("RGBA", "RGBa", "PA", "LA", "La")
    grey = im.mode in ("1", "L", "LA", "La") or (im.mode == "P" and _palette_is_grey(im))
    mode = ("LA" if grey else "RGBA") if transparent else ("L" if grey else "RGB")
    return np.asarray(im.convert(mode))


def _palette_is_grey(im: Image.Image) -> bool:
    colours = np.asarray(im.getpalette() or [0, 0, 0]).reshape(-1, 3)
    return bool((colours == colours[:, :1]).all())


def channels_last(pixels: np.ndarray, name: str) -> np.ndarray:
    """Decoded samples (H×W or H×W×C, bool, uint8 or uint16) as H×W×C uint8/uint16 pixels, C = 1 to 4
    (bool as 0/255); ImageError naming `name` for other sample types or layouts."""
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: {pixels.dtype} samples are not supported (only 8 and 16 bits)")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in PIL_MODES:
        raise ImageError(f"{name}: unsupported layout of shape {pixels.shape} (1 to 4 channels expected)")
    return pixels


def to_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """H×W×C pixels in the layout of `channels` (1 to 4): grey repeated into colour, alpha added as opaque (the
    dtype's maximum), C-ordered. Lossless where `channels` is the widest layout of the frames (colour is taken
    as grey only where it is grey); a layout without alpha leaves an alpha channel out, so ask for one only
    of opaque pixels."""
    have = pixels.shape[-1]
    colour, alpha = pixels[..., :1 if have <= 2 else 3], pixels[..., -1:] if have in (2, 4) else None
    if channels <= 2:
        colour = colour[..., :1]
    elif colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    if channels in (2, 4):
        alpha = alpha if alpha is not None else np.full_like(colour[..., :1], np.iinfo(pixels.dtype).max)
        return np.concatenate([colour, alpha], axis=-1)
    return np.ascontiguousarray(colour)


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to H×W×C pixels, as `PIL.ImageOps.exif_transpose` would."""
    swap = lambda a: a.swapaxes(0, 1)  # noqa: E731
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: swap,
        6: lambda a: swap(a)[:, ::-1],
        7: lambda a: swap(a)[::-1, ::-1],
        8: lambda a: swap(a)[::-1],
    }
    transform = transforms.get(orientation)
    return np.ascontiguousarray(transform(pixels)) if transform else pixels


# ---- writing ---------------------------------------------------------------------------------------------

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
            ".webp": "WEBP"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def output_format(path) -> str:
    """The format name for the suffix of `path` (PNG, JPEG, BMP, TIFF, WEBP); ImageError for any other."""
    try:
        return _FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise ImageError(f"{path}: unknown output format (use one of {', '.join(IMAGE_SUFFIXES)})") from None


# The largest width and height each format can store (JPEG: libjpeg's JPEG_MAX_DIMENSION; WebP: 14-bit sizes).
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}


def check_encodable(path, height: int, width: int, channels: int) -> None:
    """ImageError, before any work is done, if the format of `path`'s suffix cannot store a height×width
    image of `channels` channels; the message names a format that can."""
    _check_encodable(output_format(path), height, width, channels, str(path))


def _check_encodable(fmt: str, height: int, width: int, channels: int, name: str) -> None:
    if fmt in ("JPEG", "BMP") and channels in (2, 4):
        raise ImageError(f"{name}: {fmt} cannot hold the image's alpha channel; write .png, .webp or .tif")
    limit = MAX_SIDE.get(fmt)
    if limit is not None and max(height, width) > limit:
        raise ImageError(f"{name}: the output would be {width}×{height} pixels, but {fmt} stores at most "
                         f"{limit} per side; write .png or .tif")


# The formats whose files hold an ICC profile, and those that hold EXIF, as written here (BMP: a
# BITMAPV5HEADER, `bmp`; GIF: an ICCRGBG1 application extension, `gif`; MP4 and MOV: a 'colr' box, `mp4`).
PROFILE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF", "MP4", "MOV")
EXIF_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
# The formats that store every picture in RGB (grey as a palette of greys, or as video colour): RGB profiles.
RGB_FORMATS = ("BMP", "GIF", "MP4", "MOV")


# JPEG's APP1 segment holds at most 65533 bytes: its 2-byte length counts itself (Pillow refuses more).
JPEG_EXIF_BYTES = 65533


def _not_kept(fmt: str, metadata: ImageMetadata, channels: int) -> dict[str, str]:
    """{"colour profile" or "EXIF": why} for each part of `metadata` that a `fmt` file of `channels`
    channels cannot hold."""
    reasons, icc = {}, metadata.icc_profile
    if icc is not None and fmt not in PROFILE_FORMATS:
        reasons["colour profile"] = f"{fmt} holds none"
    elif icc is not None and profile_damage(icc):
        reasons["colour profile"] = profile_damage(icc)
    elif icc and fmt in RGB_FORMATS and not profile_for(icc, 3):
        reasons["colour profile"] = f"{fmt} holds RGB profiles only"
    elif icc and fmt not in RGB_FORMATS and not profile_for(icc, channels):
        reasons["colour profile"] = "its colour space is not the image's"
    if metadata.exif and fmt not in EXIF_FORMATS:
        reasons["EXIF"] = f"{fmt} holds none"
    elif metadata.exif and fmt == "JPEG" and len(metadata.exif) > JPEG_EXIF_BYTES:
        reasons["EXIF"] = f"{len(metadata.exif)} bytes, over JPEG's {JPEG_EXIF_BYTES}"
    return reasons


def kept_metadata(fmt: str, metadata: ImageMetadata, channels: int) -> ImageMetadata:
    """The part of `metadata` that `encode_image` (or an animation or video writer) writes into a `fmt` file of
    `channels` channels: the profile in PROFILE_FORMATS where its colour space is the pixels' (RGB in
    RGB_FORMATS), EXIF in EXIF_FORMATS (in JPEG up to JPEG_EXIF_BYTES)."""
    lost = _not_kept(fmt, metadata, channels)
    return ImageMetadata(None if "colour profile" in lost else metadata.icc_profile,
                         None if "EXIF" in lost else metadata.exif)


def metadata_note(path, metadata: ImageMetadata, channels: int, fmt: str | None = None) -> str | None:
    """One line naming what of `metadata` a file at `path` of `channels` channels will not hold (see
    `kept_metadata`) and why, or None where it holds all of it. `fmt`: the file's format name where it is
    not a still image's (`output_format`), e.g. GIF."""
    groups = {}
    for what, why in _not_kept(fmt or output_format(path), metadata, channels).items():
        groups.setdefault(why, []).append(what)
    parts = [f"the {' and the '.join(whats)} of the input not kept ({why})" for why, whats in groups.items()]
    return f"{path}: {'; '.join(parts)}" if parts else None


def encode_image(pixels: np.ndarray, fmt: str, metadata: ImageMetadata = NO_METADATA) -> bytes:
    """File bytes of H×W×C uint8/uint16 pixels in `fmt`. PNG and TIFF keep 16 bits; JPEG, BMP and WebP hold
    8 bits (16-bit samples are rounded to the nearest 8-bit value). ImageError if `fmt` cannot hold the
    image's alpha channel.

    `metadata` (see `kept_metadata` for what a format keeps) is written as PNG iCCP and eXIf chunks, JPEG
    APP2 ICC_PROFILE and APP1 Exif segments, WebP ICCP and EXIF chunks, TIFF InterColorProfile (34675) and
    IFD0 picture tags with Exif and GPS IFDs, a BMP profile in a BITMAPV5HEADER (`bmp`); its EXIF with
    Orientation 1 and PixelXDimension/PixelYDimension, where present, giving the pixels' size. The pixels are
    written as without it."""
    pixels = np.ascontiguousarray(pixels)  # the encoders take C-ordered buffers only (a transposed view fails)
    channels = pixels.shape[-1]
    _check_encodable(fmt, *pixels.shape, name=f"a {fmt} file")
    metadata = kept_metadata(fmt, metadata, channels)
    if fmt == "PNG":
        png = imagecodecs.png_encode(pixels[..., 0] if channels == 1 else pixels, level=6)
        return _png_with_metadata(png, metadata.icc_profile, exif_for(metadata, pixels.shape[:2]))
    if fmt == "TIFF":
        return _tiff_with_metadata(pixels, metadata.icc_profile, exif_tags_for(metadata, pixels.shape[:2]))
    buffer = io.BytesIO()
    pillow_image(pixels).save(buffer, format=fmt, **pillow_save_options(fmt, metadata, pixels.shape[:2]))
    if fmt == "BMP" and metadata.icc_profile:
        return bmp.with_icc_profile(buffer.getvalue(), metadata.icc_profile)
    return buffer.getvalue()


def pillow_save_options(fmt: str, metadata: ImageMetadata, size: tuple[int, int]) -> dict:
    """The options of Pillow's `save` for a `fmt` file (JPEG, WEBP, BMP) of height×width `size` with `metadata`
    as `kept_metadata` leaves it: the quality, the profile (not for BMP, which `bmp` writes) and the EXIF
    (`exif_for`)."""
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if metadata.icc_profile and fmt != "BMP":
        options["icc_profile"] = metadata.icc_profile
    exif = exif_for(metadata, size)
    if exif:
        options["exif"] = exif
    return options


def _png_with_metadata(png: bytes, icc: bytes | None, exif: bytes | None) -> bytes:
    """PNG file bytes with `png_metadata_chunks` after IHDR."""
    return png[:33] + png_metadata_chunks(icc, exif) + png[33:]  # signature (8 bytes), IHDR (25)


def png_metadata_chunks(icc: bytes | None, exif: bytes | None) -> bytes:
    """An iCCP chunk for `icc` and an eXIf chunk for `exif` (`Image.Exif.tobytes`), to be put right after IHDR,
    before PLTE, acTL and the image data (PNG 3rd edition, 11.3.2.3 and 11.3.6; APNG's acTL and fcTL may
    come anywhere before the first IDAT)."""
    chunks = b""
    if icc:
        chunks += _png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))  # name, compression method 0
    if exif:
        chunks += _png_chunk(b"eXIf", exif[6:])  # without the b"Exif\0\0" of JPEG's APP1 segment
    return chunks


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


_ASCII_PICTURE_TAGS = (0x010F, 0x0110, 0x0132, 0x013B, 0x8298)  # written by tifffile as given


def _tiff_with_metadata(pixels: np.ndarray, icc: bytes | None, tags: dict | None) -> bytes:
    """TIFF file bytes (tifffile, little-endian) of `pixels` with `icc` and the `picture_tags` `tags`
    (`tiff_metadata_options`, `link_exif_ifds`)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels[..., 0] if pixels.shape[-1] == 1 else pixels, byteorder="<",
                     photometric="minisblack" if pixels.shape[-1] <= 2 else "rgb",
                     extrasamples=("unassalpha",) if pixels.shape[-1] in (2, 4) else None,
                     **tiff_metadata_options(icc, tags))
    link_exif_ifds(buffer, tags)
    return buffer.getvalue()


def tiff_metadata_options(icc: bytes | None, tags: dict | None) -> dict:
    """Options of tifffile's `write` that put `icc` and the `picture_tags` `tags` into the first IFD of a
    little-endian classic TIFF: the text tags, description and resolution. The Exif and GPS IFDs are added by
    `link_exif_ifds` once the file is written: tifffile does not write these IFDs' pointer tags, so a
    placeholder goes under the tag number just below (unused in IFD0, and the entries stay in ascending
    order)."""
    tags = tags or {}
    text = [(tag, "s", 0, tags[tag], True) for tag in _ASCII_PICTURE_TAGS if isinstance(tags.get(tag), str)]
    options = dict(metadata=None, iccprofile=icc,
                   description=tags.get(0x010E) if isinstance(tags.get(0x010E), str) else None,
                   extratags=text + [(tag - 1, "I", 1, 0, True) for tag in (EXIF_IFD, GPS_IFD) if tag in tags])
    if isinstance(tags.get(0x011A), numbers.Real) and isinstance(tags.get(0x011B), numbers.Real):
        options.update(resolution=(float(tags[0x011A]), float(tags[0x011B])), resolutionunit=tags.get(0x0128, 2))
    return options


def link_exif_ifds(file, tags: dict | None) -> None:
    """Append the Exif and GPS IFDs of `tags` (serialised by Pillow) to a TIFF written with
    `tiff_metadata_options(..., tags)`, open in `file` (binary, readable and writable), and give each
    placeholder of IFD0 the pointer's number and the IFD's offset."""
    for tag in (tag for tag in (EXIF_IFD, GPS_IFD) if tag in (tags or {})):
        end = file.seek(0, os.SEEK_END)
        offset = end + end % 2  # IFDs start on a word boundary (TIFF 6.0, section 2)
        ifd = TiffImagePlugin.ImageFileDirectory_v2(b"II*\0\0\0\0\0", group=tag)
        ifd.update(tags[tag])
        file.write(b"\0" * (offset - end) + ifd.tobytes(offset))
        file.seek(_ifd0_entry(file, tag - 1))
        file.write(tag.to_bytes(2, "little") + b"\4\0\1\0\0\0" + offset.to_bytes(4, "little"))  # LONG, 1


def _ifd0_entry(file, tag: int) -> int:
    """Position of `tag`'s 12-byte entry in IFD0 of a classic little-endian TIFF file (TIFF 6.0, section 2)."""
    file.seek(4)
    ifd0 = int.from_bytes(file.read(4), "little")
    file.seek(ifd0)
    count = int.from_bytes(file.read(2), "little")
    entries = file.read(12 * count)
    for index in range(count):
        if int.from_bytes(entries[12 * index:12 * index + 2], "little") == tag:
            return ifd0 + 2 + 12 * index
    raise AssertionError(f"tag {tag} missing from IFD0")


def to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as they are; uint16 samples rounded to the nearest 8-bit value (v / 257)."""
    return np.floor(pixels / 257 + 0.5).astype(np.uint8) if pixels.dtype == np.uint16 else pixels


def pillow_image(pixels: np.ndarray) -> Image.Image:
    """A Pillow image (L, LA, RGB or RGBA) of H×W×C uint8/uint16 pixels, 16-bit samples rounded to 8 bits."""
    pixels = to_8_bits(pixels)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, PIL_MODES[pixels.shape[-1]])


def write_image(path, pixels: np.ndarray, overwrite: bool = False, metadata: ImageMetadata = NO_METADATA) -> Path:
    """Write H×W×C uint8/uint16 pixels (and `metadata`) in the format of the suffix of `path` (see
    `encode_image`), atomically; OutputExists where `path` exists, unless `overwrite` (see `atomic_output`)."""
    path = Path(path)
    data = encode_image(pixels, output_format(path), metadata)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return path


@contextlib.contextmanager
def atomic_output(path, overwrite: bool = False):
    """`with atomic_output(path) as tmp:` write to `tmp` (same folder, a name no other process uses); it
    becomes `path` only if the block succeeds, and is removed otherwise.

    Without `overwrite` the file is published with `os.link`, which fails where `path` exists: another
    process that wrote `path` meanwhile (after the command's own `refuse_existing` check) keeps its file, and
    this one raises OutputExists. With `overwrite` it replaces `path` (`os.replace`). An OSError becomes a
    UserError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def insert_bytes(path, offset: int, data: bytes, chunk: int = 1 << 20) -> None:
    """Insert `data` into the file at `path` before its byte `offset`, in place: the bytes after `offset`
    move back `chunk` bytes at a time, from the end, so no copy of the file is held (for files being
    written under `atomic_output`'s temporary name, which a failure removes)."""
    with open(path, "r+b") as file:
        pos = file.seek(0, os.SEEK_END)
        while pos > offset:
            step = min(chunk, pos - offset)
            pos -= step
            file.seek(pos)
            block = file.read(step)
            file.seek(pos + len(data))
            file.write(block)
        file.seek(offset)
        file.write(data)


def _publish_new(tmp: Path, path: Path) -> None:
    """`tmp` under the name `path`, which must not exist (OutputExists otherwise)."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if not path.exists():  # a file system without hard links (FAT, some network shares): checked, renamed
            os.rename(tmp, path)
            return
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    raise OutputExists(f"{path} already exists (written meanwhile by another process); pass --overwrite to "
                       "replace it")


def check_writable(path, folder: bool = False) -> None:
    """UserError naming `path` where an output cannot be written there, for commands to check before the work
    that makes it: a file needs an existing, writable folder as its parent and must not be a folder; a
    `folder` must be a writable folder, or one that can be created (its nearest existing ancestor a writable
    folder). Permission bits are ignored for root, as the system ignores them."""
    path = Path(path).expanduser().absolute()
    if folder:
        where = next(p for p in (path, *path.parents) if p.exists())
    else:
        if path.is_dir():
            raise UserError(f"cannot write {path}: it is a folder")
        where = path.parent
        if not where.exists():
            raise UserError(f"cannot write {path}: folder {where} does not exist")
    if not where.is_dir():
        raise UserError(f"cannot write {path}: {where} is a file, not a folder")
    if not os.access(where, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: folder {where} is not writable")


def refuse_existing(path, overwrite: bool) -> None:
    """The one policy for outputs that exist: OutputExists naming `--overwrite`, unless `overwrite`
    (the new output then replaces the old one atomically when it is complete)."""
    path = Path(path)
    if not overwrite and (path.is_file() or (path.is_dir() and any(path.iterdir()))):
        raise OutputExists(f"{path} already exists; pass --overwrite to replace it")
