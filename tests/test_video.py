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
from conftest import png_chunks
from PIL import Image
from test_media_images import adobe_rgb_profile, photo_exif

from vdsr_jax import checkpoint, media, upscale_files
from vdsr_jax.data import load_images
from vdsr_jax.inference import TiledVDSR, upscale_image
from vdsr_jax.media import decode_image, mp4
from vdsr_jax.media.images import to_8_bits
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


# ---- frames of every pixel layout ------------------------------------------------------------------------

def lossless_stream(out, size=(24, 32)):
    """A lossless H.264 RGB stream (libx264rgb, qp 0) of `size` in the open container `out`."""
    stream = out.add_stream("libx264rgb", rate=25, options={"qp": "0"})
    stream.height, stream.width = size
    stream.pix_fmt = "rgb24"
    return stream


def mux_frames(out, stream, frames, fmt="rgb24", pix_fmt=None):
    """Encode `frames` (arrays in `fmt`; converted by FFmpeg to `pix_fmt` where given) as frames 0, 1, … of
    `stream`, then flush it."""
    for i, pixels in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(pixels, format=fmt)
        if pix_fmt:
            frame = frame.reformat(format=pix_fmt)
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def grey_palette_gif(path, count=3, transparency=None):
    """The issue's GIF: `count` frames of 20×24 grey levels, Pillow mode P with a grey palette."""
    frames = []
    for i in range(count):
        image = Image.fromarray(((np.arange(480).reshape(20, 24) * (i + 1)) % 256).astype(np.uint8), "P")
        image.putpalette([v for g in range(256) for v in (g, g, g)])
        frames.append(image)
    options = {} if transparency is None else {"transparency": transparency}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[30, 60, 90][:count], **options)
    return path


def pillow_frames(path, mode):
    """Every frame of an image file as Pillow decodes it, converted to `mode` (Pillow's own interpretation)."""
    with Image.open(path) as im:
        out = []
        for i in range(im.n_frames):
            im.seek(i)
            pixels = np.asarray(im.convert(mode))
            out.append(pixels[..., None] if pixels.ndim == 2 else pixels)
        return out


def test_transparent_grey_gif_stays_grey_with_alpha(tmp_path, tiny, capsys):
    """A grey palette with a transparent entry (Pillow: L with a transparent value, read as LA): grey + alpha
    in, grey + alpha out; where Pillow itself cannot decode a frame, one line naming it, before any work."""
    source = grey_palette_gif(tmp_path / "grey.gif", transparency=0)
    try:
        pillow_frames(source, "LA")
    except ValueError as e:  # Pillow 13 cannot seek past frame 1 of such a file: one line, before any work
        assert run(tiny, source, tmp_path / "out.gif") == 1
        assert error_lines(capsys) == [f"error: {source}: cannot decode frame 2 (ValueError: {e})"]
        assert not list(tmp_path.glob("*out*"))
        return
    assert run(tiny, source, tmp_path / "out.gif") == 0
    source_frames, _ = decoded(source)
    out, _ = decoded(tmp_path / "out.gif")
    assert source_frames[0].shape[-1] == out[0].shape[-1] == 2
    want = still_path(pillow_frames(source, "LA"), tiny[1])
    np.testing.assert_array_equal(out[0][..., -1] == 0, want[0][..., -1] < 128)
    np.testing.assert_array_equal(out[0][want[0][..., -1] == 255], want[0][want[0][..., -1] == 255])


def test_grey_palette_gif_stays_grey(tmp_path, tiny):
    """The issue's instance: a grey-palette GIF goes through as its own Y and comes back grey (Pillow reads
    every output frame as L), each frame the still path's result on Pillow's grey frames, GIF being exact
    for grey."""
    source = grey_palette_gif(tmp_path / "grey.gif")
    assert run(tiny, source, tmp_path / "out.gif") == 0
    with Image.open(tmp_path / "out.gif") as im:
        assert im.n_frames == 3 and im.size == (48, 40)
        assert all((im.seek(i), im.mode)[1] == "L" for i in range(3))
    out, summary = decoded(tmp_path / "out.gif")
    assert summary["durations"] == [30, 60, 90]
    for got, want in zip(out, still_path(pillow_frames(source, "L"), tiny[1]), strict=True):
        np.testing.assert_array_equal(got, want)


def save_frames(path, frames, mode, **options):
    """Frames (arrays) saved as an animation by Pillow in `mode` (P: an 8-colour adaptive palette)."""
    if mode == "P":
        images = [Image.fromarray(f[..., :3]).quantize(8) for f in frames]
    else:
        images = [Image.fromarray(f).convert(mode) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=[40, 80, 120][:len(images)], **options)
    return path


@pytest.mark.parametrize("mode,options,pillow_mode", [
    ("L", {}, "L"),
    ("LA", {}, "LA"),
    ("RGBA", {}, "RGBA"),
    ("P", {}, "RGB"),  # a colour palette
])
def test_apng_frames_keep_their_layout(tmp_path, tiny, mode, options, pillow_mode):
    """APNG frames of each PNG colour type come back in the same layout, each exactly the still path's result
    on the frames as Pillow decodes them (APNG output is lossless)."""
    frames = [np.asarray(Image.fromarray(f).convert("RGBA")) for f in with_alpha(moving_shapes(3))]
    if mode in ("L", "LA"):
        frames = [np.asarray(Image.fromarray(f).convert(mode)) for f in frames]
    source = save_frames(tmp_path / "anim.png", frames, mode, **options)
    assert run(tiny, source, tmp_path / "out.png") == 0
    out, summary = decoded(tmp_path / "out.png")
    assert summary["count"] == 3 and summary["durations"] == [40, 80, 120]
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == pillow_mode
    for got, want in zip(out, still_path(pillow_frames(source, pillow_mode), tiny[1]), strict=True):
        np.testing.assert_array_equal(got, want)


def apng_16_bits(path, frames):
    """An APNG of 16-bit grey frames (FFmpeg's APNG encoder: Pillow's writer merges I;16 frames)."""
    with av.open(str(path), "w", format="apng") as out:
        stream = out.add_stream("apng", rate=25)
        stream.height, stream.width = frames[0].shape
        stream.pix_fmt = "gray16be"
        mux_frames(out, stream, frames, fmt="gray16le")
    return path


def test_16_bit_grey_apng_to_tiff_keeps_16_bits(tmp_path, tiny):
    """Pillow reads 16-bit grey APNG frames as I;16: they go through in 16 bits, as a TIFF holds them."""
    frames = [(f[..., 0].astype(np.uint16) * 257 + i) for i, f in enumerate(moving_shapes(2))]
    source = apng_16_bits(tmp_path / "deep.png", frames)
    assert [f.dtype for f in pillow_frames(source, "I;16")] == [np.uint16] * 2
    assert run(tiny, source, tmp_path / "out.tif") == 0
    out = [p.asarray() for p in tifffile.TiffFile(tmp_path / "out.tif").pages]
    want = still_path([f[..., None] for f in frames], tiny[1])
    assert [o.dtype for o in out] == [np.uint16] * 2
    for got, expected in zip(out, want, strict=True):
        np.testing.assert_array_equal(got, expected[..., 0])


