"""Videos and multi-frame images: read frame by frame, upscale as a stream, write with timing and audio kept.

Videos (VIDEO_SUFFIXES) go through PyAV, whose wheels ship FFmpeg (no system FFmpeg needed): frames are
decoded to 8-bit RGB (grey pixel formats to grey), each keeps its presentation time stamp, and the audio
streams are copied packet by packet (not re-encoded). Output: H.264 (libx264, yuv420p, CRF 18; yuv444p
when a side is odd, which 4:2:0 cannot hold) in .mp4/.mkv/.mov/.avi, VP9 (CRF 31) in .webm; lossless:
H.264 RGB with qp 0 (libx264rgb), VP9 lossless in RGB (gbrp) for .webm, so the decoded frames are exactly the
upscaled ones. Alpha in videos and samples above 8 bits are not kept.

Multi-frame images (animated GIF, WebP and PNG, multi-page TIFF) are read by Pillow (tifffile for TIFF, which
keeps 16 bits) one frame at a time: every frame as composed for display, its duration and the loop count are
kept. They are written, 8 bits except TIFF, by FFmpeg (GIF: frames quantised as Pillow quantises a GIF;
APNG: lossless) and tifffile a frame at a time, and by Pillow for WebP (see `WebPAnimationWriter`).

Frames are decoded, upscaled and encoded as a stream (`inference.upscale_frames`), so memory follows the
frame and tile sizes, not the clip length; only an animated WebP grows, by its encoded size, in memory
until it is written. Output is written under a temporary name and renamed when complete.

PyAV is imported only when a video is read or written, or a GIF or APNG written: without it, still images and
the other multi-frame images still work, and those say in one line how to install it.
"""
import contextlib
import itertools
import re
import struct
import sys
import zlib
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tifffile
from PIL import Image

from vdsr_jax.errors import ImageError, MissingDependency
from vdsr_jax.image_io import PIL_MODES, atomic_output, channels_last, pillow_image, pillow_pixels, to_8_bits
from vdsr_jax.inference import DEFAULT_BATCH, TiledVDSR, upscale_frames
from vdsr_jax.resize import BicubicWindows

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
ANIMATION_SUFFIXES = (".gif", ".webp", ".png", ".apng", ".tif", ".tiff")  # routed here when of several frames
FRAME_SUFFIXES = VIDEO_SUFFIXES + (".gif", ".apng")  # listed in folders by `upscale` beside still images
_MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".mov": "mov", ".webm": "webm"}
_MILLISECOND = Fraction(1, 1000)  # animation durations are in milliseconds
DEFAULT_CRF = {"libx264": 18, "libvpx-vp9": 31}



def pyav(path, what: str):
    """The av module (PyAV); MissingDependency naming `path` and `what` needs it where it is not installed."""
    try:
        import av
    except ModuleNotFoundError as e:
        if e.name != "av":
            raise
        raise MissingDependency(f"{path}: {what} needs PyAV, which is not installed: pip install av") from None
    return av


def _codec_errors() -> tuple[type[Exception], ...]:
    """FFmpeg's error class once PyAV is imported (only PyAV raises it), else none."""
    av = sys.modules.get("av")
    return (av.error.FFmpegError,) if av is not None else ()


class Frame(NamedTuple):
    """One decoded frame: H×W×C pixels and its timing (`pts` in the reader's `time_base`, or `duration` in
    milliseconds for animations; None where the file has none)."""

    pixels: np.ndarray
    pts: int | None = None
    duration: int | None = None


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def is_frame_file(path) -> bool:
    """A video by its suffix, or an image file of several frames (animation, multi-page TIFF)."""
    path = Path(path)
    if is_video(path):
        return True
    if path.suffix.lower() not in ANIMATION_SUFFIXES or not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            return getattr(im, "n_frames", 1) > 1
    except Exception:  # noqa: BLE001 - read_image reports damaged files with the still-image message
        return False


