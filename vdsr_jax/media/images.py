"""Still image files: the one place that lists folders, decodes, encodes and writes images.

Pixels are H×W×C numpy arrays of uint8 or uint16 samples, C = 1 (grey), 2 (grey + alpha), 3 (RGB) or
4 (RGBA), upright (EXIF orientation applied), with transparency kept however the file carries it (an
alpha channel, a palette entry or a PNG colour key). PNG goes through imagecodecs (libpng: 8 and 16 bits,
colour keys), TIFF through tifffile, the 8-bit formats (JPEG, BMP, WebP, GIF) through Pillow. Every write
goes to a temporary file in the target folder that takes the real name when complete, so a failure or a
kill never leaves a partial file under the real name, and (unless replacing is asked for) a file another
process wrote there meanwhile is never replaced.
"""
import contextlib
import errno
import io
import os
import secrets
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from vdsr_jax.errors import ImageError, OutputExists, UserError

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

def read_image(path) -> np.ndarray:
    """H×W×C uint8 or uint16 pixels of an image file (see the module docstring).

    Raises ImageError for a missing, damaged or unsupported file (floating-point or 32-bit samples), and for
    a file of several frames (an animation, a multi-page TIFF): those are not cut to their first frame.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        return decode_image(path.read_bytes(), name=str(path))
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """`read_image` for the bytes of a file; `name` is used in error messages."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                raise ImageError(f"{name}: holds {frames} frames (an animation or multi-page file); "
                                 "only single-frame images are supported")
            if im.format == "PNG":
                pixels, orientation = imagecodecs.png_decode(data), png_orientation(data)
                if orientation is None:  # in a text chunk: read as Pillow reads it (decoding it again)
                    orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            else:
                orientation = im.getexif().get(EXIF_ORIENTATION, 1)
                pixels = tifffile.imread(io.BytesIO(data)) if im.format == "TIFF" else pillow_pixels(im, name)
    except UnidentifiedImageError:
        if data[:4] not in TIFF_SIGNATURES:
            raise ImageError(f"{name}: not an image file (PNG, JPEG, BMP, TIFF, WebP)") from None
        return _decode_tiff(data, name)  # a layout Pillow cannot identify, e.g. 16-bit grey + alpha
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: {e}") from None
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - codecs raise OSError, SyntaxError, zlib.error, ... for damaged files
        raise ImageError(f"{name}: damaged or unreadable image ({type(e).__name__}: {e})") from None
    return orient(channels_last(pixels, name), orientation)


TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little/big-endian TIFF and BigTIFF


def _decode_tiff(data: bytes, name: str) -> np.ndarray:
    """A TIFF through tifffile alone, its Orientation tag (274) applied; ImageError for several pages or a
    damaged file."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tiff:
            if len(tiff.pages) > 1:
                raise ImageError(f"{name}: holds {len(tiff.pages)} frames (an animation or multi-page file); "
                                 "only single-frame images are supported")
            tag = tiff.pages[0].tags.get(EXIF_ORIENTATION)
            pixels, orientation = tiff.asarray(), int(tag.value) if tag else 1
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - tifffile raises TiffFileError, ValueError, ... for damaged files
        raise ImageError(f"{name}: damaged or unreadable image ({type(e).__name__}: {e})") from None
    return orient(channels_last(pixels, name), orientation)


def png_orientation(data: bytes) -> int | None:
    """The EXIF orientation (1-8; 1 without one) of PNG file bytes, from its eXIf chunk, found by walking the
    chunk headers; None where a text chunk may hold it (ImageMagick's raw EXIF profile, XMP), which only
    Pillow's `getexif` reads. That decodes all the pixels first, because eXIf may follow the image data
    (PNG 3rd edition, eXIf); this skips them by their lengths."""
    pos, orientation, in_text = 8, None, False  # after the signature
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"eXIf":
            exif = Image.Exif()
            exif.load(data[pos + 8:pos + 8 + length])
            orientation = exif.get(EXIF_ORIENTATION)
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):  # a keyword of 1-79 bytes, then a NUL
            keyword = data[pos + 8:pos + 8 + min(length, 80)].split(b"\0", 1)[0]
            in_text |= keyword in (b"Raw profile type exif", b"XML:com.adobe.xmp")
        elif kind == b"IEND":
            break
        pos += 12 + length  # length, type, data, CRC
    if orientation is not None:
        return orientation
    return None if in_text else 1


def pillow_pixels(im: Image.Image, name: str) -> np.ndarray:
    """H×W×C uint8 pixels (C = 1 to 4, see the module docstring) of the current frame of a Pillow image,
    keeping transparency (alpha, palette or colour key); ImageError naming `name` for 16-bit or float modes."""
    if im.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
        raise ImageError(f"{name}: {im.mode} samples are not supported (8-bit {im.format} expected)")
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


def encode_image(pixels: np.ndarray, fmt: str) -> bytes:
    """File bytes of H×W×C uint8/uint16 pixels in `fmt`. PNG and TIFF keep 16 bits; JPEG, BMP and WebP hold
    8 bits (16-bit samples are rounded to the nearest 8-bit value). ImageError if `fmt` cannot hold the
    image's alpha channel."""
    channels = pixels.shape[-1]
    _check_encodable(fmt, *pixels.shape, name=f"a {fmt} file")
    if fmt == "PNG":
        return imagecodecs.png_encode(pixels[..., 0] if channels == 1 else pixels, level=6)
    if fmt == "TIFF":
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, pixels[..., 0] if channels == 1 else pixels,
                         photometric="minisblack" if channels <= 2 else "rgb",
                         extrasamples=("unassalpha",) if channels in (2, 4) else None)
        return buffer.getvalue()
    buffer = io.BytesIO()
    pillow_image(pixels).save(buffer, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    return buffer.getvalue()


def to_8_bits(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels as they are; uint16 samples rounded to the nearest 8-bit value (v / 257)."""
    return np.floor(pixels / 257 + 0.5).astype(np.uint8) if pixels.dtype == np.uint16 else pixels


def pillow_image(pixels: np.ndarray) -> Image.Image:
    """A Pillow image (L, LA, RGB or RGBA) of H×W×C uint8/uint16 pixels, 16-bit samples rounded to 8 bits."""
    pixels = to_8_bits(pixels)
    return Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, PIL_MODES[pixels.shape[-1]])


def write_image(path, pixels: np.ndarray, overwrite: bool = False) -> Path:
    """Write H×W×C uint8/uint16 pixels in the format of the suffix of `path` (see `encode_image`), atomically;
    OutputExists where `path` exists, unless `overwrite` (see `atomic_output`)."""
    path = Path(path)
    data = encode_image(pixels, output_format(path))
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