def test_gif_frames_of_mixed_layouts_take_the_widest(tmp_path, tiny):
    """A GIF whose first frame is grey (Pillow: L) and whose later frames are colour (Pillow: RGB) is written as
    colour: no frame loses its colour to the first frame's layout."""
    grey = np.asarray(Image.fromarray(next(moving_shapes(1))).convert("L"))
    images = [Image.fromarray(grey)] + [Image.fromarray(f) for f in moving_shapes(2)]
    images[0].save(tmp_path / "mixed.gif", save_all=True, append_images=images[1:], duration=50)
    assert run(tiny, tmp_path / "mixed.gif", tmp_path / "out.png") == 0
    out, _ = decoded(tmp_path / "out.png")
    want = still_path(pillow_frames(tmp_path / "mixed.gif", "RGB"), tiny[1])
    assert out[0].shape[-1] == 3
    for got, expected in zip(out, want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_tiff_pages_of_mixed_layouts_keep_each_layout(tmp_path, tiny):
    """Pages of 8-bit RGB, 16-bit grey and 8-bit grey + alpha: a TIFF output keeps each page's layout and
    depth (as tifffile reads them back); a GIF output takes the widest layout (colour + alpha)."""
    rgb = next(moving_shapes(1))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :8] = 0
    pages = [rgb, rgb[..., 1].astype(np.uint16) * 257, np.dstack([rgb[..., 0], alpha])]
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        tif.write(pages[0], photometric="rgb")
        tif.write(pages[1], photometric="minisblack")
        tif.write(pages[2], photometric="minisblack", extrasamples=("unassalpha",))
    assert run(tiny, tmp_path / "pages.tif", tmp_path / "out.tif") == 0
    out = [p.asarray() for p in tifffile.TiffFile(tmp_path / "out.tif").pages]
    want = still_path([p if p.ndim == 3 else p[..., None] for p in pages], tiny[1])
    assert [(o.dtype, o.shape[2:]) for o in out] == [(np.uint8, (3,)), (np.uint16, ()), (np.uint8, (2,))]
    for got, expected in zip(out, want, strict=True):
        np.testing.assert_array_equal(got, expected.reshape(got.shape))
    assert run(tiny, tmp_path / "pages.tif", tmp_path / "out.png") == 0
    out, _ = decoded(tmp_path / "out.png")
    assert [o.shape[-1] for o in out] == [4, 4, 4] and out[2][:, 0, 3].max() == 0 and out[0][..., 3].min() == 255


def ffv1_clip(path, pix_fmt, count=3, size=(24, 32)):
    """A lossless FFV1 clip in Matroska of `moving_shapes` converted by FFmpeg to `pix_fmt`."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = pix_fmt
        mux_frames(out, stream, moving_shapes(count, *size), pix_fmt=pix_fmt)
    return path


def ffmpeg_frames(path, fmt):
    """The frames of a video as FFmpeg converts them to `fmt` (PyAV, independently of vdsr_jax)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format=fmt) for f in container.decode(video=0)]


@pytest.mark.parametrize("pix_fmt,fmt", [("gray", "gray"), ("gray16le", "gray"), ("rgb48le", "rgb24"),
                                         ("yuv420p10le", "rgb24")])
def test_video_pixel_formats_decode_as_ffmpeg_converts_them(tmp_path, tiny, pix_fmt, fmt):
    """Grey formats go through as their own Y, deeper ones as FFmpeg converts them to 8 bits: every frame
    the still path's result on FFmpeg's conversion of the source (lossless output; grey is written as colour
    of equal channels)."""
    source = ffv1_clip(tmp_path / f"{pix_fmt}.mkv", pix_fmt)
    assert run(tiny, source, tmp_path / "out.mkv", "--lossless") == 0
    want = still_path([f[..., None] if f.ndim == 2 else f for f in ffmpeg_frames(source, fmt)], tiny[1])
    out, summary = decoded(tmp_path / "out.mkv")
    assert summary["count"] == 3
    for got, expected in zip(out, want, strict=True):
        np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))


@pytest.mark.parametrize("pix_fmt", ["yuva420p", "ya8", "bgra"])
def test_video_with_alpha_is_refused_before_work(tmp_path, tiny, capsys, pix_fmt):
    source = ffv1_clip(tmp_path / "alpha.mkv", pix_fmt)
    assert run(tiny, source, tmp_path / "out.mkv") == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and f"carry alpha ({pix_fmt})" in lines[0], lines
    assert not list(tmp_path.glob("*out*"))


@pytest.mark.parametrize("transparent", [True, False])
def test_palette_video_with_a_transparent_entry_is_refused(tmp_path, tiny, capsys, transparent):
    """PNG frames in a palette (pal8) in QuickTime: refused where a pixel uses a transparent entry, as FFmpeg
    decodes it to RGBA; upscaled as colour where none does."""
    path = tmp_path / "pal.mov"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=25)
        stream.height, stream.width, stream.pix_fmt = 24, 32, "pal8"
        for i in range(2):
            indices = np.zeros((24, 32), np.uint8)
            indices[:, 8 * i:8 * i + 8] = 1
            palette = np.full((256, 4), 255, np.uint8)  # ARGB
            palette[1] = (0 if transparent else 255, 200, 30, 30)
            frame = av.VideoFrame.from_ndarray((indices, palette), format="pal8")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(path)) as c:
        assert (next(c.decode(video=0)).to_ndarray(format="rgba")[..., 3] == 0).any() == transparent
    assert run(tiny, path, tmp_path / "out.mkv") == (1 if transparent else 0)
    if transparent:
        lines = error_lines(capsys)
        assert len(lines) == 1 and "carry alpha (pal8)" in lines[0], lines
    else:
        assert decoded(tmp_path / "out.mkv")[1]["count"] == 2


def test_animation_with_alpha_into_a_video_is_refused(tmp_path, tiny, capsys):
    save_frames(tmp_path / "anim.png", list(with_alpha(moving_shapes(2))), "RGBA")
    assert run(tiny, tmp_path / "anim.png", tmp_path / "out.mp4") == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and "cannot hold the transparency" in lines[0], lines
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("name,mode", [("anim.webp", "RGBA"), ("anim.png", "RGBA"), ("anim.png", "LA"),
                                       ("one.png", "RGBA")])
def test_opaque_alpha_goes_into_a_video_as_the_colour_frames(tmp_path, tiny, name, mode):
    """Frames whose alpha channel is everywhere opaque (animated WebP, which Pillow always reads as RGBA; an
    RGBA or grey + alpha APNG; a still RGBA PNG) show nothing through, so a video takes them: it decodes to
    the frames of the same animation without the alpha channel (lossless)."""
    frames = list(moving_shapes(3 if name.startswith("anim") else 1))
    opaque = [np.asarray(Image.fromarray(f).convert(mode)) for f in frames]
    plain = [np.asarray(Image.fromarray(f).convert(mode[:-1])) for f in frames]
    options = {"lossless": True} if name.endswith(".webp") else {}
    save_frames(tmp_path / name, opaque, mode, **options)
    save_frames(tmp_path / f"plain_{name}", plain, mode[:-1], **options)
    with Image.open(tmp_path / name) as im:
        assert im.mode in ("RGBA", "LA")  # the alpha channel is there, all opaque
    assert run(tiny, tmp_path / name, tmp_path / "out.mkv", "--lossless") == 0
    assert run(tiny, tmp_path / f"plain_{name}", tmp_path / "plain.mkv", "--lossless") == 0
    got, want = ffmpeg_frames(tmp_path / "out.mkv", "rgb24"), ffmpeg_frames(tmp_path / "plain.mkv", "rgb24")
    assert len(got) == len(frames)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- colour profile and EXIF of animations ----------------------------------------------------------------

