"""What `evaluate` and `upscale` share as command-line tools: one-line errors and image files.

Errors a user can cause end a command with one line on stderr and a non-zero exit, never a traceback.
Images are read as H×W×C uint8 or uint16 arrays (C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), upright
(EXIF orientation applied), keeping 16-bit samples that Pillow alone would cut to 8 bits, and are
written through a temporary file that is renamed into place, so a failure never leaves a partial file.
"""
import argparse
import contextlib
import logging
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from vdsr_jax.checkpoint import CheckpointError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
EXIF_ORIENTATION = 0x0112
MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class CliError(Exception):
    """A problem the user can fix (bad argument, unreadable input, unwritable output); the message says which."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse would print the whole usage first), and the
    description (the module docstring) is shown as written."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(main, argv=None) -> int:
    """Call `main(argv)`; turn a user error into one line on stderr and exit status 1."""
    logging.getLogger("absl").setLevel(logging.ERROR)  # orbax logs warnings on every read-only restore
    try:
        return main(argv)
    except (CliError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def image_files(paths) -> list[Path]:
    """The given files, and the image files (by suffix, sorted) directly inside the given folders."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise CliError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        else:
            files.append(path)
    return files


# ---- reading ---------------------------------------------------------------------------------------------

def read_image(path) -> np.ndarray:
    """H×W×C uint8 or uint16 pixels of an image file, upright; CliError if it is not a readable image."""
    path = Path(path)
    if not path.is_file():
        raise CliError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with Image.open(path) as im:
            rawmode = _rawmode(im)  # before anything (getexif, for PNG) loads the image and clears its tiles
            if ";16" in rawmode and not im.mode.startswith("I"):
                pixels = _decode_16bit(path, rawmode)
            else:
                pixels = _decode(im, path)
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    except UnidentifiedImageError:
        raise CliError(f"{path}: not an image file Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise CliError(f"{path}: {e}") from None
    except CliError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, zlib.error, ... for damaged files
        raise CliError(f"{path}: damaged or unreadable image ({e})") from None
    return orient(pixels, orientation)


def _decode(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None]
    if im.mode == "I":
        pixels = np.asarray(im)
        if pixels.min() < 0 or pixels.max() > 65535:
            raise CliError(f"{path}: 32-bit integer samples are not supported (only 8 and 16 bits)")
        return pixels.astype(np.uint16)[..., None]
    if im.mode in ("1", "L"):
        im = im.convert("L")
    elif im.mode in ("LA", "La"):
        im = im.convert("LA")
    elif im.mode in ("RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    elif im.mode == "F":
        raise CliError(f"{path}: floating-point images are not supported (only 8 and 16 bits)")
    else:
        im = im.convert("RGB")
    pixels = np.asarray(im)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _rawmode(im: Image.Image) -> str:
    """How Pillow's decoder reads the file's samples, e.g. 'RGB;16B' for a 16-bit big-endian RGB PNG."""
    args = im.tile[0].args if im.tile else ""
    return args if isinstance(args, str) else str(args[0])


_OTHER_ENDIAN = {"B": "L", "L": "B", "N": "L" if sys.byteorder == "big" else "B"}


def _decode_16bit(path: Path, rawmode: str) -> np.ndarray:
    """16-bit colour samples, which Pillow's images can only hold as their high bytes.

    Pillow's decoder is run twice with rawmodes of the same pixel width (so PNG's per-pixel filters still
    undo correctly): once reading each sample as stored (its high byte) and once reading it as the other
    byte order (its low byte). 16-bit grey+alpha has no such pair; read as 8-bit RGBA, its four channels
    are the four bytes of each pixel.
    """
    if rawmode == "LA;16B":
        grey_alpha = _decode_as(path, "RGBA").astype(np.uint16)
        return (grey_alpha[..., 0::2] << 8) | grey_alpha[..., 1::2]
    if rawmode.split(";")[0] not in ("RGB", "RGBA") or rawmode[-1] not in _OTHER_ENDIAN:
        raise CliError(f"{path}: unsupported 16-bit sample layout {rawmode}")
    high = _decode_as(path, rawmode).astype(np.uint16)
    low = _decode_as(path, rawmode[:-1] + _OTHER_ENDIAN[rawmode[-1]])
    return (high << 8) | low


def _decode_as(path: Path, rawmode: str) -> np.ndarray:
    with Image.open(path) as im:
        im.tile = [t._replace(args=rawmode if isinstance(t.args, str) else (rawmode, *t.args[1:])) for t in im.tile]
        im.load()
        return np.asarray(im)


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to H×W×C pixels, as `PIL.ImageOps.exif_transpose` would."""
    swap = lambda a: a.swapaxes(0, 1)
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


def max_value(pixels: np.ndarray) -> int:
    """The sample value that means full intensity: 255 or 65535."""
    return int(np.iinfo(pixels.dtype).max)


def split_alpha(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(float64 RGB in [0, 1], float64 alpha or None); grey becomes three equal channels."""
    scaled = pixels.astype(np.float64) / max_value(pixels)
    colour, alpha = (scaled[..., :-1], scaled[..., -1]) if pixels.shape[-1] in (2, 4) else (scaled, None)
    if colour.shape[-1] == 1:
        colour = np.repeat(colour, 3, axis=-1)
    return colour, alpha


def quantize(values: np.ndarray, dtype) -> np.ndarray:
    """Values in [0, 1] (clipped) to integer samples, rounding halves up as MATLAB's im2uint8 does."""
    return np.floor(np.clip(values, 0, 1) * np.iinfo(dtype).max + 0.5).astype(dtype)


# ---- writing ---------------------------------------------------------------------------------------------

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
            ".webp": "WEBP"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def output_format(path) -> str:
    """Pillow's format name for the suffix of `path`; CliError for a suffix it should not write."""
    try:
        return _FORMATS[Path(path).suffix.lower()]
    except KeyError:
        raise CliError(f"{path}: unknown output format (use one of {', '.join(IMAGE_SUFFIXES)})") from None


def write_image(path, pixels: np.ndarray) -> Path:
    """Write H×W×C uint8/uint16 pixels atomically. 16-bit stays 16-bit in PNG and TIFF; formats that hold
    only 8 bits (JPEG, BMP, WebP) get the nearest 8-bit values."""
    path = Path(path)
    fmt = output_format(path)
    if fmt in ("JPEG", "BMP") and pixels.shape[-1] in (2, 4):
        raise CliError(f"{path}: {fmt} cannot hold the image's alpha channel; write .png, .webp or .tif")
    if pixels.dtype == np.uint16 and fmt not in ("PNG", "TIFF"):
        pixels = quantize(pixels / 65535, np.uint8)
    with atomic_output(path) as tmp:
        if pixels.dtype == np.uint16 and fmt == "PNG":
            tmp.write_bytes(png16(pixels))
        elif pixels.dtype == np.uint16:
            import tifffile  # a dependency of scikit-image

            channels = pixels.shape[-1]
            tifffile.imwrite(tmp, pixels[..., 0] if channels == 1 else pixels,
                             photometric="minisblack" if channels <= 2 else "rgb",
                             extrasamples=("unassalpha",) if channels in (2, 4) else None)
        else:
            Image.fromarray(np.squeeze(pixels, -1) if pixels.shape[-1] == 1 else pixels, MODES[pixels.shape[-1]]) \
                .save(tmp, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    return path


@contextlib.contextmanager
def atomic_output(path):
    """`with atomic_output(path) as tmp:` write to `tmp` (same folder); it becomes `path` only if the block
    succeeds, and is removed otherwise."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA) of H×W×C uint16 pixels; Pillow cannot write these."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2").reshape(height, width * channels).view(np.uint8)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
            + chunk(b"IEND", b""))


def side_by_side(left: np.ndarray, right: np.ndarray, labels: tuple[str, str]) -> np.ndarray:
    """8-bit RGB image of two equal-size images next to each other, each under a caption strip."""
    font_size = max(12, left.shape[1] // 25)
    strip = font_size * 3 // 2
    panels = []
    for pixels, label in zip((left, right), labels):
        rgb = pixels[..., :3] if pixels.shape[-1] >= 3 else np.repeat(pixels[..., :1], 3, axis=-1)
        if rgb.dtype == np.uint16:
            rgb = quantize(rgb / 65535, np.uint8)
        panel = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + strip), "white")
        panel.paste(Image.fromarray(rgb), (0, strip))
        ImageDraw.Draw(panel).text((font_size // 2, font_size // 4), label, fill="black",
                                   font=ImageFont.load_default(size=font_size))
        panels.append(np.asarray(panel))
    gap = np.full((panels[0].shape[0], max(2, font_size // 4), 3), 255, np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)
