"""Videos through PyAV, whose wheels ship FFmpeg (no system FFmpeg needed).

Reading: the first video stream's frames are decoded by FFmpeg to 8-bit RGB, or to 8-bit grey for grey pixel
formats (samples above 8 bits are rounded by FFmpeg's conversion), with the colorspace and range the file
states; its display matrix (a phone's rotation, a mirroring) is applied to the pixels, as FFmpeg's own
autorotation does; its ICC profile (an MP4/MOV 'colr' box) is kept as `metadata`. Frames with alpha
(yuva420p, rgba, ya8, …, or a palette whose first frame uses a transparent entry) are refused, as no video
output written here can hold it. Each frame keeps its presentation time stamp and duration; the file's other
streams (audio, subtitles, data, attachments, further video streams) are handed on packet by packet.

Writing: H.264 (libx264, yuv420p, CRF 18; yuv444p when a side is odd, which 4:2:0 cannot hold) in
.mp4/.mkv/.mov/.avi, VP9 (CRF 31) in .webm; lossless: H.264 RGB with qp 0 (libx264rgb), VP9 lossless in RGB
(gbrp) for .webm, so the decoded frames are exactly the written ones. Grey frames are written as colour of
equal channels (FFmpeg decodes H.264's grey 4:0:0 as 4:2:0 colour anyway).
Each frame is written at its time stamp in the source's time base (AVI: see `output_time_base`), its
packets carrying its duration, so the last frame keeps its own; no stream is shifted to start at 0
(a copied audio stream's priming samples before 0 stay there, where the container takes it).
The sample aspect ratio and the colour description (colorspace, range, primaries, transfer) are kept: YUV
output is converted from RGB with the source's matrix and range and tagged with all four. The source's ICC
profile goes into MP4 and MOV outputs as a 'colr' box (`mp4`); the other containers have no place for one.
The container's tags (title, creation time, place, …; not those of how it was written) and chapters, and
each stream's language and title, are kept where the output's muxer writes them (`plan_metadata`). Every
other stream of the source is decided on before the first frame, by asking FFmpeg's muxer to take a packet
of it (a header and one packet, in memory): copied as it is; audio the muxer refuses is converted to the
muxer's default audio codec (said in a note); anything else refused is an ImageError naming the stream.

PyAV is imported when a video is opened or a writer made (`pyav`), not with this module.
"""
import contextlib
import io
import math
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np

from vdsr_jax.errors import ConfigError, ImageError, MissingDependency
from vdsr_jax.media import mp4
from vdsr_jax.media.frames import Frame, FrameReader, FrameWriter
from vdsr_jax.media.images import NO_METADATA, ImageMetadata, orient, to_8_bits, to_channels

_MUXERS = {".mp4": "mp4", ".mkv": "matroska", ".avi": "avi", ".mov": "mov", ".webm": "webm"}
# Container tags that say how the source file was written (its brands, the program that wrote it), not what it
# holds: the output's muxer writes its own.
_WRITING_TAGS = ("major_brand", "minor_version", "compatible_brands", "encoder", "software")
# A stream's tags that describe its content (the others describe its encoding: handler, statistics).
_STREAM_TAGS = ("language", "title")

DEFAULT_CRF = {"libx264": 18, "libvpx-vp9": 31}
# The CRF each encoder takes: libvpx-vp9's FFmpeg option range, x264's for 8-bit samples (FFmpeg's libx264
# option takes any number; x264 fails below 0 and clamps above 51). PyAV does not expose option ranges.
CRF_RANGE = {"libx264": (0, 51), "libvpx-vp9": (0, 63)}
# FFmpeg's colour description fields, each with the values that say nothing (unspecified, reserved; a
# colorspace of 0 is RGB itself, which a YUV output cannot be tagged with): libavutil/pixfmt.h
UNSPECIFIED_COLOUR = {"colorspace": (0, 2), "color_range": (0,), "color_primaries": (0, 2), "color_trc": (0, 2)}


def _stream_tag(key: str) -> str:
    """A stream tag's name as `content_tags` gives it: lowercase; FFmpeg's MP4/MOV reader calls a track's title
    (which its muxer writes from "title") "name"."""
    key = key.lower()
    return "title" if key == "name" else key