def tagged_animation(path, frames, icc=None, exif=None):
    """An animated WebP or PNG (Pillow) or a multi-page TIFF (tifffile) of H×W×3 uint8 `frames`, durations 40,
    80 and 120 ms, with the ICC profile `icc` and the Pillow Exif `exif` (TIFF: its Orientation on every page,
    its Make, Model and Copyright on the first, as IFD0 tags) where given."""
    if path.suffix == ".tif":
        with tifffile.TiffWriter(path) as tif:
            for index, frame in enumerate(frames):
                tags = [(274, "H", 1, exif[274], True)] if exif else []
                if exif and index == 0:
                    tags += [(tag, "s", 0, exif[tag], True) for tag in (0x010F, 0x0110, 0x8298)]
                tif.write(frame, photometric="rgb", iccprofile=icc if index == 0 else None, extratags=tags)
        return path
    images = [Image.fromarray(f) for f in frames]
    options = {"icc_profile": icc, "exif": exif} if icc else {}
    images[0].save(path, save_all=True, append_images=images[1:], duration=[40, 80, 120], loop=0,
                   **({"lossless": True} if path.suffix == ".webp" else {}), **options)
    return path


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "pages.tif"])
def test_animations_keep_the_profile_and_exif_marked_upright(tmp_path, tiny, name):
    """Animated WebP and PNG and multi-page TIFF, read and written: the profile and EXIF as Pillow reads them back
    (Orientation 1, the Exif IFD's pixel size the output's), every frame turned upright as EXIF Orientation 6
    says (Pillow's ROTATE_270: the 0th row is the visual right side, EXIF 2.32 table 6) and otherwise as
    without metadata; frame count and timing the same, and APNG's chunks those written without metadata,
    iCCP and eXIf added before acTL and the first IDAT."""
    frames = list(moving_shapes(3))  # 32 wide, 24 high: upright 24 wide, 32 high
    upright = [np.asarray(Image.fromarray(f).transpose(Image.Transpose.ROTATE_270)) for f in frames]
    tagged = tagged_animation(tmp_path / name, frames, adobe_rgb_profile(), photo_exif(32, 24))
    plain = tagged_animation(tmp_path / f"plain_{name}", upright)
    out, out_plain = tmp_path / f"out_{name}", tmp_path / f"out_plain_{name}"
    assert run(tiny, tagged, out, "--lossless") == 0 and run(tiny, plain, out_plain, "--lossless") == 0
    got, summary = decoded(out)
    want, want_summary = decoded(out_plain)
    assert summary == want_summary and summary["count"] == 3 and summary["size"] == (48, 64)
    assert summary["durations"] == ([None] * 3 if name.endswith(".tif") else [40, 80, 120])
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    with Image.open(out) as im:
        assert im.info["icc_profile"] == adobe_rgb_profile()
        exif = im.getexif()
    assert exif.get(274, 1) == 1 and (exif[0x010F], exif[0x8298]) == ("Camera maker", "(c) someone")
    if not name.endswith(".tif"):  # the TIFF input has IFD0 tags only
        details = exif.get_ifd(0x8769)
        assert (details[0xA002], details[0xA003], details[0x9003]) == (48, 64, "2026:01:02 03:04:05")
        assert exif.get_ifd(0x8825) == {1: "N", 2: (52.0, 31.0, 12.5)}
    if name.endswith(".png"):
        kinds = [c[4:8] for c in png_chunks(out.read_bytes())]
        assert kinds[:3] == [b"IHDR", b"iCCP", b"eXIf"] and kinds.index(b"eXIf") < kinds.index(b"acTL")
        assert kinds[:1] + kinds[3:] == [c[4:8] for c in png_chunks(out_plain.read_bytes())]


@pytest.mark.parametrize("suffix,what,why", [
    (".gif", "the EXIF", "GIF holds none"),
    (".mp4", "the EXIF", "MP4 holds none"),
    (".mkv", "the colour profile and the EXIF", "MKV video holds none"),
    (".webm", "the colour profile and the EXIF", "WEBM video holds none"),
])
def test_outputs_that_cannot_hold_the_profile_or_exif_say_so_before_the_work(tmp_path, suffix, what, why):
    """GIF (GIF89a has no EXIF block) and MP4 (EXIF has no place in a video track) keep the profile only;
    Matroska and WebM keep neither: one note, heard before the first frame is processed."""
    source = tagged_animation(tmp_path / "anim.png", list(moving_shapes(3)), adobe_rgb_profile(), photo_exif(32, 24))
    heard = []

    def process(frames):
        for pixels, frame in frames:
            assert heard, "the note comes before the work"
            yield pixels, frame

    assert media.transcode(source, tmp_path / f"out{suffix}", lambda h, w: (h, w), process, note=heard.append) == 3
    assert heard == [f"{tmp_path / f'out{suffix}'}: {what} of the input not kept ({why})"]


def gif_icc_extension(icc: bytes) -> bytes:
    """The application extension that carries an ICC profile in a GIF, built from the specifications: GIF89a
    section 26 (21 FF, a sub-block of 11 bytes: identifier and authentication code, data sub-blocks of at
    most 255 bytes, an empty one ending them) with ICC.1:2022 annex B.6's "ICCRGBG1" and "012"."""
    parts = [icc[i:i + 255] for i in range(0, len(icc), 255)]
    return b"\x21\xff\x0bICCRGBG1012" + b"".join(bytes([len(part)]) + part for part in parts) + b"\x00"


def gif_with_profile(path, frames, icc):
    """A GIF of `frames` written by Pillow, with `icc` added (`add_gif_profile`)."""
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=80, loop=0)
    return add_gif_profile(path, icc)


def add_gif_profile(path, icc):
    """The GIF at `path` with `icc` as an ICCRGBG1 extension right after its global colour table (GIF89a,
    section 18: the packed byte of the Logical Screen Descriptor sizes the table)."""
    data = path.read_bytes()
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    path.write_bytes(data[:at] + gif_icc_extension(icc) + data[at:])
    return path


def profile_read_by_pillow_from_gif(path) -> bytes:
    """The profile in the application extension that Pillow's GIF reader found last before the first frame
    (`info["extension"]`: its first sub-block and where its data sub-blocks start), read sub-block by
    sub-block (GIF89a, section 15); the identifier must be ICC's."""
    with Image.open(path) as im:
        identifier, at = im.info["extension"]
    assert identifier == b"ICCRGBG1012"
    data, profile = path.read_bytes(), b""
    while data[at]:
        profile += data[at + 1:at + 1 + data[at]]
        at += 1 + data[at]
    return profile


def test_gif_output_keeps_the_profile_in_an_application_extension(tmp_path, tiny):
    """The profile of an APNG goes into the GIF written from it as ICC.1 annex B.6 says, where Pillow's reader
    finds the application extension; taking that extension out gives the very file written without a
    profile (nothing else changed: frames, palette, timing, loop)."""
    frames = list(moving_shapes(3))
    tagged = tagged_animation(tmp_path / "anim.png", frames, adobe_rgb_profile())
    plain = tagged_animation(tmp_path / "plain.png", frames)
    assert run(tiny, tagged, tmp_path / "out.gif") == 0 and run(tiny, plain, tmp_path / "plain.gif") == 0
    assert profile_read_by_pillow_from_gif(tmp_path / "out.gif") == adobe_rgb_profile()
    written = (tmp_path / "out.gif").read_bytes()
    extension = gif_icc_extension(adobe_rgb_profile())
    assert written.count(extension) == 1
    assert written.replace(extension, b"") == (tmp_path / "plain.gif").read_bytes()


def test_gif_profile_is_read_from_stills_and_animations(tmp_path, tiny):
    """A GIF's ICCRGBG1 profile (which Pillow does not read) reaches the outputs of a one-frame GIF written as
    PNG and of an animated GIF written as APNG and as GIF, where Pillow reads it back (PNG's iCCP chunk) or
    finds the extension."""
    frames = list(moving_shapes(3))
    one = gif_with_profile(tmp_path / "one.gif", frames[:1], adobe_rgb_profile())
    many = gif_with_profile(tmp_path / "many.gif", frames, adobe_rgb_profile())
    with Image.open(many) as im:  # the extension leaves the file as Pillow decodes it
        assert im.n_frames == 3 and "icc_profile" not in im.info
    assert media.read_image_and_metadata(one)[1].icc_profile == adobe_rgb_profile()
    for source, target in [(one, "one.png"), (many, "many.apng"), (many, "again.gif")]:
        assert run(tiny, source, tmp_path / target) == 0
    for target in ("one.png", "many.apng"):
        with Image.open(tmp_path / target) as im:
            assert im.info["icc_profile"] == adobe_rgb_profile()
    assert profile_read_by_pillow_from_gif(tmp_path / "again.gif") == adobe_rgb_profile()


