"""Dataset builders: prepared examples must be the original files' pixels, in a fixed order, without TensorFlow."""

import importlib.util
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from vdsr_jax import data as datasets
from vdsr_jax.errors import DataError
from vdsr_jax.media import decode_image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")


def pil_pixels(path: Path) -> np.ndarray:
    """The reference decoding of an 8-bit file: Pillow's pixels as H×W×C (grey keeps its one channel)."""
    with Image.open(path) as img:
        pixels = np.asarray(img)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def assert_matches_files(source, files: list[Path]) -> None:
    assert len(source) == len(files)
    for example, path in zip(source, files):
        assert example["name"].decode() == path.stem
        np.testing.assert_array_equal(decode_image(example["png"]), pil_pixels(path), err_msg=str(path))


@needs_shared
@pytest.mark.parametrize("name, folder, count", [("set5", "Set5", 5), ("set14", "Set14", 14)])  # Set14's bridge is gray
def test_benchmark_matches_originals(tmp_path, name, folder, count):
    files = sorted((DATA / "benchmarks" / folder).iterdir())
    source = datasets.load(name, tmp_path, manual_dir=DATA / "benchmarks")
    assert len(source) == count
    assert_matches_files(source, files)
    # Training reads through plain TFDS; once prepared that needs neither manual_dir nor our loader.
    assert_matches_files(tfds.data_source(name, data_dir=tmp_path, split="test"), files)
    images = datasets.load_images(name, tmp_path)
    assert [im.shape for im in images] == [pil_pixels(f).shape for f in files]


@pytest.mark.slow
@needs_shared
def test_train291_matches_originals_in_order(tmp_path):
    root = DATA / "train291"
    files = sorted((root / "T91").iterdir()) + sorted((root / "BSD200").iterdir())
    source = datasets.load("train291", tmp_path, manual_dir=root)
    assert len(source) == 291
    assert_matches_files(source, files)