# ---- reading -----------------------------------------------------------------------------------------------

class VideoReader:
    """The first video stream of a container, and its audio streams; ImageError for a file that is missing,
    damaged, without a video stream or in a codec this FFmpeg cannot decode; MissingDependency without PyAV."""

    kind = "video"

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImageError(f"{self.path}: no such file" if not self.path.exists() else f"{self.path}: not a file")
        av = pyav(self.path, "reading a video")
        # PyAV < 19 decodes container metadata strictly unless told otherwise; 19 dropped the option (and the
        # strictness).
        lenient = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
        try:
            self.container = av.open(str(self.path), **lenient)
        except av.error.FFmpegError as e:
            raise ImageError(f"{self.path}: not a readable video ({_reason(e)})") from None
        try:
            if not self.container.streams.video:
                raise ImageError(f"{self.path}: holds no video stream")
            self.stream = self.container.streams.video[0]
            context = self.stream.codec_context
            if context is None or not context.width or not context.height:
                tag = getattr(self.stream, "codec_tag", None) or self.stream.metadata.get("codec", "unknown")
                raise ImageError(f"{self.path}: its video codec ({tag}) cannot be decoded (unsupported or "
                                 "unknown); convert it to H.264, VP9 or FFV1 first")
        except BaseException:
            self.container.close()
            raise
        self.audio = list(self.container.streams.audio)
        self.grey = (context.pix_fmt or "").startswith(("gray", "ya"))
        self.height, self.width = context.height, context.width
        self.channels = 1 if self.grey else 3
        self.count = self.stream.frames or None
        self.rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self.time_base = self.stream.time_base or 1 / Fraction(self.rate)
        self.loop = None
        self.decoded = 0

    def frames(self, on_audio=None):
        """Frames in presentation order; `on_audio(packet)` receives each audio packet as it is demuxed."""
        streams = [self.stream, *(self.audio if on_audio else [])]
        step = max(1, round(1 / (self.time_base * self.rate)))
        last = None
        for packet in self.container.demux(*streams):
            if packet.stream.type == "audio":
                if packet.dts is not None:
                    on_audio(packet)
                continue
            for frame in packet.decode():
                pixels = frame.to_ndarray(format="gray" if self.grey else "rgb24")
                pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
                last = pts
                self.decoded += 1
                yield Frame(pixels[..., None] if pixels.ndim == 2 else pixels, pts)
        self._check_complete(last, step)

    def _check_complete(self, last: int | None, step: int) -> None:
        """ImageError if the container promised a longer video stream (the AVI/MP4 stream duration,
        Matroska's DURATION tag) than the frames decoded cover: a truncated file."""
        duration = None
        if self.stream.duration and self.container.format.name.split(",")[0] in ("avi", "mov"):
            duration = self.stream.duration * self.time_base  # from the header (Matroska's may be the audio's)
        tag = self.stream.metadata.get("DURATION") or self.stream.metadata.get("duration")
        match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", tag or "")
        if duration is None and match:
            hours, minutes, seconds = match.groups()
            duration = Fraction(int(hours) * 3600 + int(minutes) * 60) + Fraction(seconds)
        if duration is None:
            return
        end = 0 if last is None else (last + step) * self.time_base
        if end + Fraction(3, 2) / Fraction(self.rate) < duration:
            raise ImageError(f"{self.path}: truncated or damaged: {self.decoded} frames decoded, which stop at "
                             f"{float(end):.2f} s of the {float(duration):.2f} s video stream")

    def close(self):
        self.container.close()