def content_tags(stream) -> dict[str, str]:
    """A stream's language and title (PyAV stream metadata), without FFmpeg's "und" (undetermined) language."""
    tags = {_stream_tag(k): v for k, v in stream.metadata.items()}
    return {k: v for k, v in tags.items() if k in _STREAM_TAGS and (k, v) != ("language", "und")}


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
    """The words of an OSError or codec error, without its number; with FFmpeg's last error line where PyAV
    captured one (see `ffmpeg_says`), which names the cause (e.g. "mp4: unsupported channel layout")."""
    words = getattr(e, "strerror", None) or str(e)
    logged = str(e).partition("last error log: ")[2]
    return f"{words}: {logged.strip()}" if logged else words


@contextlib.contextmanager
def ffmpeg_says(av):
    """Within the block, FFmpeg's error lines are captured (not printed), so that a failing call's error
    carries its cause (PyAV adds the last one to the error's words)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture():
            yield
    finally:
        av.logging.set_level(level)


def colour_description(frame) -> dict[str, int]:
    """The colour fields of a decoded frame that say something (see UNSPECIFIED_COLOUR); a PyAV without one of
    them (older than 18 for primaries and transfer) leaves it out."""
    described = {}
    for name, unspecified in UNSPECIFIED_COLOUR.items():
        value = getattr(frame, name, None)
        if value is not None and int(value) not in unspecified:
            described[name] = int(value)
    return described


def display_orientation(matrix, path) -> int:
    """The EXIF orientation (1-8, as `images.orient` applies it) that shows a frame as FFmpeg's autorotation
    does for a display `matrix` (9 int32, libavutil/display.h; None: upright). FFmpeg's rule (fftools:
    get_rotation, then the transpose/hflip/vflip filters it inserts): theta, the clockwise angle of the matrix,
    rounded; 90: transpose clockwise (counter-clockwise and flipped where matrix[3] > 0); 180: hflip where
    matrix[0] < 0 and vflip where matrix[4] < 0; 270: counter-clockwise (clockwise and flipped where
    matrix[3] < 0); 0: vflip where matrix[4] < 0. ImageError for another angle (FFmpeg would rotate by it,
    which a frame of pixels cannot be without resampling)."""
    if matrix is None:
        return 1
    m = [float(v) for v in matrix]
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if not scale0 or not scale1:
        return 1  # a degenerate matrix: FFmpeg ignores it too
    clockwise = math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))  # minus av_display_rotation_get
    theta = float(round(clockwise)) % 360
    if theta == 90:
        return 5 if m[3] > 0 else 6
    if theta == 270:
        return 7 if m[3] < 0 else 8
    if theta == 180:
        return {(True, True): 3, (True, False): 2, (False, True): 4, (False, False): 1}[(m[0] < 0, m[4] < 0)]
    if theta == 0:
        return 4 if m[4] < 0 else 1
    raise ImageError(f"{path}: its display matrix rotates the picture by {theta:g}°; only quarter turns are "
                     "applied")


# ---- reading -----------------------------------------------------------------------------------------------

class VideoReader(FrameReader):
    """The first video stream of a container, and its other streams; ImageError for a file that is missing,
    damaged, without a video stream, in a codec this FFmpeg cannot decode, with alpha, or with a display
    matrix that is not a multiple of a quarter turn; MissingDependency without PyAV."""

    kind = "video"

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImageError(f"{self.path}: no such file" if not self.path.exists() else f"{self.path}: not a file")
        self.av = av = pyav(self.path, "reading a video")
        try:
            self.container = self._open()
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
            self.orientation, icc, first = self._first_frame()
            pixel_format = first.format  # as decoded (a stream may state none before its first frame)
            components = len(pixel_format.components)
            if pixel_format.has_palette and (first.to_ndarray(format="rgba")[..., 3] < 255).any():
                components = 4  # a palette's alpha, in use (FFmpeg flags every palette as having alpha)
            if components in (2, 4):
                raise ImageError(f"{self.path}: its frames carry alpha ({pixel_format.name}), which no video "
                                 "written here can hold; convert it to a pixel format without alpha first")
        except BaseException:
            self.container.close()
            raise
        # a stream FFmpeg's demuxer discards is no stream of the file's content: an MP4/MOV chapter track, read
        # as the chapters
        self.streams = [s for s in self.container.streams
                        if s.index != self.stream.index and s.discard != av.stream.Discard.all]
        self.tags = {k: v for k, v in self.container.metadata.items() if k.lower() not in _WRITING_TAGS}
        self.stream_tags = content_tags(self.stream)
        self.chapters = self.container.chapters()
        self.grey = components == 1 and not pixel_format.has_palette
        self.channels = 1 if self.grey else 3
        self.height, self.width = context.height, context.width
        sample_aspect = context.sample_aspect_ratio
        self.sample_aspect_ratio = Fraction(sample_aspect) if sample_aspect else None
        if self.orientation >= 5:  # a quarter turn: the displayed frame is the coded one transposed
            self.height, self.width = self.width, self.height
            self.sample_aspect_ratio = 1 / self.sample_aspect_ratio if self.sample_aspect_ratio else None
        self.colour = colour_description(first)
        self.metadata = ImageMetadata(icc)
        if pixel_format.is_rgb or pixel_format.has_palette:  # no YUV matrix, no YUV range
            self.colour = {k: v for k, v in self.colour.items() if k not in ("colorspace", "color_range")}
        self.count = self.stream.frames or None
        self.rate = self.stream.average_rate or self.stream.guessed_rate or Fraction(25)
        self.time_base = self.stream.time_base or 1 / Fraction(self.rate)

    def _open(self):
        # PyAV < 19 decodes container metadata strictly unless told otherwise; 19 dropped the option (and the
        # strictness).
        lenient = {"metadata_errors": "ignore"} if int(self.av.__version__.split(".")[0]) < 19 else {}
        return self.av.open(str(self.path), **lenient)

    def _first_frame(self):
        """(EXIF orientation 1-8 that shows the frames upright, the ICC profile or None, the first frame), read
        from the side data of the first frame (its display matrix; the profile, which FFmpeg takes from an
        MP4/MOV 'colr' box) in a second opening of the file, so that no packet of this one is consumed."""
        with self._open() as container:
            try:
                first = next(container.decode(container.streams.video[0]), None)
            except self.av.error.FFmpegError as e:
                raise ImageError(f"{self.path}: cannot decode frame 1 ({reason(e)})") from None
        if first is None:
            raise ImageError(f"{self.path}: holds no decodable video frame")
        side_data = first.side_data  # iterating it gives the side data up to PyAV 18, their types from 19
        entries = [item if hasattr(item, "type") else side_data[item] for item in side_data]

        def entry(kind):
            return next((bytes(data) for data in entries
                         if getattr(data.type, "name", str(data.type)).endswith(kind)), None)

        matrix = entry("DISPLAYMATRIX")
        matrix = None if matrix is None else np.frombuffer(matrix, np.int32)[:9]
        return display_orientation(matrix, self.path), entry("ICC_PROFILE"), first

    def frames(self, on_packet=None):
        """Frames in presentation order, upright; `on_packet(packet)` receives each packet of `streams` as it is
        demuxed."""
        streams = [self.stream, *(self.streams if on_packet else [])]
        step = max(1, round(1 / (self.time_base * self.rate)))
        last = None
        colour = {"src_colorspace": self.colour.get("colorspace"), "src_color_range": self.colour.get("color_range")}
        for packet in self.container.demux(*streams):
            if packet.stream.index != self.stream.index:
                if packet.dts is not None:
                    on_packet(packet)
                continue
            for frame in packet.decode():
                pixels = frame.to_ndarray(format="gray" if self.grey else "rgb24", **colour)
                pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
                last = pts
                self.decoded += 1
                yield Frame(orient(pixels[..., None] if pixels.ndim == 2 else pixels, self.orientation), pts,
                            getattr(frame, "duration", None) or None)  # (PyAV < 14 has no frame durations)
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

def output_time_base(muxer: str, reader) -> Fraction:
    """The time base of a video output: the reader's, so that every frame keeps its time stamp; for AVI, one
    frame period of a video's rate. AVI stores a frame rate, not time stamps: a finer time base is stored as
    empty frames between the frames (its muxer, libavformat avienc.c, even replaces one of more than 1000
    ticks a second with 1/600 s), and FFmpeg reads each H.264 frame of such a file at the next one's time."""
    if muxer == "avi" and reader.rate:
        return 1 / Fraction(reader.rate)
    return reader.time_base


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


