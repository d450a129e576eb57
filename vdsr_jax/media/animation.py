"""Multi-frame images: animated GIF, WebP and PNG, and multi-page TIFF.

Read by Pillow (tifffile for TIFF, which keeps 16 bits) one frame at a time: every frame as composed for
display, its duration and the loop count are kept, and the colour profile and EXIF (orientation applied).
Written, 8 bits except TIFF, by FFmpeg (GIF: frames quantised as Pillow quantises a GIF; APNG: lossless) and
tifffile a frame at a time, and by Pillow for WebP (see `WebPAnimationWriter`); the profile and EXIF go into
APNG, WebP and TIFF, as into still images, and the profile into GIF (which has no place for EXIF).
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
from vdsr_jax.media import gif
from vdsr_jax.media.frames import Frame, FrameReader, FrameWriter
from vdsr_jax.media.images import (EXIF_ORIENTATION, NO_METADATA, PIL_MODES, ImageMetadata, channels_last,
                                   exif_for, exif_tags_for, insert_bytes, link_exif_ifds, orient, picture_exif,
                                   pillow_image, pillow_pixels, pillow_save_options, png_metadata_chunks, tiff_exif,
                                   tiff_metadata_options, tiff_orientation, tiff_page_pixels, to_8_bits,
                                   to_channels)

_MILLISECOND = Fraction(1, 1000)  # animation durations are in milliseconds


# ---- reading -----------------------------------------------------------------------------------------------

class AnimationReader(FrameReader):
    """The frames of an animated GIF, WebP or PNG (Pillow) or of a multi-page TIFF (tifffile), in the layout of
    the widest frame (see `FrameReader.channels`): every frame is decoded once when the file is opened, so
    that a frame Pillow or tifffile cannot decode, or a layout no writer takes (32-bit or float samples), is
    an ImageError before any work. Pillow frames: 8 bits (16-bit grey, Pillow's I;16, as 16 bits), as
    `images.pillow_pixels` reads a still (palettes grey where their colours are); GIF frames after the first,
    which Pillow expands to RGB(A), count as grey where they hold grey only and the first frame is grey.
    TIFF pages come in their own layout (8 or 16 bits, 1 to 4 channels), in the colours their photometric
    interpretation means, as a still TIFF is read (`images.tiff_page_pixels`). Every frame is upright: the
    file's EXIF orientation (a TIFF page's Orientation tag) is applied, as to a still. `metadata`: the colour
    profile and EXIF of the file (Pillow) or of its first page (TIFF), as `images.ImageMetadata` has them."""

    kind = "animation"

    def __init__(self, path):
        self.path = Path(path)
        self.time_base = _MILLISECOND
        self.tiff = self.path.suffix.lower() in (".tif", ".tiff")
        try:
            if self.tiff:
                self.file = tifffile.TiffFile(self.path)
                self.count, self.loop = len(self.file.pages), None
            else:
                self.file = Image.open(self.path)
                self.count, self.loop = self.file.n_frames, self.file.info.get("loop")
                self.exif, self.icc = self.file.getexif(), self.file.info.get("icc_profile")
                if self.file.format == "GIF":  # Pillow does not read a GIF's profile
                    self.icc = gif.read_icc_profile(self.path.read_bytes())
                self.orientation = self.exif.get(EXIF_ORIENTATION, 1)
        except Exception as e:  # noqa: BLE001 - codecs raise many kinds for damaged files
            raise ImageError(f"{self.path}: damaged or unreadable image ({type(e).__name__}: {e})") from None
        layouts = []  # the channels of each frame as decoded
        self.opaque = True
        for index in range(self.count):
            try:
                pixels = self._decode(index)
            except ImageError:
                raise
            except Exception as e:  # noqa: BLE001 - as above
                raise ImageError(f"{self.path}: cannot decode frame {index + 1} ({type(e).__name__}: {e})") from None
            layouts.append(pixels.shape[-1])
            self.opaque = self.opaque and is_opaque(pixels)
            if index == 0:
                self.height, self.width = pixels.shape[:2]
        self.grey = all(channels <= 2 for channels in layouts)
        self.channels = (1 if self.grey else 3) + any(channels in (2, 4) for channels in layouts)
        self.rate = None
        self.metadata = self._metadata()

    def _metadata(self) -> ImageMetadata:
        """The file's ImageMetadata."""
        try:
            if self.tiff:
                with open(self.path, "rb") as file:
                    return ImageMetadata(self.icc, picture_exif(tiff_exif(file, self.file.pages[0])))
            return ImageMetadata(self.icc, picture_exif(self.exif))
        except Exception as e:  # noqa: BLE001 - Pillow raises many kinds for damaged EXIF
            raise ImageError(f"{self.path}: damaged EXIF ({type(e).__name__}: {e})") from None

    def _decode(self, index: int) -> np.ndarray:
        """Frame `index` as H×W×C uint8/uint16 pixels in its own layout (C = 1 to 4; GIF: see the class)."""
        if self.tiff:
            name, page = f"{self.path} page {index + 1}", self.file.pages[index]
            pixels, icc = tiff_page_pixels(page, name)
            if index == 0:
                self.icc = icc
            return orient(channels_last(pixels, name), tiff_orientation(page))
        self.file.seek(index)
        name = f"{self.path} frame {index + 1}"
        pixels = channels_last(pillow_pixels(self.file, name), name)
        if index == 0:
            self.first_grey = pixels.shape[-1] <= 2
        elif self.file.format == "GIF" and self.first_grey and pixels.shape[-1] >= 3 and _holds_grey(pixels):
            pixels = np.concatenate([pixels[..., :1], pixels[..., 3:]], axis=-1)  # expanded by Pillow
        return orient(pixels, self.orientation)

    def frames(self, on_packet=None):
        for index in range(self.count):
            pixels = self._decode(index)
            self.decoded += 1
            if self.tiff:  # pages keep their own layout (a TIFF output stores each page as it is)
                yield Frame(pixels)
            else:
                yield Frame(to_channels(pixels, self.channels), duration=self.file.info.get("duration"))

    def close(self):
        self.file.close()


