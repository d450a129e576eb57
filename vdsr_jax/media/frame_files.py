"""Frame files (videos and multi-frame images) as streams: which reader a file gets and which writer an output,
decoding failures worded as one error naming the frame, and `transcode`, which rewrites a file frame by frame.
A still image (or a GIF or APNG of one frame) is a file of one frame, read as `images.read_image` reads it,
so that it can be written in a format only the frame writers write (GIF, APNG).

Frames are decoded, processed and encoded as a stream, so memory follows the frame size (and what the
processing holds), not the clip length; only an animated WebP grows, by its encoded size, in memory until it
is written. Output is written under a temporary name and renamed when complete.

PyAV is imported only when a video is read or written, or a GIF or APNG written: without it, still images and
the other multi-frame images still work, and those say in one line how to install it.
"""
import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path

from PIL import Image

from vdsr_jax.errors import ImageError
from vdsr_jax.media.animation import (AnimationReader, FFmpegAnimationWriter, TiffPagesWriter, WebPAnimationWriter,
                                      is_opaque)
from vdsr_jax.media.frames import ANIMATION_SUFFIXES, VIDEO_SUFFIXES, Frame, FrameReader, FrameWriter
from vdsr_jax.media.images import atomic_output, kept_metadata, metadata_note, read_image_and_metadata
from vdsr_jax.media.video import VideoReader, VideoWriter, codec_errors, pyav, reason

# (pixels, frame) pairs in, (processed pixels, frame) pairs out, in order; see `transcode`
Process = Callable[[Iterable[tuple]], Iterable[tuple]]


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

class StillReader(FrameReader):
    """An image of one frame, as `images.read_image_and_metadata` reads it (EXIF orientation applied, 16-bit
    PNG kept; its colour profile and EXIF), with the delay and loop count its file states (GIF, APNG)."""

    kind = "still"

    def __init__(self, path):
        self.path = Path(path)
        self.pixels, self.metadata = read_image_and_metadata(self.path)
        self.height, self.width, self.channels = self.pixels.shape
        self.grey = self.channels <= 2
        self.opaque = is_opaque(self.pixels)
        self.count, self.rate, self.time_base = 1, None, Fraction(1, 1000)
        self.loop = self.duration = None
        with contextlib.suppress(OSError), Image.open(self.path) as im:  # (a TIFF only tifffile reads has neither)
            self.loop, self.duration = im.info.get("loop"), im.info.get("duration")

    def frames(self, on_packet=None):
        self.decoded = 1
        yield Frame(self.pixels, duration=self.duration)

    def close(self):
        pass


def open_frames(path) -> FrameReader:
    """A VideoReader for a video suffix, an AnimationReader for an image file of several frames, else a
    StillReader; ImageError for a file that cannot be read, MissingDependency for a video without PyAV."""
    if is_video(path):
        return VideoReader(path)
    return AnimationReader(path) if is_frame_file(path) else StillReader(path)


def iter_frames(path, step: int = 1):
    """(index, H×W×C uint8 pixels) of every `step`-th frame of a video or animation, from frame 0."""
    with open_frames(path) as reader:
        for index, frame in enumerate(_decoding(reader)):
            if index % step == 0:
                yield index, frame.pixels


def _decoding(reader: FrameReader, on_packet=None) -> Iterator[Frame]:
    """reader.frames with decoding failures as one ImageError naming the frame."""
    frames = reader.frames(on_packet)
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except ImageError:
            raise
        except (*codec_errors(), OSError, ValueError, EOFError) as e:
            raise ImageError(f"{reader.path}: cannot decode frame {reader.decoded + 1} ({reason(e)})") from None
        yield frame


def frame_summary(path) -> dict:
    """Frame count, size and timing of a file (tests and the benchmark)."""
    with open_frames(path) as reader:
        frames = list(itertools.islice(_decoding(reader), None))
    return {"count": len(frames), "size": (reader.width, reader.height), "loop": reader.loop,
            "pts": [f.pts for f in frames], "durations": [f.duration for f in frames]}


# ---- writing -----------------------------------------------------------------------------------------------

def check_output(reader: FrameReader, target: Path) -> None:
    """ImageError before any work if `target`'s suffix cannot hold what `reader` gives (a video's streams are
    checked when its writer is made, still before the first frame)."""
    suffix = target.suffix.lower()
    if reader.kind == "video" and suffix not in VIDEO_SUFFIXES:
        raise ImageError(f"{target}: a video is written as a video ({', '.join(VIDEO_SUFFIXES)})")
    if suffix not in VIDEO_SUFFIXES + ANIMATION_SUFFIXES:
        raise ImageError(f"{target}: cannot hold frames (use {', '.join(VIDEO_SUFFIXES + ANIMATION_SUFFIXES)})")
    if suffix in VIDEO_SUFFIXES and not reader.opaque:  # an alpha channel all opaque is left out
        raise ImageError(f"{target}: the videos written here cannot hold the transparency of {reader.path}; "
                         "write .png, .webp, .gif or .tif")