def png_rgb16(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, which Pillow can read but not write."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def own_images(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """A nested folder of awkward images, and the pixels each should keep (by relative path)."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    rgba = rng.integers(0, 256, (3, 8, 4), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (4, 4), dtype=np.uint16)
    rgb16 = rng.integers(0, 65536, (2, 3, 3), dtype=np.uint16)
    root = tmp_path / "mine"
    for sub in ("a/b", "c", ".thumbnails"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(rgb).save(root / "top.png")
    Image.fromarray(rgb).save(root / "a" / "b" / "deep.BMP")
    Image.fromarray(gray).save(root / "a" / "gray.png")
    Image.fromarray(rgba).save(root / "c" / "alpha.png")
    Image.fromarray(gray16).save(root / "c" / "gray16.png")
    (root / "c" / "rgb16.png").write_bytes(png_rgb16(rgb16))
    Image.fromarray(rgb).save(root / "c" / "photo.jpg", quality=90)
    Image.fromarray(rgb).save(root / ".thumbnails" / "top.png")  # hidden: skipped
    (root / "c" / "notes.txt").write_text("not an image")
    expected = {
        "a/b/deep.BMP": rgb,
        "a/gray.png": gray[..., None],
        "c/alpha.png": rgba,
        "c/gray16.png": gray16[..., None],
        "c/photo.jpg": pil_pixels(root / "c" / "photo.jpg"),
        "c/rgb16.png": rgb16,
        "top.png": rgb,
    }
    return root, expected


def test_image_folder_decodes_every_kind_of_file(tmp_path, own_images):
    root, expected = own_images
    source = datasets.load("image_folder/mine", tmp_path / "data", manual_dir=root)
    assert [e["name"].decode() for e in source] == [Path(p).stem for p in expected]  # sorted by relative path
    for example, (relative, pixels) in zip(source, expected.items()):
        decoded = decode_image(example["png"])
        assert decoded.dtype == pixels.dtype
        np.testing.assert_array_equal(decoded, pixels, err_msg=relative)


def test_image_folders_coexist_under_their_names(tmp_path, own_images):
    root, expected = own_images
    data_dir = tmp_path / "data"
    datasets.load("image_folder/everything", data_dir, manual_dir=root)
    datasets.load("image_folder/only_c", data_dir, manual_dir=root / "c")
    assert len(tfds.data_source("image_folder/everything", data_dir=data_dir, split="train")) == len(expected)
    only_c = datasets.load_images("image_folder/only_c", data_dir)
    assert [(im.dtype, im.shape[-1]) for im in only_c] == [(np.uint8, 4), (np.uint16, 1), (np.uint8, 3), (np.uint16, 3)]


def test_data_dir_with_tilde_is_the_home_folder(tmp_path, own_images, monkeypatch):
    root, expected = own_images
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert len(datasets.load_images("image_folder/mine", "~/tfds", manual_dir=root)) == len(expected)
    assert (tmp_path / "home" / "tfds" / "image_folder").is_dir() and not (tmp_path / "~").exists()


def make_tree(root: Path, layout: dict[str, int]) -> Path:
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((2, 2, 3), i, np.uint8)).save(root / folder / f"{i}.png")
    return root


@pytest.mark.parametrize("name, layout, message", [
    ("set5", None, r"(?s)Manual directory \S*manual does not exist or is empty.*Set5/"),
    ("train291", {"T91": 91}, r"no folder \S*BSD200; sub-folders of \S*: \['T91'\]"),
    ("set14", {"Set14": 0, "other": 1}, r"no png/.*/webp files directly in \S*Set14"),
    ("set5", {"Set5": 4}, r"found 4 images in \S*Set5, expected 5"),
    ("image_folder/empty", {"sub": 0}, r"no png/.*/webp files under \S*manual"),
])
def test_missing_or_wrong_folder_says_what_is_expected(tmp_path, name, layout, message):
    manual = tmp_path / "manual"
    if layout is not None:
        make_tree(manual, layout)
    with pytest.raises(DataError, match=message) as info:
        datasets.load(name, tmp_path / "data", manual_dir=manual)
    assert "manual_dir" in str(info.value)  # the builder's layout instructions come along


@pytest.mark.parametrize("name", ["image_folder/mine", "set14"])
def test_no_folder_at_all_is_refused_before_anything_is_written(tmp_path, name):
    with pytest.raises(DataError, match=f"{name} is not prepared in .*no folder to build it from was given"):
        datasets.load(name, tmp_path / "data")
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.json"))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None, reason="would start a ~4 GB download")
def test_div2k_says_tensorflow_is_needed_before_downloading(tmp_path):
    with pytest.raises(DataError, match="needs TensorFlow.*div2k_hr"):
        datasets.load("div2k/bicubic_x2", tmp_path)


@pytest.mark.slow
def test_prepare_and_read_without_tensorflow(tmp_path):
    """Hides TensorFlow from a fresh interpreter, then prepares and reads a dataset."""
    make_tree(tmp_path / "images", {"x": 2})
    script = textwrap.dedent(f"""
        import sys

        class HideTensorFlow:  # TensorFlow looks uninstalled (find_spec -> None), even where it is.
            def __init__(self, finder):
                self.finder = finder

            def __getattr__(self, attr):
                return getattr(self.finder, attr)

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] != "tensorflow":
                    return self.finder.find_spec(name, path, target)

        sys.meta_path[:] = [HideTensorFlow(finder) for finder in sys.meta_path]
        import importlib.util
        assert importlib.util.find_spec("tensorflow") is None
        from vdsr_jax import data as datasets
        images = datasets.load_images("image_folder/x", {str(tmp_path / "data")!r}, {str(tmp_path / "images")!r})
        assert len(images) == 2 and images[1][0, 0, 0] == 1, images
        assert "tensorflow" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_split_over_the_writers_memory_buffer_prepares_without_tensorflow(tmp_path, monkeypatch):
    """TFDS spills a split over 1 GB (DIV2K) to disk; with a 1-byte buffer the spill path runs here."""
    from tensorflow_datasets.core import shuffle

    monkeypatch.setattr(shuffle, "MAX_MEM_BUFFER_SIZE", 1)
    make_tree(tmp_path / "images", {"x": 3})
    images = datasets.load_images("image_folder/spilled", tmp_path / "data", tmp_path / "images")
    assert len(images) == 3
