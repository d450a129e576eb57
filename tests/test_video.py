"""Videos and multi-frame images through `upscale`, and training frames from a folder of videos, on clips the
tests generate (moving shapes, a tone as audio): frame count, timing, loop and audio kept, every frame equal
to the still-image path, and bad inputs as one error line with nothing left at the output path."""
import io
from fractions import Fraction

import av
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
from PIL import Image

from vdsr_jax import checkpoint, media, upscale_files
from vdsr_jax.data import load_images
from vdsr_jax.inference import TiledVDSR, upscale_image
from vdsr_jax.media import decode_image
from vdsr_jax.media.video import VideoReader
from vdsr_jax.model import VDSR

TINY = VDSR(depth=3, features=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    params = jax.tree.map(lambda p: p / 2, TINY.init(jax.random.key(1), jnp.zeros((1, 8, 8, 1)))["params"])
    return checkpoint.save_model(tmp_path_factory.mktemp("tiny") / "ckpt", params, TINY), params


def moving_shapes(count, height=24, width=32):
    """A disc and a square moving over a changing background: H×W×3 uint8 frames."""
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(count):
        frame = np.empty((height, width, 3), np.uint8)
        frame[...] = ((40 + 3 * i) % 256, 80, 120)
        frame[(yy - 8 - i % 8) ** 2 + (xx - 5 - (2 * i) % 20) ** 2 < 25] = (250, 200, 30)
        frame[4:10, (3 * i) % (width - 6):(3 * i) % (width - 6) + 6] = (20, 220, 90)
        yield frame


def with_alpha(frames, mode="RGBA"):
    """`moving_shapes` frames with a moving transparent band (alpha 0) and a half-transparent one, in `mode`."""
    for i, frame in enumerate(frames):
        alpha = np.full(frame.shape[:2], 255, np.uint8)
        alpha[:, (2 * i) % 20:(2 * i) % 20 + 5] = 0
        alpha[-6:] = 128
        yield np.asarray(Image.fromarray(np.dstack([frame, alpha]), "RGBA").convert(mode))


def write_clip(path, count=6, rate=25, fmt=None, codec="libx264rgb", pix_fmt="rgb24", options=None,
               audio="aac", size=(24, 32), pts=None):
    """A clip of `moving_shapes` (lossless H.264 RGB by default) with a mono tone, or without audio."""
    out = av.open(str(path), "w", format=fmt)
    if options is None:  # lossless; AVI keeps no presentation times for reordered (B-) frames
        options = {"qp": "0", **({"bf": "0"} if str(path).endswith(".avi") else {})}
    stream = out.add_stream(codec, rate=rate, options=options)
    stream.height, stream.width = size
    stream.pix_fmt = pix_fmt
    if pts is not None:
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    sound = out.add_stream(audio, rate=8000, layout="mono") if audio else None
    for i, pixels in enumerate(moving_shapes(count, *size)):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = (i, Fraction(1, rate)) if pts is None else (pts[i], Fraction(1, 1000))
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    if sound:
        tone = (3000 * np.sin(np.arange(8000 * count // rate) / 5)).astype(np.int16)[None]
        frame = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    out.close()
    return path


def decoded(path):
    """(frames as arrays, summary) of a video or animation as vdsr_jax reads it."""
    return [pixels for _, pixels in media.iter_frames(path)], media.frame_summary(path)


def streams(path):
    with av.open(str(path)) as container:
        return [(s.type, s.codec_context.name) for s in container.streams]


def run(tiny, source, target, *extra):
    return upscale_files.main([str(source), "--checkpoint", str(tiny[0]), "--scale", "2", "-o", str(target),
                               "--tile", "16", *map(str, extra)])


def still_path(frames, params, scale=2):
    net = TiledVDSR(TINY, params, tile=16)
    return [upscale_image(f, scale, net)[0] for f in frames]


# ---- what the output must be -----------------------------------------------------------------------------

def test_lossless_video_equals_still_path_with_timing_and_audio(tmp_path, tiny):
    """Variable frame timing (ms pts), audio copied, every frame exactly the still-image result; the batched
    frame path (3 windows a call, frames of 6 tiles) against the one-window still path."""
    pts = [0, 40, 80, 200, 240, 400, 440]
    source = write_clip(tmp_path / "walk.mkv", count=7, fmt="matroska", pts=pts)
    assert run(tiny, source, tmp_path / "out.mkv", "--lossless", "--batch", "3") == 0
    frames, summary = decoded(source)
    out, out_summary = decoded(tmp_path / "out.mkv")
    assert out_summary["count"] == 7 and out_summary["size"] == (64, 48)
    assert out_summary["pts"] == summary["pts"] == pts
    assert streams(tmp_path / "out.mkv") == [("video", "h264"), ("audio", "aac")]
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        packets = lambda c: [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]  # noqa: E731
        assert packets(a) == packets(b)  # copied, not re-encoded
    for got, want in zip(out, still_path(frames, tiny[1]), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["clip.mp4", "daria_walk.avi"])
def test_default_codec_is_h264_within_codec_precision(tmp_path, tiny, name):
    source = write_clip(tmp_path / name, count=5)
    assert run(tiny, source, tmp_path, "--crf", "10") == 0
    target = tmp_path / name.replace(".", "_x2.")
    frames, summary = decoded(source)
    out, out_summary = decoded(target)
    assert out_summary["count"] == 5
    assert np.diff(out_summary["pts"]).tolist() == np.diff(summary["pts"]).tolist()  # AVI: frame numbers only
    with av.open(str(source)) as a, av.open(str(target)) as b:
        assert a.streams.video[0].average_rate == b.streams.video[0].average_rate == 25
    assert streams(target) == [("video", "h264"), ("audio", "aac")]
    with av.open(str(target)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    for got, want in zip(out, still_path(frames, tiny[1]), strict=True):
        # the codec's precision: 4:2:0 chroma (which alone costs these saturated edges an MSE of ~40), then CRF 10
        subsampled = av.VideoFrame.from_ndarray(want, format="rgb24").reformat(format="yuv420p").to_ndarray(
            format="rgb24")
        assert np.mean((got.astype(float) - subsampled) ** 2) < 4


def test_animated_gif_keeps_durations_and_loop(tmp_path, tiny):
    frames = [Image.fromarray(f) for f in moving_shapes(4)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=[50, 120, 70, 200],
                   loop=3)
    assert run(tiny, tmp_path / "anim.gif", tmp_path / "big.gif") == 0
    summary = media.frame_summary(tmp_path / "big.gif")
    assert summary["count"] == 4 and summary["durations"] == [50, 120, 70, 200] and summary["loop"] == 3
    assert summary["size"] == (64, 48)


@pytest.mark.parametrize("name,mode,lossless", [("anim.png", "RGB", False), ("anim.png", "RGBA", False),
                                               ("anim.png", "LA", False), ("anim.webp", "RGBA", True)])
def test_lossless_animation_equals_still_path(tmp_path, tiny, name, mode, lossless):
    """APNG (FFmpeg, a frame at a time) and lossless WebP (Pillow, from frames spilled to disk): every frame, its
    alpha and every duration (the last one too) kept exactly; WebP drops the colour of invisible pixels."""
    frames = [Image.fromarray(f) for f in with_alpha(moving_shapes(3), mode)]
    options = {"lossless": True} if name.endswith(".webp") else {}
    frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:], duration=[40, 80, 120], loop=0,
                   **options)
    assert run(tiny, tmp_path / name, tmp_path / f"out{name[4:]}", *(["--lossless"] if lossless else [])) == 0
    source_frames, _ = decoded(tmp_path / name)
    out, summary = decoded(tmp_path / f"out{name[4:]}")
    assert summary["durations"] == [40, 80, 120] and summary["loop"] == 0
    assert out[0].shape[-1] == len(mode) and not list(tmp_path.glob(".*"))  # no temporary or spilled file left
    for got, want in zip(out, still_path(source_frames, tiny[1]), strict=True):
        assert_equal_where_visible(got, want) if name.endswith(".webp") else np.testing.assert_array_equal(got, want)


def assert_equal_where_visible(got, want):
    """The same alpha, and the same colour wherever alpha is not 0."""
    np.testing.assert_array_equal(got[..., -1], want[..., -1])
    np.testing.assert_array_equal(got[want[..., -1] > 0], want[want[..., -1] > 0])


def test_transparent_gif_equals_still_path_as_a_gif(tmp_path, tiny):
    """Each GIF frame is the still-image result quantised as Pillow quantises a one-frame GIF: the same
    colours where visible, and the same transparent pixels."""
    frames = [Image.fromarray(f) for f in with_alpha(moving_shapes(4))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=[60, 30, 90, 40],
                   disposal=2)
    assert run(tiny, tmp_path / "anim.gif", tmp_path / "out.gif") == 0
    source_frames, _ = decoded(tmp_path / "anim.gif")
    out, summary = decoded(tmp_path / "out.gif")
    assert summary["durations"] == [60, 30, 90, 40] and summary["loop"] is None and out[0].shape[-1] == 4
    for got, want in zip(out, still_path(source_frames, tiny[1]), strict=True):
        buffer = io.BytesIO()
        Image.fromarray(want).save(buffer, format="GIF")
        assert_equal_where_visible(got, decode_image(buffer.getvalue()))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".gif", ".png", ".webp"])
def test_animation_frames_reach_the_disk_as_they_come(tmp_path, tiny, suffix):
    """Streaming: while frames are upscaled, the files being written (the output, a spill of frames) grow,
    so no writer holds the frames until the end (FFmpeg writes in blocks of 256 KiB: noise, 16 frames)."""
    noise = np.random.default_rng(0).integers(0, 256, (16, 64, 128, 3), np.uint8)
    frames = [Image.fromarray(f) for f in noise]
    frames[0].save(tmp_path / "noise.gif", save_all=True, append_images=frames[1:], duration=50)
    written = []

    class Progress:
        def reset(self, total):
            pass

        def update(self, _):
            written.append(sum(p.stat().st_size for p in tmp_path.glob(".*")))

    net = TiledVDSR(TINY, tiny[1], tile=128)
    assert upscale_files.upscale_frame_file(tmp_path / "noise.gif", tmp_path / f"out{suffix}", 2, net,
                                            progress=Progress()) == 16
    assert written[3] < written[15], written


def test_multipage_tiff_keeps_pages_and_16_bits(tmp_path, tiny):
    pages = [f.astype(np.uint16) * 257 for f in moving_shapes(3)]
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        for page in pages:
            tif.write(page, photometric="rgb")
    assert run(tiny, tmp_path / "pages.tif", tmp_path / "out.tif") == 0
    out = [p.asarray() for p in tifffile.TiffFile(tmp_path / "out.tif").pages]
    assert len(out) == 3 and out[0].dtype == np.uint16
    for got, want in zip(out, still_path(pages, tiny[1]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_multipage_tiff_pages_are_read_in_their_colours(tmp_path, tiny):
    """Palette and CMYK pages, whose samples are indices and inks: each page upscaled as the colours it
    means (TIFF 6.0: a palette entry's 16-bit value, read by its top byte as libtiff and Pillow do; CMYK
    without a profile as Pillow converts it, R = (1 - C)(1 - K)), not as its raw samples."""
    frames = list(moving_shapes(2))
    indices = [f[..., 0] for f in frames]
    colormap = np.stack([np.arange(256) * 257, (255 - np.arange(256)) * 257, np.full(256, 128 * 257)])
    inks = [np.concatenate([255 - f, np.full((*f.shape[:2], 1), 40, np.uint8)], -1) for f in frames]
    with tifffile.TiffWriter(tmp_path / "palette.tif") as tif:
        for page in indices:
            tif.write(page, photometric="palette", colormap=colormap.astype(np.uint16))
    with tifffile.TiffWriter(tmp_path / "cmyk.tif") as tif:
        for page in inks:
            tif.write(page, photometric="separated")
    expected = {
        "palette": [np.moveaxis((colormap >> 8).astype(np.uint8)[:, i], 0, -1) for i in indices],
        "cmyk": [np.rint((255 - ink[..., :3]) * (255 - ink[..., 3:]) / 255).astype(np.uint8)
                 for ink in (i.astype(np.int64) for i in inks)],
    }
    for name, pages in expected.items():
        assert run(tiny, tmp_path / f"{name}.tif", tmp_path / f"{name}_out.tif") == 0
        out = [p.asarray() for p in tifffile.TiffFile(tmp_path / f"{name}_out.tif").pages]
        for got, want in zip(out, still_path(pages, tiny[1]), strict=True):
            np.testing.assert_array_equal(got, want)


# ---- bad inputs: one line, no output ---------------------------------------------------------------------

def error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def corrupt(path):
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    return path


def truncated_mkv(path):
    write_clip(path.with_suffix(".full.mkv"), count=8, fmt="matroska")
    data = path.with_suffix(".full.mkv").read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3])
    return path


def audio_only(path):
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=8000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


def unknown_codec(path):
    write_clip(path.with_suffix(".ok.avi"), count=3, fmt="avi", codec="mpeg4", pix_fmt="yuv420p", options={},
               audio=None)
    path.write_bytes(path.with_suffix(".ok.avi").read_bytes().replace(b"FMP4", b"QQQQ"))
    return path


def truncated_mp4(path):
    write_clip(path.with_suffix(".full.mp4"), count=6)
    data = path.with_suffix(".full.mp4").read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


@pytest.mark.parametrize("make,name,fragment", [
    (corrupt, "noise.mp4", "not a readable video"),
    (truncated_mp4, "cut.mp4", "not a readable video"),
    (truncated_mkv, "cut.mkv", "truncated or damaged"),
    (audio_only, "sound.mkv", "holds no video stream"),
    (unknown_codec, "odd.avi", "cannot be decoded"),
])
def test_bad_video_is_one_line(tmp_path, tiny, capsys, make, name, fragment):
    source = make(tmp_path / name)
    assert run(tiny, source, tmp_path / "out.mkv") == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0] and str(source) in lines[0], lines
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("failure,status,fragment", [
    (lambda: KeyboardInterrupt(), 130, "stopped after 4 frames written"),
    (lambda: av.error.InvalidDataError(1094995529, "Invalid data found when processing input"), 1,
     "cannot decode frame 5"),
])
def test_interrupted_run_leaves_nothing(tmp_path, tiny, capsys, monkeypatch, failure, status, fragment):
    source = write_clip(tmp_path / "clip.mp4", count=8)
    frames = VideoReader.frames

    def failing(self, on_audio=None):
        for frame in frames(self, on_audio):
            yield frame
            if self.decoded == 4:  # decoding frame 5 fails
                raise failure()

    monkeypatch.setattr(VideoReader, "frames", failing)
    assert run(tiny, source, tmp_path / "out.mp4", "--batch", "4") == status
    lines = error_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0] and "nothing written" in lines[0], lines
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_video_to_still_suffix_is_refused(tmp_path, tiny, capsys):
    source = write_clip(tmp_path / "clip.mp4", count=2, audio=None)
    assert run(tiny, source, tmp_path / "out.png") == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "a video is written as a video" in lines[0]


# ---- training from videos --------------------------------------------------------------------------------

def test_video_folder_samples_every_nth_frame(tmp_path):
    clips = tmp_path / "clips"
    (clips / "more").mkdir(parents=True)
    write_clip(clips / "daria_walk.avi", count=7, fmt="avi", audio=None)
    write_clip(clips / "more" / "ido_run.mkv", count=5, fmt="matroska", audio=None)
    (clips / "._daria_walk.avi").write_bytes(b"macOS metadata")  # hidden: skipped
    images = load_images("video_folder/clips_every3", tmp_path / "tfds", clips)
    expected = [f for i, f in enumerate(moving_shapes(7)) if i % 3 == 0] + \
               [f for i, f in enumerate(moving_shapes(5)) if i % 3 == 0]
    assert len(images) == 5
    for got, want in zip(images, expected, strict=True):
        np.testing.assert_array_equal(got, want)  # lossless clips: the frames as generated