# The format of each animation suffix, for what of an image's metadata it holds (`images.kept_metadata`).
ANIMATION_FORMATS = {".gif": "GIF", ".webp": "WEBP", ".png": "PNG", ".apng": "PNG", ".tif": "TIFF",
                     ".tiff": "TIFF"}


def metadata_format(target: Path) -> str:
    """The format name of an animation or video output, as `images.kept_metadata` takes it (MP4 and MOV hold a
    profile, the other video containers nothing)."""
    suffix = target.suffix.lower()
    if suffix in ANIMATION_FORMATS:
        return ANIMATION_FORMATS[suffix]
    return suffix[1:].upper() if suffix in (".mp4", ".mov") else f"{suffix[1:].upper()} video"


def open_writer(tmp: Path, target: Path, reader: FrameReader, height: int, width: int, crf,
                lossless: bool, note=None) -> FrameWriter:
    """The writer for `target`'s suffix, writing height×width frames to `tmp` (`note(text)`: what a video writer
    converts), with what of the reader's `metadata` the format holds (`images.kept_metadata`);
    MissingDependency naming `target` where it needs PyAV (videos, GIF, APNG) and PyAV is not installed."""
    suffix = target.suffix.lower()
    metadata = kept_metadata(metadata_format(target), reader.metadata, reader.channels)
    if suffix in VIDEO_SUFFIXES:
        return VideoWriter(pyav(target, "writing a video"), tmp, suffix, reader, height, width, crf, lossless,
                           note, metadata)
    if suffix in (".tif", ".tiff"):
        return TiffPagesWriter(tmp, metadata)
    if suffix == ".webp":
        return WebPAnimationWriter(tmp, reader, lossless, height, width, metadata)
    return FFmpegAnimationWriter(pyav(target, f"writing {suffix[1:].upper()}"), tmp, suffix, reader, height, width,
                                 metadata)


def transcode(source, target, out_shape: Callable[[int, int], tuple[int, int]], process: Process,
              crf: int | None = None, lossless: bool = False, progress=None, overwrite: bool = False,
              note=None) -> int:
    """Rewrite every frame of a video or multi-frame image `source` into `target` as `process` turns it;
    returns the number of frames.

    `out_shape(height, width)` is the (height, width) of every output frame for the source's frame size;
    `process` maps an iterable of (H×W×C pixels, Frame) pairs to (processed pixels, the same Frame) pairs in
    the same order, lazily, so frames stream through. Timing, loop count, a video's display and colour
    description and its other streams, an image's colour profile and EXIF where the output format holds them
    (`images.kept_metadata`) are kept (see the readers and writers; `note(text)`, print by default, hears
    before the first frame of what metadata is not kept, and of each stream converted or copied unscaled);
    `crf` and `lossless` set the video or WebP encoding.
    `progress.reset(total=count)` once, `progress.update(1)` per frame written. ImageError naming the file
    (and the frame, for a decoding failure or a frame of another size; the stream, for one the output cannot
    take); MissingDependency naming it where PyAV is needed and not installed (videos; GIF and APNG output);
    KeyboardInterrupt saying after how many frames it stopped. Nothing is left at `target` unless every frame
    was written; OutputExists where `target` exists when the last frame is written, unless `overwrite`
    (`vdsr_jax.media.atomic_output`).
    """
    source, target = Path(source), Path(target)
    written = 0
    with open_frames(source) as reader:
        check_output(reader, target)
        lost = metadata_note(target, reader.metadata, reader.channels, metadata_format(target))
        if lost:
            (note or print)(lost)
        height, width = out_shape(reader.height, reader.width)
        if progress is not None:
            progress.reset(total=reader.count)
        with atomic_output(target, overwrite) as tmp:
            try:
                writer = open_writer(tmp, target, reader, height, width, crf, lossless, note)
            except (*codec_errors(), ValueError) as e:
                raise ImageError(f"{target}: cannot write ({reason(e)})") from None
            try:
                on_packet = writer.mux_packet if writer.muxes_streams else None
                for pixels, frame in process((frame.pixels, frame) for frame in _decoding(reader, on_packet)):
                    if writer.fixed_size and pixels.shape[:2] != (height, width):
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
            except (*codec_errors(), ValueError) as e:
                writer.abort()
                raise ImageError(f"{target}: cannot write frame {written + 1} ({reason(e)}); "
                                 f"nothing written to {target}") from None
            except BaseException:
                writer.abort()
                raise
    return written