def check_crf(suffix: str, crf: int | None) -> None:
    """ConfigError unless `crf` (None: the default) is in the range of the encoder `video_codec` picks for a
    `suffix` output (CRF_RANGE)."""
    codec = video_codec(suffix, 2, 2, None, False)[0]
    low, high = CRF_RANGE[codec]
    if crf is not None and not low <= crf <= high:
        raise ConfigError(f"--crf {crf}: {codec} (for {suffix}) takes {low} to {high}")


def describe(stream) -> str:
    """"audio stream 1 (pcm_s16le)": a stream as messages name it (its index in the file, its codec)."""
    context = getattr(stream, "codec_context", None)
    name = getattr(stream, "name", None) if stream.type == "attachment" else None  # its file name
    codec = getattr(context, "name", None) or name or stream.metadata.get("handler_name") or "unknown codec"
    return f"{stream.type} stream {stream.index} ({codec})"


def _layout(context) -> str:
    """The channel layout of an audio stream as an encoder takes it: FFmpeg's default layout for a bare
    channel count of one or two ("2 channels", as AVI and WAV state it, is stereo)."""
    name = context.layout.name
    return {"1 channels": "mono", "2 channels": "stereo"}.get(name, name)


def _refusal(av, muxer: str, add, packet=None) -> str | None:
    """None where FFmpeg's `muxer` writes, in memory, a file holding the stream that `add(container)` adds
    (its header, `packet` if given, its trailer); else FFmpeg's reason."""
    failure = None
    with ffmpeg_says(av):
        container = av.open(io.BytesIO(), "w", format=muxer)
        try:
            stream = add(container)
            container.start_encoding()
            if packet is not None:
                packet.stream = stream
                container.mux(packet)
        except (av.error.FFmpegError, ValueError, TypeError, NotImplementedError) as e:
            failure = reason(e)
        try:
            container.close()
        except (av.error.FFmpegError, ValueError) as e:
            failure = failure or reason(e)
    return failure


