"""Multi-frame images: animated GIF, WebP and PNG, and multi-page TIFF.

Read by Pillow (tifffile for TIFF, which keeps 16 bits) one frame at a time: every frame as composed for
display, its duration and the loop count are kept. Written, 8 bits except TIFF, by FFmpeg (GIF: frames
quantised as Pillow quantises a GIF; APNG: lossless) and tifffile a frame at a time, and by Pillow for WebP
(see `WebPAnimationWriter`).
"""
import contextlib
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from vdsr_jax.errors import ImageError
from vdsr_jax.media.frames import Frame, FrameReader, FrameWriter
from vdsr_jax.media.images import (PIL_MODES, channels_last, pillow_image, pillow_pixels, tiff_page_pixels,
                                    to_8_bits)

_MILLISECOND = Fraction(1, 1000)  # animation durations are in milliseconds


# ---- reading -----------------------------------------------------------------------------------------------

class AnimationReader(FrameReader):
    """The frames of an animated GIF, WebP or PNG (Pillow, 8 bits) or of a multi-page TIFF (tifffile, each page
    in its colours as `images.tiff_page_pixels` gives them)."""

    kind = "animation"

    def __init__(self, path):
        self.path = Path(path)
        self.time_base = _MILLISECOND
        self.tiff = self.path.suffix.lower() in (".tif", ".tiff")
        try:
            if self.tiff:
                self.file = tifffile.TiffFile(self.path)
                first = channels_last(tiff_page_pixels(self.file.pages[0], str(self.path))[0], str(self.path))
                self.count, self.loop = len(self.file.pages), None
            else:
                self.file = Image.open(self.path)
                first = pillow_pixels(self.file, str(self.path))
                self.count, self.loop = self.file.n_frames, self.file.info.get("loop")
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - codecs raise many kinds for damaged files
            raise ImageError(f"{self.path}: damaged or unreadable image ({type(e).__name__}: {e})") from None
        self.height, self.width, self.channels = first.shape
        self.grey = self.channels in (1, 2)
        self.rate = None

    def frames(self, on_audio=None):
        if self.tiff:
            for page in self.file.pages:
                self.decoded += 1
                yield Frame(channels_last(tiff_page_pixels(page, str(self.path))[0], str(self.path)))
            return
        for index in range(self.count):
            self.file.seek(index)
            pixels = np.asarray(self.file.convert(PIL_MODES[self.channels]))
            self.decoded += 1
            yield Frame(pixels[..., None] if pixels.ndim == 2 else pixels,
                        duration=self.file.info.get("duration"))

    def close(self):
        self.file.close()


# ---- writing -----------------------------------------------------------------------------------------------

class FFmpegAnimationWriter(FrameWriter):
    """GIF or APNG through FFmpeg's encoder and muxer, one frame at a time (the muxer holds back one packet to
    learn its delay from the next time stamp). GIF frames are quantised as Pillow's GIF writer does (an
    adaptive palette of at most 256 colours per frame, its first fully transparent colour kept transparent;
    grey frames exact); APNG frames are lossless, 8 bits."""

    def __init__(self, av, tmp: Path, suffix: str, reader, height: int, width: int):
        self.av = av  # PyAV
        self.gif = suffix == ".gif"
        if self.gif:  # a NETSCAPE loop block only where the source had one, as Pillow writes GIFs
            muxer, options, pix_fmt = "gif", {"loop": str(-1 if reader.loop is None else reader.loop)}, "pal8"
        else:  # plays 0: forever, Pillow's default for APNG
            muxer, options = "apng", {"plays": str(reader.loop or 0)}
            pix_fmt = {1: "gray", 2: "ya8", 3: "rgb24", 4: "rgba"}[reader.channels]
        self.mode = PIL_MODES[reader.channels]
        self.container = self.av.open(str(tmp), "w", format=muxer, options=options)
        self.stream = self.container.add_stream(muxer)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.stream.time_base = self.stream.codec_context.time_base = _MILLISECOND
        self.clock = Fraction(0)  # milliseconds; time stamps are rounded from the sum, so rounding never drifts
        self.held = None  # the newest packet, muxed once it is known not to be the last

    def write(self, pixels: np.ndarray, frame: Frame):
        image = pillow_image(pixels).convert(self.mode)
        if self.gif:
            out = self.av.VideoFrame.from_ndarray(_quantised(image), format="pal8")
        else:  # PyAV's from_ndarray lacks ya8: the rows go into the plane, past its padding
            out = self.av.VideoFrame(image.width, image.height, self.stream.pix_fmt)
            plane = out.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(image.height, plane.line_size)
            rows[:, :image.width * len(self.mode)] = np.asarray(image).reshape(image.height, -1)
        out.pts, out.time_base = round(self.clock), _MILLISECOND  # (the GIF muxer sets the stream's to 1/100 s)
        self.clock += Fraction(frame.duration or 100)
        self._mux(self.stream.encode(out))

    def _mux(self, packets):
        for packet in packets:
            if self.held is not None:
                self.container.mux(self.held)
            self.held = packet

    def close(self):
        self._mux(self.stream.encode(None))
        milliseconds = round(self.clock) - self.held.pts
        if self.gif:  # the muxer takes the last frame's delay from the packet's duration
            self.held.duration = milliseconds
        else:
            _set_apng_delay(self.held, milliseconds)
        self.container.mux(self.held)
        self.container.close()

    def abort(self):
        with contextlib.suppress(Exception):
            self.container.close()