def is_opaque(pixels: np.ndarray) -> bool:
    """Whether H×W×C pixels show nothing through: no alpha channel, or every alpha sample at its maximum."""
    return pixels.shape[-1] not in (2, 4) or bool((pixels[..., -1] == np.iinfo(pixels.dtype).max).all())


def _holds_grey(pixels: np.ndarray) -> bool:
    """Whether the colour of H×W×3/4 pixels is grey everywhere (R = G = B)."""
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


# ---- writing -----------------------------------------------------------------------------------------------

class FFmpegAnimationWriter(FrameWriter):
    """GIF or APNG through FFmpeg's encoder and muxer, one frame at a time (the muxer holds back one packet to
    learn its delay from the next time stamp). GIF frames are quantised as Pillow's GIF writer does (an
    adaptive palette of at most 256 colours per frame, its first fully transparent colour kept transparent;
    grey frames exact; frames of an animation with alpha whole, each cleared to transparent after display);
    APNG frames are lossless, 8 bits. The colour profile and EXIF of `metadata` (`images.kept_metadata` for
    the format) go into APNG as iCCP and eXIf chunks after IHDR, EXIF giving the height×width size, and the
    profile into GIF as an ICCRGBG1 application extension before the first frame (`gif`)."""

    def __init__(self, av, tmp: Path, suffix: str, reader, height: int, width: int, metadata=NO_METADATA):
        self.av = av  # PyAV
        self.tmp, self.size, self.metadata = tmp, (height, width), metadata
        self.gif = suffix == ".gif"
        if self.gif:  # a NETSCAPE loop block only where the source had one, as Pillow writes GIFs
            muxer, options, pix_fmt = "gif", {"loop": str(-1 if reader.loop is None else reader.loop)}, "pal8"
        else:  # plays 0: forever, Pillow's default for APNG
            muxer, options = "apng", {"plays": str(reader.loop or 0)}
            pix_fmt = {1: "gray", 2: "ya8", 3: "rgb24", 4: "rgba"}[reader.channels]
        self.mode = PIL_MODES[reader.channels]
        # GIF frames with alpha are written whole and cleared after display (see `_clear_after_display`)
        self.clear = self.gif and reader.channels in (2, 4)
        self.container = self.av.open(str(tmp), "w", format=muxer, options=options)
        self.stream = self.container.add_stream(muxer, options={"gifflags": "-offsetting-transdiff"}
                                                if self.clear else None)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.stream.time_base = self.stream.codec_context.time_base = _MILLISECOND
        self.clock = Fraction(0)  # milliseconds; time stamps are rounded from the sum, so rounding never drifts
        self.held = None  # the newest packet, muxed once it is known not to be the last

    def write(self, pixels: np.ndarray, frame: Frame):
        image = pillow_image(pixels).convert(self.mode)
        transparent = None
        if self.gif:
            indices, palette = _quantised(image)
            if self.clear:
                indices, palette, transparent = _with_transparent_entry(image, indices, palette)
            out = self.av.VideoFrame.from_ndarray((indices, palette), format="pal8")
        else:  # PyAV's from_ndarray lacks ya8: the rows go into the plane, past its padding
            out = self.av.VideoFrame(image.width, image.height, self.stream.pix_fmt)
            plane = out.planes[0]
            rows = np.frombuffer(plane, np.uint8).reshape(image.height, plane.line_size)
            rows[:, :image.width * len(self.mode)] = np.asarray(image).reshape(image.height, -1)
        out.pts, out.time_base = round(self.clock), _MILLISECOND  # (the GIF muxer sets the stream's to 1/100 s)
        self.clock += Fraction(frame.duration or 100)
        packets = self.stream.encode(out)
        if self.clear:
            for packet in packets:
                _clear_after_display(packet, transparent)
        elif self.gif and frame.duration is None:
            packets = [_without_delay(self.av, packet) for packet in packets]
        self._mux(packets)

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
        if self.gif:
            if self.metadata.icc_profile:
                with open(self.tmp, "rb") as file:
                    at = gif.icc_offset(file.read(1 << 16))  # FFmpeg writes the loop block, then the frames
                assert at is not None, "FFmpeg's GIF starts with its screen descriptor, colours and loop block"
                insert_bytes(self.tmp, at, gif.icc_extension(self.metadata.icc_profile))
            return
        chunks = png_metadata_chunks(self.metadata.icc_profile, exif_for(self.metadata, self.size))
        if chunks:
            with open(self.tmp, "rb") as file:
                assert file.read(16)[12:] == b"IHDR", "FFmpeg's APNG starts with IHDR"
            insert_bytes(self.tmp, 33, chunks)  # after the signature (8 bytes) and IHDR (25)

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