def _first_packets(reader) -> dict[int, object]:
    """The first packet of each of `reader.streams` that has one (attachments have none), from a second
    opening of the file, demuxed until each stream has given one or the file ends."""
    wanted = {s.index for s in reader.streams if s.type != "attachment"}
    found = {}
    with reader._open() as container:
        streams = [s for s in container.streams if s.index in wanted]
        for packet in container.demux(*streams) if streams else ():
            if packet.dts is not None and packet.size and packet.stream.index not in found:
                found[packet.stream.index] = packet
                if len(found) == len(wanted):
                    break
    return found


def plan_streams(av, reader, muxer: str, suffix: str) -> tuple[list, list[str]]:
    """What becomes of each of `reader.streams` in a `muxer` file, decided before any frame: ([(stream, None)
    to copy it, or (stream, codec) to convert it], notes for the user). A stream is copied where FFmpeg's
    muxer takes a packet of it as it is; audio it refuses is converted to the muxer's default audio codec;
    ImageError naming the stream and FFmpeg's reason where neither works."""
    samples = _first_packets(reader) if reader.streams else {}
    plan, notes = [], []
    for stream in reader.streams:
        refusal = _refusal(av, muxer, lambda c, s=stream: c.add_stream_from_template(s), samples.get(stream.index))
        if refusal is None:
            plan.append((stream, None))
            if stream.type == "video":
                notes.append(f"{reader.path}: {describe(stream)} is copied as it is (only the first video stream "
                             "is upscaled)")
            continue
        if stream.type == "audio":
            with av.open(io.BytesIO(), "w", format=muxer) as probe:
                codec = probe.default_audio_codec
            converted = lambda c, s=stream, k=codec: _audio_stream(av, c, k, s)  # noqa: E731
            if codec not in (None, "none") and _refusal(av, muxer, converted) is None:
                plan.append((stream, codec))
                notes.append(f"{reader.path}: {describe(stream)} is converted to {codec} for {suffix} "
                             f"({refusal})")
                continue
        raise ImageError(f"{reader.path}: its {describe(stream)} cannot go into {suffix} ({refusal}); "
                         "write a container that takes it, or remove the stream first")
    return plan, notes