def _quantised(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(H×W palette indices, 256×4 ARGB palette) of an L, LA, RGB or RGBA image, as Pillow's GIF writer
    converts frames: grey exactly, colour (and grey + alpha) to an adaptive palette whose first colour of
    alpha 0 is the one transparent entry."""
    palette = np.zeros((256, 4), np.uint8)
    if image.mode == "L":
        palette[:, 0], palette[:, 1:] = 255, np.arange(256, dtype=np.uint8)[:, None]
        return np.asarray(image), palette
    indexed = image.convert("RGBA" if image.mode == "LA" else image.mode).convert("P", palette=Image.Palette.ADAPTIVE)
    colours = np.asarray(indexed.getpalette("RGBA"), np.uint8).reshape(-1, 4)
    palette[:len(colours), 1:] = colours[:, :3]
    palette[:len(colours), 0] = 255
    transparent = np.flatnonzero(colours[:, 3] == 0)
    if transparent.size:
        palette[transparent[0], 0] = 0
    return np.asarray(indexed), palette


def _set_apng_delay(packet, milliseconds: int) -> None:
    """Write the delay into the fcTL chunk that starts an APNG packet. FFmpeg's muxer fills only delays left
    at 0/0, from the next frame's time stamp, and gives the last frame the delay before it (or a fixed
    `final_delay` that must be known when the header is written, before the first frame)."""
    data = bytearray(bytes(packet))
    start = data.index(b"fcTL") + 4  # the chunk's fields; its CRC covers type and fields (PNG spec, 5.3)
    num, den = (milliseconds, 1000) if milliseconds <= 0xFFFF else (min(round(milliseconds / 1000), 0xFFFF), 1)
    struct.pack_into(">HH", data, start + 20, num, den)
    struct.pack_into(">I", data, start + 26, zlib.crc32(data[start - 4:start + 26]))
    packet.update(bytes(data))


class WebPAnimationWriter(FrameWriter):
    """Animated WebP through Pillow (libwebp), as still WebP images are written (quality 95, or lossless).
    Pillow's encoder reads the frames of one image file one at a time, so the upscaled frames are spilled
    (8 bits, uncompressed) to a multi-page TIFF beside the output and encoded from it at the end; libwebp's
    animation encoder keeps the *encoded* frames until it assembles the file, so memory grows by the
    compressed size only."""

    def __init__(self, tmp: Path, reader, lossless: bool):
        self.tmp, self.spill = tmp, tmp.with_name(tmp.name + ".frames.tif")
        self.pages = TiffPagesWriter(self.spill)
        self.options = {"lossless": True} if lossless else {"quality": 95}
        if reader.loop is not None:
            self.options["loop"] = reader.loop
        self.durations = []

    def write(self, pixels: np.ndarray, frame: Frame):
        self.pages.write(to_8_bits(pixels), frame)
        self.durations.append(frame.duration or 100)

    def close(self):
        self.pages.close()
        try:
            with Image.open(self.spill) as frames:
                frames.save(self.tmp, format="WEBP", save_all=True, duration=self.durations, **self.options)
        finally:
            self.spill.unlink(missing_ok=True)

    def abort(self):
        self.pages.abort()
        self.spill.unlink(missing_ok=True)


class TiffPagesWriter(FrameWriter):
    """A multi-page TIFF, a page per frame as it comes (8 or 16 bits; pages may differ in size)."""

    fixed_size = False

    def __init__(self, tmp: Path):
        self.file = tifffile.TiffWriter(tmp)

    def write(self, pixels: np.ndarray, frame: Frame):
        channels = pixels.shape[-1]
        self.file.write(pixels[..., 0] if channels == 1 else pixels,
                        photometric="minisblack" if channels <= 2 else "rgb",
                        extrasamples=("unassalpha",) if channels in (2, 4) else None)

    def close(self):
        self.file.close()

    def abort(self):
        with contextlib.suppress(Exception):
            self.file.close()
