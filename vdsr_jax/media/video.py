"""Videos through PyAV, whose wheels ship FFmpeg (no system FFmpeg needed).

Reading: the first video stream's frames are decoded to 8-bit RGB (grey pixel formats to grey), each keeps its
presentation time stamp, and the audio streams are handed on packet by packet, to be copied (not re-encoded).
Writing: H.264 (libx264, yuv420p, CRF 18; yuv444p when a side is odd, which 4:2:0 cannot hold) in
.mp4/.mkv/.mov/.avi, VP9 (CRF 31) in .webm; lossless: H.264 RGB with qp 0 (libx264rgb), VP9 lossless in RGB
(gbrp) for .webm, so the decoded frames are exactly the written ones. Alpha and samples above 8 bits are not
kept.

PyAV is imported when a video is opened or a writer made (`pyav`), not with this module.
"""
import contextlib
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from vdsr_jax.errors import ImageError, MissingDependency
from vdsr_jax.media.frames import Frame, FrameReader, FrameWriter

_MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".mov": "mov", ".webm": "webm"}
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


def codec_errors() -> tuple[type[Exception], ...]:
    """FFmpeg's error class once PyAV is imported (only PyAV raises it), else none."""
    av = sys.modules.get("av")
    return (av.error.FFmpegError,) if av is not None else ()


def reason(e: Exception) -> str:
    """The words of an OSError or codec error, without its number."""
    return getattr(e, "strerror", None) or str(e)


# ---- reading -----------------------------------------------------------------------------------------------

class VideoReader(FrameReader):
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
            raise ImageError(f"{self.path}: not a readable video ({reason(e)})") from None
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


class VideoWriter(FrameWriter):
    """A video of `reader`'s frame rate and time base, holding a copy of its audio streams (`video_codec`)."""

    muxes_audio = True

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