def plan_metadata(av, reader, muxer: str, suffix: str) -> list[str]:
    """Notes on what of the reader's tags and chapters a `muxer` file does not keep, as FFmpeg reads back a
    file written in memory with all of them (one 16×16 frame in a video stream for each of the reader's
    streams with tags, carrying that stream's): Matroska and WebM keep any tag, MP4 and MOV the ones FFmpeg's
    muxer maps to their own places (title, artist, comment, creation time, place, …; not a phone's QuickTime
    keys such as com.apple.quicktime.make; a language only where QuickTime has a code for it), AVI a few
    (title, artist, comment, …), and AVI no chapters."""
    others = {describe(s): content_tags(s) for s in reader.streams}
    streams = {"video stream": reader.stream_tags, **{name: tags for name, tags in others.items() if tags}}
    if not reader.tags and not any(streams.values()) and not reader.chapters:
        return []
    codec, pix_fmt, codec_options = video_codec(suffix, 16, 16, None, False)
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24").reformat(format=pix_fmt)
    buffer = io.BytesIO()
    with ffmpeg_says(av), av.open(buffer, "w", format=muxer) as probe:
        probe.metadata.update(reader.tags)
        probe.set_chapters(reader.chapters)
        probes = []
        for tags in streams.values():
            stream = probe.add_stream(codec, rate=25, options=codec_options)
            stream.width, stream.height, stream.pix_fmt = 16, 16, pix_fmt
            stream.metadata.update(tags)
            probes.append(stream)
        for stream in probes:
            probe.mux(stream.encode(frame))
            probe.mux(stream.encode(None))
    with av.open(io.BytesIO(buffer.getvalue())) as written:
        kept, chapters = {key.lower() for key in written.metadata}, written.chapters()
        kept_in = [{_stream_tag(key): value for key, value in s.metadata.items()} for s in written.streams.video]
    lost = [key for key in reader.tags if key.lower() not in kept]
    lost += [f"{key} ({name})" for (name, tags), read in zip(streams.items(), kept_in, strict=True)
             for key, value in tags.items() if read.get(key) != value]
    notes = []
    if lost:
        notes.append(f"{reader.path}: tags not kept in {suffix}, which FFmpeg's {muxer} muxer does not write: "
                     f"{', '.join(lost)}")
    if reader.chapters and not chapters:
        notes.append(f"{reader.path}: its {len(reader.chapters)} chapters are not kept in {suffix} (it holds none)")
    return notes


def _audio_stream(av, container, codec: str, source):
    """An output audio stream in `codec` for the decoded audio of `source`: its channel layout, and its sample
    rate or the nearest one the encoder takes (PyAV's encoder resamples the frames to the stream's settings)."""
    context = source.codec_context
    rate, supported = context.sample_rate, av.Codec(codec, "w").audio_rates
    if supported and rate not in supported:
        rate = min(supported, key=lambda r: abs(r - rate))
    return container.add_stream(codec, rate=rate, layout=_layout(context))


