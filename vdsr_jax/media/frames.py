"""The interface of frame files (videos and multi-frame images): a `FrameReader` gives `Frame`s one at a time,
with their timing, and the file's other streams; a `FrameWriter` takes the processed frames. Every reader and
writer in `vdsr_jax.media` implements one of the two, and callers use only the members declared here: what a
writer can do beyond writing frames is a declared capability with a default, not an attribute to probe for.
"""
import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from vdsr_jax.media.images import NO_METADATA, ImageMetadata

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
ANIMATION_SUFFIXES = (".gif", ".webp", ".png", ".apng", ".tif", ".tiff")  # frame files when of several frames
FRAME_SUFFIXES = VIDEO_SUFFIXES + (".gif", ".apng")  # listed in folders by `upscale` beside still images


class Frame(NamedTuple):
    """One decoded frame: H×W×C pixels and its timing, in the reader's `time_base` (milliseconds for
    animations): `pts` (videos; animations have none, their frames follow one another) and `duration`; each
    None where the file has none."""

    pixels: np.ndarray
    pts: int | None = None
    duration: int | None = None


class FrameReader(abc.ABC):
    """The frames of one file, decoded one at a time; `with reader:` closes it. Set by every reader:

    kind: "video" (written only as a video), "animation" (a multi-frame image) or "still" (an image of one
        frame).
    path: the file.
    height, width, channels: the frame size as displayed, and 1 to 4 channels (1: grey, 2: grey + alpha,
        3: colour, 4: colour + alpha): what every frame holds, or can be converted to without loss (a file
        whose frames differ gets the widest layout; frames may still come in their own, e.g. TIFF pages).
    grey: whether the frames are grey (1 channel, or grey + alpha).
    opaque: whether no frame shows anything through: no alpha channel, or every alpha sample at its maximum
        (animated WebP, which Pillow always reads with alpha, is often opaque).
    count: the number of frames the file declares; None where it declares none.
    rate: frames per second (a video's average or guessed rate); None for animations, whose frames carry
        durations.
    time_base: the unit of `Frame.pts`, in seconds (1/1000 for animations).
    loop: how often an animation plays (0: forever); None where the file says nothing (videos).
    streams: the file's other streams (PyAV streams: audio, subtitles, data, attachments, further video
        streams), whose packets `frames(on_packet)` passes on; empty for animations.
    sample_aspect_ratio: the width/height of a pixel as displayed (videos; None: square or unknown).
    colour: the colour description frames are decoded with (videos: FFmpeg's colorspace, color_range,
        color_primaries and color_trc numbers where the file gives them).
    metadata: the colour profile and EXIF of an image file (its first frame or page; `images.ImageMetadata`,
        EXIF orientation applied to every frame); a video's profile (an MP4/MOV 'colr' box), no EXIF.
    tags, stream_tags, chapters: a video's container tags (FFmpeg's names: title, creation_time, location,
        …; not those of how the file was written), its video stream's language and title, and its chapters
        (PyAV's: id, start, end, time_base, metadata); empty for images.
    decoded: how many frames have been decoded so far (for messages).
    """

    kind: str
    path: Path
    height: int
    width: int
    channels: int
    grey: bool
    opaque: bool = True
    count: int | None
    rate: Fraction | None
    time_base: Fraction
    loop: int | None = None
    streams: Sequence = ()
    sample_aspect_ratio: Fraction | None = None
    colour: Mapping[str, int] = MappingProxyType({})
    metadata: ImageMetadata = NO_METADATA
    tags: Mapping[str, str] = MappingProxyType({})
    stream_tags: Mapping[str, str] = MappingProxyType({})
    chapters: Sequence[dict] = ()
    decoded: int = 0

    @abc.abstractmethod
    def frames(self, on_packet: Callable | None = None) -> Iterator[Frame]:
        """The frames in presentation order, each upright (a video's display matrix applied); `on_packet(packet)`
        receives each packet of `streams` as it is demuxed.
        Codecs raise their own errors for damaged frames (`frame_files.iter_frames` words them)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the file."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class FrameWriter(abc.ABC):
    """Writes frames to a temporary file, complete after `close`; `abort` gives up (and never raises).

    Capabilities, with their defaults (writers that have one override it):
    muxes_streams: `mux_packet(packet)` copies or converts a packet of the reader's `streams` into the output
        (what becomes of each stream is decided when the writer is made, before the first frame).
    fixed_size: every frame must have the size the writer was made for (False where pages may differ).
    """

    muxes_streams: bool = False
    fixed_size: bool = True

    @abc.abstractmethod
    def write(self, pixels: np.ndarray, frame: Frame) -> None:
        """Append H×W×C uint8/uint16 `pixels`, shown with the timing of `frame` (the source frame they came from)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finish the file (after at least one frame)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Stop without finishing the file; it is removed by whoever made the temporary name."""

    def mux_packet(self, packet) -> None:
        """Copy or convert one packet of the reader's `streams` into the output (only where `muxes_streams`)."""
        raise NotImplementedError(f"{type(self).__name__} writes no streams besides its frames")