def _with_transparent_entry(image: Image.Image, indices: np.ndarray, palette: np.ndarray):
    """(indices, palette, the frame's transparent entry) of a quantised GIF frame: the first entry of alpha 0
    where the frame has transparent pixels, else an entry no pixel uses (a frame that uses all 256 entries is
    quantised again to 255 colours to free one)."""
    used = np.unique(indices)
    transparent = used[palette[used, 0] == 0]
    if transparent.size:
        return indices, palette, int(transparent[0])
    if used.size == 256:
        indices, palette = _quantised(image.quantize(255).convert(image.mode))
        used = np.unique(indices)
    return indices, palette, int(np.setdiff1d(np.arange(256), used)[0])


def _clear_after_display(packet, transparent: int) -> None:
    """Make the GIF frame in a packet of FFmpeg's GIF encoder clear to transparent after it is shown, so that
    the transparent pixels of the next frame show nothing, not this frame (as an RGBA frame means). GIF89a,
    section 23: the Graphic Control Extension (21 F9 04, then a packed byte, the delay, the transparent index)
    that FFmpeg writes before each image gets disposal method 2, restore to background (bits 2-4), and the
    frame's `transparent` entry as its transparent colour (bit 0, and the index byte), which FFmpeg leaves
    out for opaque frames and for some transparent ones; decoders (Pillow) restore to transparent only where
    the frame names a transparent colour."""
    data = bytearray(bytes(packet))
    start = gif.control_extension(data)
    if start is None:
        return
    data[start + 3] = (data[start + 3] & ~0x1C) | (2 << 2) | 1
    data[start + 6] = transparent
    packet.update(bytes(data))


def _without_delay(av, packet):
    """Remove the Graphic Control Extension of the GIF frame in a packet where it says nothing but a delay
    (no transparent colour; disposal "none" or "do not dispose", which is what a frame without one gets), so
    that the frame has no delay, as its source frame had none (FFmpeg's GIF muxer then writes it as it is).
    Returns the packet, or a new one of the same timing (`av`: PyAV) without the extension."""
    data = bytes(packet)
    start = gif.control_extension(data)
    if start is None or data[start + 3] & 1 or (data[start + 3] >> 2) & 7 > 1:
        return packet
    shorter = av.Packet(data[:start] + data[start + 8:])
    shorter.stream, shorter.time_base = packet.stream, packet.time_base
    shorter.pts, shorter.dts, shorter.duration = packet.pts, packet.dts, packet.duration
    return shorter


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
    compressed size only. The colour profile and EXIF of `metadata` (`images.kept_metadata` for WebP) go into
    ICCP and EXIF chunks, EXIF giving the height×width size."""

    def __init__(self, tmp: Path, reader, lossless: bool, height: int, width: int, metadata=NO_METADATA):
        self.tmp, self.spill = tmp, tmp.with_name(tmp.name + ".frames.tif")
        self.pages = TiffPagesWriter(self.spill)
        self.options = pillow_save_options("WEBP", metadata, (height, width))
        if lossless:  # instead of the quality
            del self.options["quality"]
            self.options["lossless"] = True
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
    """A multi-page TIFF (little-endian), a page per frame as it comes (8 or 16 bits; pages may differ in
    size). The colour profile and EXIF of `metadata` (`images.kept_metadata` for TIFF) go into the first page,
    as a still TIFF holds them (`images.tiff_metadata_options`), EXIF giving that page's size."""

    fixed_size = False

    def __init__(self, tmp: Path, metadata=NO_METADATA):
        self.tmp, self.metadata, self.tags = tmp, metadata, None
        self.file = tifffile.TiffWriter(tmp, byteorder="<")

    def write(self, pixels: np.ndarray, frame: Frame):
        channels = pixels.shape[-1]
        options = {"metadata": None}
        if self.metadata is not None:  # the first page
            self.tags = exif_tags_for(self.metadata, pixels.shape[:2])
            options = tiff_metadata_options(self.metadata.icc_profile, self.tags)
            self.metadata = None
        self.file.write(pixels[..., 0] if channels == 1 else pixels,
                        photometric="minisblack" if channels <= 2 else "rgb",
                        extrasamples=("unassalpha",) if channels in (2, 4) else None, **options)

    def close(self):
        self.file.close()
        if self.tags:
            with open(self.tmp, "r+b") as file:
                link_exif_ifds(file, self.tags)

    def abort(self):
        with contextlib.suppress(Exception):
            self.file.close()