class VideoWriter(FrameWriter):
    """A video of `reader`'s frame rate, time base, sample aspect ratio and colour description, holding its other
    streams as `plan_streams` decides (`video_codec`); `note(text)` receives what is converted. The colour
    profile of `metadata` (which `images.kept_metadata` gives MP4 and MOV outputs only) is added to the
    finished file (`mp4.insert_icc_profile`)."""

    muxes_streams = True

    def __init__(self, av, tmp: Path, suffix: str, reader, height: int, width: int, crf, lossless: bool,
                 note=None, metadata=NO_METADATA):
        self.av = av  # PyAV
        self.tmp, self.metadata = tmp, metadata
        muxer = _MUXERS[suffix]
        plan, notes = plan_streams(av, reader, muxer, suffix)
        notes += plan_metadata(av, reader, muxer, suffix)
        self.container = self.av.open(str(tmp), "w", format=muxer, options={"avoid_negative_ts": "disabled"})
        try:
            self.container.metadata.update(reader.tags)
            if reader.chapters:
                self.container.set_chapters(reader.chapters)
            codec, self.pix_fmt, options = video_codec(suffix, height, width, crf, lossless)
            self.stream = self.container.add_stream(codec, rate=reader.rate or Fraction(25), options=options)
            self.stream.metadata.update(reader.stream_tags)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, self.pix_fmt
            context = self.stream.codec_context
            self.time_base = output_time_base(muxer, reader)
            self.stream.time_base = context.time_base = self.time_base
            if reader.sample_aspect_ratio:
                context.sample_aspect_ratio = reader.sample_aspect_ratio
            # a YUV output is converted with the source's matrix and range, and says so; an RGB one keeps values
            self.colour = dict(reader.colour) if self.pix_fmt.startswith("yuv") else {}
            for name, value in self.colour.items():
                if hasattr(context, name):
                    setattr(context, name, value)
            self.copies, self.converts = {}, {}
            for stream, convert_to in plan:
                if convert_to is None:
                    out = self.copies[stream.index] = self.container.add_stream_from_template(stream)
                else:
                    out = _audio_stream(av, self.container, convert_to, stream)
                    self.converts[stream.index] = (stream, out)
                out.metadata.update(content_tags(stream))
        except BaseException:
            self.abort()
            raise
        for text in notes:
            (note or print)(text)
        self.ticks = reader.time_base / self.time_base  # output ticks per source tick
        self.frame_period = 1 / Fraction(reader.rate or 25) / self.time_base  # in output ticks
        self.clock = 0  # an animation's time, in its milliseconds
        self.last_pts = None
        # FFmpeg reads an H.264 frame in AVI at the next frame's slot (it assumes reordering, with no time stamps
        # to say otherwise): AVI frames are written a frame early where the first is not at 0, to read back in
        # place
        self.read_delay, self.shift = (1 if muxer == "avi" else 0), 0
        self.durations = {}  # output pts -> duration in output ticks (None until the next frame gives it)
        self.held = []  # encoded packets waiting for their frame's duration

    def mux_packet(self, packet):
        index = packet.stream.index
        if index in self.copies:
            packet.stream = self.copies[index]
            self.container.mux(packet)
        else:
            _, out = self.converts[index]
            for frame in packet.decode():
                self.container.mux(out.encode(frame))

    def write(self, pixels: np.ndarray, frame: Frame):
        # colour, an opaque alpha channel left out (`frame_files.check_output` refuses any other)
        out = self.av.VideoFrame.from_ndarray(to_channels(to_8_bits(pixels), 3), format="rgb24")
        if self.colour:
            out = out.reformat(format=self.pix_fmt, dst_colorspace=self.colour.get("colorspace"),
                               dst_color_range=self.colour.get("color_range"))
        if frame.pts is not None:
            start = frame.pts
        else:  # an animation: its frames are shown one after another, for their durations
            start = self.clock
            self.clock += frame.duration or 100
        pts = round(start * self.ticks)
        if self.last_pts is None:
            self.shift = min(pts, self.read_delay)
        pts -= self.shift
        if self.last_pts is not None:
            pts = max(pts, self.last_pts + 1)  # two frames that round to one tick (a coarser AVI time base)
            if self.durations[self.last_pts] is None:
                self.durations[self.last_pts] = pts - self.last_pts
        duration = frame.duration or (100 if frame.pts is None else None)
        self.durations[pts] = None if duration is None else max(1, round(duration * self.ticks))
        self.last_pts = out.pts = pts
        out.time_base = self.time_base
        self._mux_frames(self.stream.encode(out))

    def _mux_frames(self, packets, last: bool = False):
        """Mux encoded packets in order, each with its frame's duration (so the last frame keeps its own, which
        the muxers otherwise guess); held until the next frame gives it, unless `last`."""
        self.held.extend(packets)
        while self.held and (last or self.durations.get(self.held[0].pts) is not None):
            packet = self.held.pop(0)
            duration = self.durations.pop(packet.pts, None)
            if duration:
                packet.duration = duration
            self.container.mux(packet)

    def close(self):
        if self.durations.get(self.last_pts, 0) is None:  # a last frame without a duration: a frame period
            self.durations[self.last_pts] = max(1, round(self.frame_period))
        self._mux_frames(self.stream.encode(None), last=True)
        for source, out in self.converts.values():
            for frame in source.codec_context.decode(None):
                self.container.mux(out.encode(frame))
            self.container.mux(out.encode(None))
        self.container.close()
        if self.metadata.icc_profile:
            mp4.insert_icc_profile(self.tmp, self.metadata.icc_profile)

    def abort(self):
        with contextlib.suppress(Exception):
            self.container.close()