def test_an_rgb_profile_of_grey_frames_is_kept_where_the_output_stores_rgb_and_noted_elsewhere(tmp_path, tiny,
                                                                                                 capsys):
    """A grey GIF (a palette of greys, read as grey frames) with an RGB profile, ICCRGBG1 being RGB: a GIF
    output, whose palette is RGB, keeps it; a grey APNG cannot hold an RGB profile (PNG 3rd edition, 11.3.2.3:
    a greyscale image takes a GRAY profile), so a note says so: never dropped in silence."""
    source = add_gif_profile(grey_palette_gif(tmp_path / "grey.gif"), adobe_rgb_profile())
    capsys.readouterr()
    assert run(tiny, source, tmp_path / "out.gif") == 0
    assert "note:" not in capsys.readouterr().err
    assert profile_read_by_pillow_from_gif(tmp_path / "out.gif") == adobe_rgb_profile()
    assert run(tiny, source, tmp_path / "out.apng") == 0
    assert (f"note: {tmp_path / 'out.apng'}: the colour profile of the input not kept (its colour space is not "
            "the image's)") in capsys.readouterr().err
    with Image.open(tmp_path / "out.apng") as im:
        assert im.mode == "L" and "icc_profile" not in im.info


def test_an_empty_gif_profile_is_noted_as_damaged(tmp_path):
    """An ICCRGBG1 extension with no data: the GIF says it has a profile and holds none, so the note says
    the profile is damaged (ICC.1:2022, 7.2: no 128-byte header)."""
    source = gif_with_profile(tmp_path / "one.gif", list(moving_shapes(1)), b"")
    metadata = media.read_image_and_metadata(source)[1]
    assert media.metadata_note(tmp_path / "x.png", metadata, 3) == \
        f"{tmp_path / 'x.png'}: the colour profile of the input not kept (damaged: no ICC profile header)"


def ffmpeg_profiles(path):
    """(the ICC profile FFmpeg attaches to each decoded frame of the first video stream, the frames as RGB)."""
    profiles, pixels = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            side_data = frame.side_data
            entries = [item if hasattr(item, "type") else side_data[item] for item in side_data]
            profiles.append(next((bytes(e) for e in entries if str(e.type).endswith("ICC_PROFILE")), None))
            pixels.append(frame.to_ndarray(format="rgb24"))
    return profiles, pixels


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_mp4_and_mov_outputs_keep_the_profile_as_ffmpeg_reads_it(tmp_path, tiny, suffix):
    """The profile of an animation goes into an MP4 or MOV written from it, where FFmpeg's demuxer finds it
    (ISO/IEC 14496-12's 'colr' box of type 'prof'; FFmpeg gives it to every decoded frame); the frames decode
    as those written without a profile (lossless). Upscaled again as a video (into the other container and
    into APNG) the profile goes on, so it is also read from a video."""
    frames = list(moving_shapes(3))
    tagged = tagged_animation(tmp_path / "anim.png", frames, adobe_rgb_profile())
    plain = tagged_animation(tmp_path / "plain.png", frames)
    out, out_plain = tmp_path / f"out{suffix}", tmp_path / f"plain{suffix}"
    assert run(tiny, tagged, out, "--lossless") == 0 and run(tiny, plain, out_plain, "--lossless") == 0
    profiles, got = ffmpeg_profiles(out)
    assert profiles == [adobe_rgb_profile()] * 3
    no_profiles, want = ffmpeg_profiles(out_plain)
    assert no_profiles == [None] * 3
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    other = tmp_path / ("again.mov" if suffix == ".mp4" else "again.mp4")
    assert run(tiny, out, other) == 0
    assert ffmpeg_profiles(other)[0] == [adobe_rgb_profile()] * 3


def test_a_video_profile_that_the_output_cannot_hold_is_noted(tmp_path, tiny, capsys):
    """A video whose profile FFmpeg reads (an MP4 written from a tagged APNG, checked through FFmpeg) is read
    with it, and upscaled into Matroska (which has no place for one) gets the note."""
    tagged = tagged_animation(tmp_path / "anim.png", list(moving_shapes(3)), adobe_rgb_profile())
    assert run(tiny, tagged, tmp_path / "clip.mp4", "--lossless") == 0
    assert ffmpeg_profiles(tmp_path / "clip.mp4")[0][0] == adobe_rgb_profile()
    with VideoReader(tmp_path / "clip.mp4") as reader:
        assert reader.metadata.icc_profile == adobe_rgb_profile()
    capsys.readouterr()
    assert run(tiny, tmp_path / "clip.mp4", tmp_path / "clip.mkv") == 0
    assert (f"note: {tmp_path / 'clip.mkv'}: the colour profile of the input not kept (MKV video holds none)"
            in capsys.readouterr().err)