class AnimationReader:
    """The frames of an animated GIF, WebP or PNG (Pillow, 8 bits) or of a multi-page TIFF (tifffile)."""

    kind = "animation"

    def __init__(self, path):
        self.path = Path(path)
        self.audio, self.decoded, self.time_base = [], 0, Fraction(1, 1000)
        self.tiff = self.path.suffix.lower() in (".tif", ".tiff")
        try:
            if self.tiff:
                self.file = tifffile.TiffFile(self.path)
                first = channels_last(self.file.pages[0].asarray(), str(self.path))
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
                yield Frame(channels_last(page.asarray(), str(self.path)))
            return
        for index in range(self.count):
            self.file.seek(index)
            pixels = np.asarray(self.file.convert(PIL_MODES[self.channels]))
            self.decoded += 1
            yield Frame(pixels[..., None] if pixels.ndim == 2 else pixels,
                        duration=self.file.info.get("duration"))

    def close(self):
        self.file.close()


def open_frames(path):
    """A VideoReader for a video suffix, else an AnimationReader."""
    return VideoReader(path) if is_video(path) else AnimationReader(path)


def iter_frames(path, step: int = 1):
    """(index, H×W×C uint8 pixels) of every `step`-th frame of a video or animation, from frame 0."""
    reader = open_frames(path)
    try:
        for index, frame in enumerate(_decoding(reader)):
            if index % step == 0:
                yield index, frame.pixels
    finally:
        reader.close()


def _decoding(reader, on_audio=None):
    """reader.frames with decoding failures as one ImageError naming the frame."""
    frames = reader.frames(on_audio)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except ImageError:
            raise
        except (*_codec_errors(), OSError, ValueError, EOFError) as e:
            raise ImageError(f"{reader.path}: cannot decode frame {reader.decoded + 1} ({_reason(e)})") from None
        yield frame


# ---- writing -----------------------------------------------------------------------------------------------

def video_codec(suffix: str, height: int, width: int, crf: int | None, lossless: bool):
    """(codec, pixel format, options) for a video output; see the module docstring."""
    if suffix == ".webm":
        if lossless:
            return "libvpx-vp9", "gbrp", {"lossless": "1"}
        return "libvpx-vp9", "yuv420p", {"crf": str(DEFAULT_CRF["libvpx-vp9"] if crf is None else crf), "b": "0"}
    no_reordering = {"bf": "0"} if suffix == ".avi" else {}  # AVI stores no presentation times for B-frames
    if lossless:
        return "libx264rgb", "rgb24", {"qp": "0", **no_reordering}
    pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    return "libx264", pix_fmt, {"crf": str(DEFAULT_CRF["libx264"] if crf is None else crf), **no_reordering}


class VideoWriter:
    def __init__(self, av, tmp: Path, suffix: str, reader, height: int, width: int, crf, lossless: bool):
        self.av = av  # PyAV
        self.container = self.av.open(str(tmp), "w", format=_MUXERS[suffix])
        codec, pix_fmt, options = video_codec(suffix, height, width, crf, lossless)
        rate = reader.rate or Fraction(25)
        self.stream = self.container.add_stream(codec, rate=rate, options=options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.stream.time_base = self.stream.codec_context.time_base = reader.time_base
        self.audio = {}
        for stream in reader.audio:
            self.audio[stream.index] = self.container.add_stream_from_template(stream)
        self.time_base = reader.time_base
        self.clock = 0

    def mux_audio(self, packet):
        packet.stream = self.audio[packet.stream.index]
        self.container.mux(packet)

    def write(self, pixels: np.ndarray, frame: Frame):
        rgb = np.repeat(pixels, 3, axis=-1) if pixels.shape[-1] == 1 else pixels[..., :3]
        out = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        if frame.pts is not None:
            out.pts = frame.pts
        else:  # an animation: durations in milliseconds
            out.pts = self.clock
            self.clock += frame.duration or 100
        out.time_base = self.time_base
        self.container.mux(self.stream.encode(out))

    def close(self):
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def abort(self):
        with contextlib.suppress(Exception):
            self.container.close()


class FFmpegAnimationWriter:
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


class WebPAnimationWriter:
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


class TiffPagesWriter:
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


def check_output(reader, target: Path) -> None:
    """ImageError before any work if `target`'s suffix cannot hold what `reader` gives."""
    suffix = target.suffix.lower()
    if reader.kind == "video" and suffix not in VIDEO_SUFFIXES:
        raise ImageError(f"{target}: a video is written as a video ({', '.join(VIDEO_SUFFIXES)})")
    if suffix not in VIDEO_SUFFIXES + ANIMATION_SUFFIXES:
        raise ImageError(f"{target}: cannot hold frames (use {', '.join(VIDEO_SUFFIXES + ANIMATION_SUFFIXES)})")


def _writer(tmp: Path, target: Path, reader, height: int, width: int, crf, lossless: bool):
    suffix = target.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoWriter(pyav(target, "writing a video"), tmp, suffix, reader, height, width, crf, lossless)
    if suffix in (".tif", ".tiff"):
        return TiffPagesWriter(tmp)
    if suffix == ".webp":
        return WebPAnimationWriter(tmp, reader, lossless)
    return FFmpegAnimationWriter(pyav(target, f"writing {suffix[1:].upper()}"), tmp, suffix, reader, height, width)


def upscale_frame_file(source, target, scale: float, net: TiledVDSR, crf: int | None = None,
                       lossless: bool = False, batch: int = DEFAULT_BATCH, progress=None) -> int:
    """Upscale every frame of a video or multi-frame image `source` into `target` (see the module
    docstring); returns the number of frames. `progress.update(1)` per frame. ImageError naming the file
    (and the frame, for a decoding failure); MissingDependency naming it where PyAV is needed and not
    installed (videos; GIF and APNG output); KeyboardInterrupt saying after how many frames it stopped.
    Nothing is left at `target` unless every frame was written."""
    source, target = Path(source), Path(target)
    reader = open_frames(source)
    written = 0
    try:
        check_output(reader, target)
        height, width = BicubicWindows(reader.height, reader.width, scale).out_shape
        if progress is not None:
            progress.reset(total=reader.count)
        with atomic_output(target) as tmp:
            try:
                writer = _writer(tmp, target, reader, height, width, crf, lossless)
            except (*_codec_errors(), ValueError) as e:
                raise ImageError(f"{target}: cannot write ({_reason(e)})") from None
            try:
                frames = ((frame.pixels, frame) for frame in _decoding(reader, getattr(writer, "mux_audio", None)))
                for pixels, frame in upscale_frames(frames, scale, net, batch):
                    if pixels.shape[:2] != (height, width) and not isinstance(writer, TiffPagesWriter):
                        raise ImageError(f"{source}: frame {written + 1} changes the frame size")
                    writer.write(pixels, frame)
                    written += 1
                    if progress is not None:
                        progress.update(1)
                if not written:
                    raise ImageError(f"{source}: holds no decodable frame")
                writer.close()
            except KeyboardInterrupt:
                writer.abort()
                raise KeyboardInterrupt(f"{source}: stopped after {written} frames written "
                                        f"({reader.decoded} decoded); nothing written to {target}") from None
            except ImageError as e:
                writer.abort()
                raise ImageError(f"{e}; stopped after {written} frames, nothing written to {target}") from None
            except (*_codec_errors(), ValueError) as e:
                writer.abort()
                raise ImageError(f"{target}: cannot write frame {written + 1} ({_reason(e)}); "
                                 f"nothing written to {target}") from None
            except BaseException:
                writer.abort()
                raise
    finally:
        reader.close()
    return written


def frame_summary(path) -> dict:
    """Frame count, size and timing of a file (tests and the benchmark)."""
    reader = open_frames(path)
    try:
        frames = list(itertools.islice(_decoding(reader), None))
    finally:
        reader.close()
    return {"count": len(frames), "size": (reader.width, reader.height), "loop": reader.loop,
            "pts": [f.pts for f in frames], "durations": [f.duration for f in frames]}