def test_the_profile_box_leaves_the_rest_of_an_mp4_as_ffmpeg_reads_it(tmp_path):
    """`mp4.insert_icc_profile` on an MP4 whose first track is audio and whose video stream has a colour
    description ('colr' 'nclx'): FFmpeg then reads the profile on the video stream, the same colour
    description, the same frames and the same audio packets."""
    path = tmp_path / "clip.mp4"
    out = av.open(str(path), "w")
    sound = out.add_stream("aac", rate=8000, layout="mono")
    stream = out.add_stream("libx264", rate=25, options={"crf": "18"})
    stream.height, stream.width, stream.pix_fmt = 24, 32, "yuv420p"
    context = stream.codec_context
    context.colorspace, context.color_range, context.color_primaries, context.color_trc = 1, 1, 1, 1
    for i, pixels in enumerate(moving_shapes(4)):
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))
    tone = av.AudioFrame.from_ndarray((3000 * np.sin(np.arange(1280) / 5)).astype(np.int16)[None], format="s16",
                                      layout="mono")
    tone.sample_rate, tone.pts = 8000, 0
    out.mux(sound.encode(tone))
    out.mux(sound.encode(None))
    out.close()

    def described(p):
        with av.open(str(p)) as c:
            video = c.streams.video[0]
            first = next(c.decode(video))
            description = [getattr(first, name) for name in ("colorspace", "color_range")]
        with av.open(str(p)) as c:
            audio = [bytes(packet) for packet in c.demux(audio=0) if packet.size]
        return description, audio

    before_description, before_audio = described(path)
    before_profiles, before_frames = ffmpeg_profiles(path)
    mp4.insert_icc_profile(path, adobe_rgb_profile())
    after_description, after_audio = described(path)
    profiles, frames = ffmpeg_profiles(path)
    assert before_profiles == [None] * 4 and profiles == [adobe_rgb_profile()] * 4
    assert after_description == before_description == [1, 1] and after_audio == before_audio
    for a, b in zip(frames, before_frames, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_still_written_as_apng_or_gif_keeps_its_profile(tmp_path, tiny, capsys):
    """A still image written in an animation format (a one-frame APNG or GIF) carries its metadata as an
    animation does: APNG the profile and EXIF, GIF the profile, with a note for its EXIF."""
    Image.fromarray(next(moving_shapes(1))).save(tmp_path / "one.png", icc_profile=adobe_rgb_profile(),
                                                 exif=photo_exif(32, 24))
    assert run(tiny, tmp_path / "one.png", tmp_path / "out.apng") == 0
    with Image.open(tmp_path / "out.apng") as im:
        assert im.info["icc_profile"] == adobe_rgb_profile() and im.getexif()[0x8298] == "(c) someone"
        assert im.size == (48, 64)  # turned upright
    assert "note:" not in capsys.readouterr().err
    assert run(tiny, tmp_path / "one.png", tmp_path / "out.gif") == 0
    assert capsys.readouterr().err.count("note: ") == 1
    assert profile_read_by_pillow_from_gif(tmp_path / "out.gif") == adobe_rgb_profile()


# ---- still images in animation formats -------------------------------------------------------------------

def test_one_frame_gif_is_written_as_a_gif(tmp_path, tiny):
    """The issue's instance: a GIF of one frame gives a GIF of one frame, the still path's result quantised as
    Pillow quantises a GIF (read back by Pillow: size, one frame)."""
    frame = next(with_alpha(moving_shapes(1)))
    Image.fromarray(frame).save(tmp_path / "one.gif")
    assert run(tiny, tmp_path / "one.gif", tmp_path) == 0
    with Image.open(tmp_path / "one_x2.gif") as im:
        assert im.format == "GIF" and im.n_frames == 1 and im.size == (64, 48)
    (want,) = still_path([media.read_image(tmp_path / "one.gif")], tiny[1])
    buffer = io.BytesIO()
    Image.fromarray(want).save(buffer, format="GIF")
    assert_equal_where_visible(media.read_image(tmp_path / "one_x2.gif"), decode_image(buffer.getvalue()))


@pytest.mark.parametrize("apng", [True, False])  # an APNG of one frame, and a plain PNG named .apng
def test_one_frame_apng_is_written_as_an_apng(tmp_path, tiny, apng):
    frame = next(moving_shapes(1))
    Image.fromarray(frame).save(tmp_path / "one.apng", format="PNG", **({"save_all": True} if apng else {}))
    assert run(tiny, tmp_path / "one.apng", tmp_path) == 0
    with Image.open(tmp_path / "one_x2.apng") as im:
        assert im.format == "PNG" and im.n_frames == 1 and im.size == (64, 48)
    (want,) = still_path([frame], tiny[1])
    np.testing.assert_array_equal(media.read_image(tmp_path / "one_x2.apng"), want)


@pytest.mark.parametrize("name", ["one.webp", "one.tif"])
def test_one_frame_webp_and_tiff_stay_stills(tmp_path, tiny, name):
    frame = next(moving_shapes(1))
    Image.fromarray(frame).save(tmp_path / name, **({"lossless": True} if name.endswith("webp") else {}))
    assert run(tiny, tmp_path / name, tmp_path) == 0
    target = tmp_path / name.replace(".", "_x2.")
    with Image.open(target) as im:
        assert getattr(im, "n_frames", 1) == 1 and im.size == (64, 48)


def test_a_tiff_only_tifffile_reads_goes_into_an_animation_format(tmp_path, tiny):
    """A 16-bit grey + alpha TIFF, which Pillow cannot open (tifffile reads it), written as a one-frame APNG:
    the pixels the still path reads, in 8 bits, and no delay (the TIFF states none)."""
    pixels = np.random.default_rng(0).integers(0, 65536, (12, 10, 2), np.uint16)
    tifffile.imwrite(tmp_path / "grey16.tif", pixels, photometric="minisblack", extrasamples=[2])
    with pytest.raises(OSError):
        Image.open(tmp_path / "grey16.tif")
    assert run(tiny, tmp_path / "grey16.tif", tmp_path / "out.apng") == 0
    with Image.open(tmp_path / "out.apng") as im:
        assert im.size == (20, 24) and im.mode == "LA"
        got = np.asarray(im)
    (want,) = still_path([media.read_image(tmp_path / "grey16.tif")], tiny[1])
    np.testing.assert_array_equal(got, to_8_bits(want).reshape(got.shape))


def test_one_frame_video(tmp_path, tiny):
    source = write_clip(tmp_path / "one.mkv", count=1, fmt="matroska", audio=None)
    assert run(tiny, source, tmp_path / "out.mkv", "--lossless") == 0
    out, summary = decoded(tmp_path / "out.mkv")
    assert summary["count"] == 1
    np.testing.assert_array_equal(out[0], still_path(list(moving_shapes(1)), tiny[1])[0])


# ---- display metadata ------------------------------------------------------------------------------------

def with_display_matrix(path, a, b, c, d):
    """Set the first track's display matrix in an MP4's tkhd box (ISO/IEC 14496-12, 8.3.2: after version,
    flags, times, track id, duration, 8 reserved bytes, layer, group, volume and 2 reserved bytes come
    a, b, u, c, d, v, x, y, w; a-d and x, y in 16.16 fixed point, u, v, w in 2.30)."""
    data = bytearray(path.read_bytes())
    box = data.index(b"tkhd") + 4
    times = 32 if data[box] == 1 else 20
    matrix = box + 4 + times + 8 + 8
    values = [a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30]
    data[matrix:matrix + 36] = b"".join(v.to_bytes(4, "big", signed=True) for v in values)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("matrix", [(0, 1, -1, 0), (0, -1, 1, 0), (-1, 0, 0, -1)])
def test_display_rotation_is_applied_to_the_frames(tmp_path, tiny, matrix):
    """A phone's portrait clip (and the other quarter turns): the output shows as the source does. FFmpeg
    reports the source's rotation (frame.rotation, counter-clockwise degrees); the output frames are the still
    path's result on the source frames turned by it, and carry no rotation."""
    source = with_display_matrix(write_clip(tmp_path / "phone.mp4", count=3, audio=None), *matrix)
    with av.open(str(source)) as c:
        first = next(c.decode(video=0))
    rotation = first.rotation
    assert rotation in (-90, 90, 180, -180)
    assert run(tiny, source, tmp_path / "out.mp4", "--lossless") == 0
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert next(c.decode(video=0)).rotation == 0
    turned = [np.rot90(f, k=rotation // 90) for f in moving_shapes(3)]
    out, summary = decoded(tmp_path / "out.mp4")
    assert summary["size"] == (turned[0].shape[1] * 2, turned[0].shape[0] * 2)
    for got, want in zip(out, still_path(turned, tiny[1]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_mirroring_display_matrix_is_applied(tmp_path, tiny):
    """a = -1: x' = -x, a horizontal mirror (ISO/IEC 14496-12's matrix), which FFmpeg applies as hflip."""
    source = with_display_matrix(write_clip(tmp_path / "selfie.mp4", count=2, audio=None), -1, 0, 0, 1)
    assert run(tiny, source, tmp_path / "out.mp4", "--lossless") == 0
    out, _ = decoded(tmp_path / "out.mp4")
    for got, want in zip(out, still_path([f[:, ::-1] for f in moving_shapes(2)], tiny[1]), strict=True):
        np.testing.assert_array_equal(got, want)


def test_sample_aspect_ratio_and_colour_description_are_kept(tmp_path, tiny):
    """An anamorphic (4:3 pixels), BT.709 full-range clip: the output carries the same sample aspect ratio and
    colour fields as FFmpeg reads them back, and its frames, decoded by FFmpeg to RGB, are the still path's
    result on FFmpeg's RGB frames of the source within H.264's precision."""
    path = tmp_path / "wide.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=25, options={"qp": "0"})
        stream.height, stream.width, stream.pix_fmt = 24, 32, "yuv444p"
        context = stream.codec_context
        context.sample_aspect_ratio = Fraction(4, 3)
        context.colorspace, context.color_range, context.color_primaries, context.color_trc = 1, 2, 1, 1
        for i, pixels in enumerate(moving_shapes(3)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
                format="yuv444p", dst_colorspace=1, dst_color_range=2)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert run(tiny, path, tmp_path / "out.mkv", "--crf", "0") == 0
    with av.open(str(path)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        first_a, first_b = next(a.decode(video=0)), next(b.decode(video=0))
        fields = [f for f in ("colorspace", "color_range", "color_primaries", "color_trc") if hasattr(first_a, f)]
        assert [int(getattr(first_b, f)) for f in fields] == [int(getattr(first_a, f)) for f in fields]
        assert [int(getattr(first_a, f)) for f in fields] == [1, 2, 1, 1][:len(fields)]
        assert b.streams.video[0].sample_aspect_ratio == a.streams.video[0].sample_aspect_ratio == Fraction(4, 3)
    with av.open(str(path)) as c:
        source = [f.to_ndarray(format="rgb24", src_colorspace=1, src_color_range=2) for f in c.decode(video=0)]
    with av.open(str(tmp_path / "out.mkv")) as c:
        got = [f.to_ndarray(format="rgb24", src_colorspace=1, src_color_range=2) for f in c.decode(video=0)]
    for frame, want in zip(got, still_path(source, tiny[1]), strict=True):
        subsampled = av.VideoFrame.from_ndarray(want, format="rgb24").reformat(
            format="yuv420p", dst_colorspace=1, dst_color_range=2).to_ndarray(format="rgb24", src_colorspace=1,
                                                                              src_color_range=2)
        assert np.mean((frame.astype(float) - subsampled) ** 2) < 4


# ---- the other streams of a video -------------------------------------------------------------------------

def stereo_pcm_avi(path, count=8):
    """The issue's AVI: `count` frames and PCM audio in two channels ("2 channels", no order, as AVI states it)."""
    with av.open(str(path), "w", format="avi") as out:
        video = out.add_stream("libx264rgb", rate=25, options={"qp": "0", "bf": "0"})
        video.height, video.width, video.pix_fmt = 24, 32, "rgb24"
        sound = out.add_stream("pcm_s16le", rate=8000, layout="stereo")
        for i, pixels in enumerate(moving_shapes(count)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        tone = (3000 * np.sin(np.arange(8000 * count // 25) / 5)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([tone, -tone]), format="s16p", layout="stereo")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return path


def test_pcm_audio_into_mp4_is_converted_with_a_note(tmp_path, tiny, capsys):
    """The issue's instance: FFmpeg's mp4 muxer refuses the AVI's PCM ("unsupported channel layout"); the audio
    is converted to the muxer's default (AAC), said in one note line, and lasts as long, in two channels."""
    source = stereo_pcm_avi(tmp_path / "clip.avi")
    assert run(tiny, source, tmp_path / "out.mp4") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "audio stream 1 (pcm_s16le) is converted to aac" in notes[0], notes
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mp4")) as b:
        assert [s.type for s in b.streams] == ["video", "audio"]
        assert b.streams.audio[0].codec_context.name == "aac" and b.streams.audio[0].codec_context.channels == 2
        seconds = sum(f.samples for f in a.decode(audio=0)) / 8000
        out = b.streams.audio[0]
        assert abs(float(out.duration * out.time_base) - seconds) < 1024 / 8000  # within one AAC frame
    assert media.frame_summary(tmp_path / "out.mp4")["count"] == 8


def test_aac_into_mkv_is_copied(tmp_path, tiny, capsys):
    source = write_clip(tmp_path / "clip.mp4", count=4)
    assert run(tiny, source, tmp_path / "out.mkv") == 0
    assert "note:" not in capsys.readouterr().err
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        packets = lambda c: [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]  # noqa: E731
        assert packets(a) == packets(b)


def subtitled_mkv(path):
    """A Matroska clip with a SubRip subtitle stream (PyAV muxes the text packet as it is)."""
    with av.open(str(path), "w", format="matroska") as out:
        video = lossless_stream(out)
        subtitle = out.add_mux_stream("subrip")
        subtitle.time_base = Fraction(1, 1000)
        packet = av.Packet(b"hello")
        packet.stream, packet.pts, packet.dts, packet.duration = subtitle, 0, 0, 100
        packet.time_base = Fraction(1, 1000)
        out.mux(packet)
        mux_frames(out, video, moving_shapes(3))
    return path


def test_subtitles_are_copied_where_the_container_takes_them(tmp_path, tiny):
    source = subtitled_mkv(tmp_path / "film.mkv")
    assert run(tiny, source, tmp_path / "out.mkv") == 0
    with av.open(str(source)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        assert [s.type for s in b.streams] == ["video", "subtitle"]
        packets = lambda c: [bytes(p) for p in c.demux(c.streams.subtitles[0]) if p.size]  # noqa: E731
        assert packets(a) == packets(b) == [b"hello"]


def with_attachment(path):
    """A Matroska clip with a font attached (as subtitled films carry them)."""
    with av.open(str(path), "w", format="matroska") as out:
        if not hasattr(out, "add_attachment"):
            pytest.skip("this PyAV cannot write attachments (add_attachment)")
        video = lossless_stream(out)
        out.add_attachment("font.ttf", "font/ttf", b"not really a font")
        mux_frames(out, video, moving_shapes(2))
    return path


def test_attachments_are_copied_where_the_container_takes_them(tmp_path, tiny):
    source = with_attachment(tmp_path / "film.mkv")
    assert run(tiny, source, tmp_path / "out.mkv") == 0
    with av.open(str(tmp_path / "out.mkv")) as c:
        (attachment,) = c.streams.attachments
        assert (attachment.name, bytes(attachment.data)) == ("font.ttf", b"not really a font")


def timecoded_mov(path):
    """A QuickTime clip with a timecode (tmcd) data stream, as cameras write them."""
    with av.open(str(path), "w", format="mov") as out:
        video = lossless_stream(out)
        video.metadata["timecode"] = "01:00:00:00"
        mux_frames(out, video, moving_shapes(2))
    return path


@pytest.mark.parametrize("make,target,fragment", [
    pytest.param(subtitled_mkv, "out.mp4", "its subtitle stream 1 (srt) cannot go into .mp4", id="subtitles-mp4"),
    pytest.param(subtitled_mkv, "out.webm", "its subtitle stream 1 (srt) cannot go into .webm", id="subtitles-webm"),
    pytest.param(timecoded_mov, "out.mkv", "its data stream 1 (TimeCodeHandler) cannot go into .mkv", id="timecode"),
    pytest.param(with_attachment, "out.mp4", "its attachment stream 1 (font.ttf) cannot go into .mp4", id="font"),
])
def test_streams_the_container_cannot_take_are_refused_before_work(tmp_path, tiny, capsys, monkeypatch, make,
                                                                   target, fragment):
    """One line naming the stream, before the first frame is decoded, and nothing written."""
    source = make(tmp_path / ("in.mov" if make is timecoded_mov else "in.mkv"))
    monkeypatch.setattr(VideoReader, "frames", lambda *_: pytest.fail("a frame was decoded"))
    assert run(tiny, source, tmp_path / target) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not list(tmp_path.glob("*out*"))


TAGS = {"title": "Holiday", "artist": "someone", "comment": "a comment",
        "creation_time": "2026-01-02T03:04:05.000000Z",
        "com.apple.quicktime.location.ISO6709": "+52.5200+013.4050+034.000/", "com.apple.quicktime.make": "Apple"}


def tagged_clip(path, fmt):
    """A clip with container tags (`TAGS`, as a phone writes a place and a maker as QuickTime keys), a video
    stream in German, and two chapters; in MP4 the chapters are a chapter track, which FFmpeg reads as a
    discarded data stream. (MP4 written with every tag as a QuickTime key: without creation_time, which
    FFmpeg then writes both as a key and in the movie header, and FFmpeg 8 reads back twice.)"""
    out = av.open(str(path), "w", format=fmt, options={"movflags": "use_metadata_tags"} if fmt == "mp4" else {})
    out.metadata.update({k: v for k, v in TAGS.items() if fmt != "mp4" or k != "creation_time"})
    stream = lossless_stream(out)
    stream.metadata["language"] = "deu"
    out.set_chapters([{"id": 1, "start": 0, "end": 40, "time_base": Fraction(1, 1000), "metadata": {"title": "One"}},
                      {"id": 2, "start": 40, "end": 120, "time_base": Fraction(1, 1000),
                       "metadata": {"title": "Two"}}])
    mux_frames(out, stream, moving_shapes(3))
    out.close()
    return path


def tags_and_chapters(path):
    """(container tags with lowercase names, the video stream's language, [(chapter start in seconds,
    title)]) as FFmpeg reads a file."""
    with av.open(str(path)) as c:
        tags = {k.lower(): v for k, v in c.metadata.items()}
        chapters = [(float(ch["start"] * ch["time_base"]), ch["metadata"].get("title")) for ch in c.chapters()]
        return tags, c.streams.video[0].metadata.get("language"), chapters


@pytest.mark.parametrize("source_fmt", ["mp4", "matroska"])
@pytest.mark.parametrize("target", ["out.mp4", "out.mov", "out.mkv", "out.webm"])
def test_tags_and_chapters_are_kept(tmp_path, tiny, capsys, source_fmt, target):
    """The container's tags, the video stream's language and the chapters, as FFmpeg reads them from the
    source, are what FFmpeg reads from the output; an MP4's chapter track is carried as the chapters, not
    refused as a stream the output cannot take. Matroska and WebM take every tag; MP4 and MOV those FFmpeg's
    muxer places in their own boxes (a phone's com.apple.quicktime keys are named in one note)."""
    source = tagged_clip(tmp_path / ("in.mp4" if source_fmt == "mp4" else "in.mkv"), source_fmt)
    tags, language, chapters = tags_and_chapters(source)
    assert chapters == [(0.0, "One"), (0.04, "Two")] and language == "deu"
    capsys.readouterr()
    assert run(tiny, source, tmp_path / target) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    out_tags, out_language, out_chapters = tags_and_chapters(tmp_path / target)
    assert out_chapters == chapters
    quicktime_keys = [name for name in TAGS if name.startswith("com.apple.")]
    kept = [name for name in TAGS if name.lower() in tags and (target in ("out.mkv", "out.webm")
                                                                or name not in quicktime_keys)]
    for name in kept:  # (FFmpeg's reader lists a file's brands and writer besides)
        assert out_tags[name.lower()] == tags[name.lower()]
    if target in ("out.mkv", "out.webm"):
        assert notes == [] and out_language == language
    else:
        assert len(notes) == 1, notes
        lost = notes[0].split("does not write: ")[1].split(", ")
        assert {name.lower() for name in quicktime_keys} <= {name.lower() for name in lost}


def test_tags_and_chapters_avi_cannot_hold_are_noted(tmp_path, tiny, capsys):
    """AVI keeps a few named tags (its RIFF INFO list: title, artist, comment) and no chapters: the others are
    named in notes before the first frame, and what AVI keeps is there, as FFmpeg reads it."""
    source = tagged_clip(tmp_path / "in.mkv", "matroska")
    capsys.readouterr()
    assert run(tiny, source, tmp_path / "out.avi") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    head = f"note: {source}: tags not kept in .avi, which FFmpeg's avi muxer does not write: "
    assert len(notes) == 2 and notes[0].startswith(head), notes
    lost = {name.lower() for name in notes[0][len(head):].split(", ")}  # (as the source names them)
    assert lost == {name.lower() for name in TAGS if name not in ("title", "artist", "comment")} | \
        {"language (video stream)"}
    assert notes[1] == f"note: {source}: its 2 chapters are not kept in .avi (it holds none)"
    out_tags, _, out_chapters = tags_and_chapters(tmp_path / "out.avi")
    assert {k: out_tags[k] for k in ("title", "artist", "comment")} == \
        {k: TAGS[k] for k in ("title", "artist", "comment")} and out_chapters == []


@pytest.mark.parametrize("target", ["out.mkv", "out.mp4", "out.webm", "out.avi"])
def test_the_language_and_title_of_other_streams_are_kept(tmp_path, tiny, capsys, target):
    """An audio stream in French titled "Commentary", copied (MKV, MP4, AVI) or converted (WebM: Opus): FFmpeg
    reads the same language and title from the output (its MP4 reader calls a track's title "name"); AVI,
    which stores a stream's title but no language, gets a note naming the language, before the work."""
    source = write_clip(tmp_path / "in.mkv", fmt="matroska")
    with av.open(str(source)) as c:  # the same clip, its audio stream tagged (remuxed by FFmpeg as it is)
        with av.open(str(tmp_path / "tagged.mkv"), "w", format="matroska") as out:
            copies = {s.index: out.add_stream_from_template(s) for s in c.streams}
            copies[1].metadata.update({"language": "fra", "title": "Commentary"})
            for packet in c.demux():
                if packet.dts is not None:
                    packet.stream = copies[packet.stream.index]
                    out.mux(packet)
    capsys.readouterr()
    assert run(tiny, tmp_path / "tagged.mkv", tmp_path / target) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "tags not kept" in line]
    with av.open(str(tmp_path / target)) as c:
        tags = {("title" if k == "name" else k): v for k, v in c.streams.audio[0].metadata.items()}
    assert tags.get("title") == "Commentary"
    if target == "out.avi":
        assert notes == [f"note: {tmp_path / 'tagged.mkv'}: tags not kept in .avi, which FFmpeg's avi muxer does "
                         "not write: language (audio stream 1 (aac))"]
    else:
        assert notes == [] and tags.get("language") == "fra"


def test_a_second_video_stream_is_copied_with_a_note(tmp_path, tiny, capsys):
    """Only the first video stream is upscaled; a second one (another camera angle) is copied as it is, and a
    note says so."""
    path = tmp_path / "angles.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        first, second = lossless_stream(out), lossless_stream(out)
        mux_frames(out, first, moving_shapes(2))
        mux_frames(out, second, [np.ascontiguousarray(f[::-1]) for f in moving_shapes(2)])
    assert run(tiny, path, tmp_path / "out.mkv") == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "video stream 1 (h264) is copied as it is" in notes[0], notes
    with av.open(str(path)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        assert [(s.width, s.height) for s in b.streams.video] == [(64, 48), (32, 24)]
        packets = lambda c: [bytes(p) for p in c.demux(c.streams.video[1]) if p.size]  # noqa: E731
        assert packets(a) == packets(b)


@pytest.mark.parametrize("opaque_first", [True, False])
def test_gif_transparency_never_shows_the_frame_before(tmp_path, tiny, opaque_first):
    """RGBA frames (an APNG) in which one frame is opaque and the next has a transparent band: in the GIF, as
    Pillow composes its frames for display, each frame is transparent exactly where its RGBA frame is (the
    frame before never shows through) and where Pillow's GIF writer makes the still path's result
    transparent, and visible colours are that result within twice the error of Pillow's own quantisation (an
    opaque frame keeps one palette entry free as its transparent colour)."""
    frames = [np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]) for f in moving_shapes(3)]
    frames[1 if opaque_first else 0][:, :6, 3] = 0
    save_frames(tmp_path / "anim.png", frames, "RGBA")
    assert run(tiny, tmp_path / "anim.png", tmp_path / "out.gif") == 0
    out = pillow_frames(tmp_path / "out.gif", "RGBA")
    for got, want in zip(out, still_path(frames, tiny[1]), strict=True):
        buffer = io.BytesIO()
        Image.fromarray(want).save(buffer, format="GIF")
        pillow = np.asarray(Image.open(buffer).convert("RGBA"))
        np.testing.assert_array_equal(got[..., 3] == 0, pillow[..., 3] == 0)
        visible = want[..., 3] == 255  # (partly transparent pixels are quantised with their alpha)
        error = lambda gif: np.mean((gif[visible][:, :3].astype(float) - want[visible][:, :3]) ** 2)  # noqa: E731
        assert error(got) <= 2 * error(pillow) + 1, (error(got), error(pillow))


def test_tiff_pages_in_cmyk_are_read_in_the_colours_they_mean(tmp_path, tiny):
    """A multi-page TIFF of CMYK pages (Pillow's conversion writes them): each page is read as the still path
    reads a CMYK TIFF, in RGB as Pillow converts it back, never as RGBA with K taken for alpha."""
    pages = [Image.fromarray(f).convert("CMYK") for f in moving_shapes(2)]
    pages[0].save(tmp_path / "print.tif", save_all=True, append_images=pages[1:])
    source_frames, _ = decoded(tmp_path / "print.tif")
    assert [f.shape[-1] for f in source_frames] == [3, 3]
    for got, page in zip(source_frames, pages, strict=True):
        np.testing.assert_array_equal(got, np.asarray(page.convert("RGB")))


# ---- timing: frame times and durations as PyAV and Pillow read them ----------------------------------------

def as_is(path, target, **options):
    """`target` transcoded from `path` with the frames unchanged (the timing does not depend on them)."""
    return media.transcode(path, target, lambda h, w: (h, w), lambda frames: frames, note=lambda text: None,
                           **options)


def frame_times(path):
    """(frame times in seconds, as PyAV decodes them; the output stream's time base)."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [float(f.pts * f.time_base) for f in c.decode(stream)], stream.time_base


def last_frame_and_length(path):
    """(duration in seconds of the packet shown last, the container's duration in seconds), as PyAV demuxes."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
        last = max(packets, key=lambda p: p.pts)
        return float(last.duration * last.time_base), c.duration / av.time_base


@pytest.mark.parametrize("source_name,audio,lossless", [("plain.avi", None, False), ("clip.mp4", "aac", False),
                                                        ("clip.mp4", "aac", True), ("clip.mkv", None, False)])
def test_avi_output_keeps_the_frame_times(tmp_path, source_name, audio, lossless):
    """AVI stores a frame rate: the frames come back at the input's times within one tick of the output's time
    base (one frame period, not FFmpeg's 1/600 s fallback nor Matroska's milliseconds), equally spaced as in
    the input, and an AVI rewritten as AVI reads back at the same times (PyAV reads an H.264 AVI's frames a
    frame period late)."""
    source = write_clip(tmp_path / source_name, count=12, rate=10, audio=audio,
                        fmt="matroska" if source_name.endswith(".mkv") else None)
    want, _ = frame_times(source)
    as_is(source, tmp_path / "once.avi", lossless=lossless)
    got, time_base = frame_times(tmp_path / "once.avi")
    assert time_base == Fraction(1, 10)
    assert np.allclose(np.diff(got), np.diff(want)) and np.abs(np.subtract(got, want)).max() <= time_base + 1e-9
    if source_name.endswith(".avi"):
        assert got == pytest.approx(want)
    as_is(tmp_path / "once.avi", tmp_path / "twice.avi", lossless=lossless)
    assert frame_times(tmp_path / "twice.avi")[0] == pytest.approx(got)


GIF_DURATIONS = [100, 200, 100, 50, 300]  # milliseconds


def animation_with_durations(path):
    frames = [Image.fromarray(f) for f in moving_shapes(len(GIF_DURATIONS))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=GIF_DURATIONS, loop=0)
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".webm"])
@pytest.mark.parametrize("name", ["anim.gif", "anim.png", "vfr.mkv"])  # (Pillow reads animated WebP as RGBA)
def test_video_outputs_keep_every_frame_duration_including_the_last(tmp_path, name, suffix):
    """Frame times and the last frame's duration as the input states them (Pillow's durations for animations,
    PyAV's frame times and last packet duration for a video), so the stream lasts as long as the input."""
    if name == "vfr.mkv":
        source = write_clip(tmp_path / name, count=5, fmt="matroska", audio=None, pts=[0, 100, 300, 400, 450])
        want_times, _ = frame_times(source)
        want_last, _ = last_frame_and_length(source)
    else:
        source = animation_with_durations(tmp_path / name)
        with Image.open(source) as im:
            durations = []
            for index in range(im.n_frames):
                im.seek(index)
                im.load()  # (WebP states a frame's duration once it is read)
                durations.append(im.info["duration"])
        want_times = (np.cumsum([0, *durations[:-1]]) / 1000).tolist()
        want_last = durations[-1] / 1000
    target = tmp_path / f"out{suffix}"
    as_is(source, target)
    got_times, _ = frame_times(target)
    last, length = last_frame_and_length(target)
    assert got_times == pytest.approx(want_times, abs=1e-3)
    assert last == pytest.approx(want_last, abs=1e-3)
    assert length == pytest.approx(want_times[-1] + want_last, abs=1e-3)


@pytest.mark.parametrize("duration", [None, 70])
def test_one_frame_gif_keeps_its_duration_or_none(tmp_path, duration):
    """A still GIF without a delay gains none (Pillow reads no duration), one with a delay keeps it."""
    Image.fromarray(next(moving_shapes(1))).save(tmp_path / "one.gif",
                                                 **({} if duration is None else {"duration": duration}))
    with Image.open(tmp_path / "one.gif") as im:
        want = im.info.get("duration")
    as_is(tmp_path / "one.gif", tmp_path / "out.gif")
    with Image.open(tmp_path / "out.gif") as im:
        assert im.info.get("duration") == want


# ---- options that do not apply ----------------------------------------------------------------------------

@pytest.mark.parametrize("crf,name,range_", [(-3, "out.mp4", "0 to 51"), (99, "out.mp4", "0 to 51"),
                                             (99, "out.webm", "0 to 63"), (64, "out.mkv", "0 to 51")])
def test_crf_outside_the_encoders_range_is_one_line_before_any_work(tmp_path, capsys, crf, name, range_):
    """Refused before the weights are read (the checkpoint named does not exist) and before any frame."""
    source = write_clip(tmp_path / "clip.mkv", count=2, fmt="matroska", audio=None)
    assert upscale_files.main([str(source), "--checkpoint", str(tmp_path / "missing"), "--scale", "2", "-o",
                               str(tmp_path / name), "--crf", str(crf)]) == 1
    assert error_lines(capsys) == [f"error: --crf {crf}: {'libvpx-vp9' if name.endswith('.webm') else 'libx264'}"
                                   f" (for {name[3:]}) takes {range_}"]
    assert not (tmp_path / name).exists()


def test_options_an_output_ignores_are_noted(tmp_path, tiny, capsys):
    """--crf for a still image, --compare for an animation: one note each; the outputs are written."""
    Image.fromarray(next(moving_shapes(1))).save(tmp_path / "still.png")
    assert run(tiny, tmp_path / "still.png", tmp_path / "big.png", "--crf", "20") == 0
    assert error_lines(capsys) == [f"note: {tmp_path / 'big.png'}: --crf is ignored (it sets the quality of videos "
                                   "only)"]
    animation_with_durations(tmp_path / "anim.gif")
    assert run(tiny, tmp_path / "anim.gif", tmp_path / "big.gif", "--compare") == 0
    assert error_lines(capsys) == [f"note: {tmp_path / 'big.gif'}: --compare is ignored (comparisons are written "
                                   "for still images only)"]
    assert (tmp_path / "big.gif").exists() and not (tmp_path / "big_compare.png").exists()
