"""Base TFDS builder for datasets that are folders of images on the local disk.

Concrete builders only declare their name, description, split and which
sub-folders of `manual_dir` hold how many images; preparing, the feature spec
and error messages live here once.
"""

import importlib.util
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import tensorflow_datasets as tfds

from vdsr_jax.errors import DataError, ImageError
from vdsr_jax.media import IMAGE_SUFFIXES, encode_image, list_images, read_image


def _tf_free_spill() -> None:
    """TFDS's writer spills a split of over 1 GB to disk through `tf.io.gfile` (tensorflow_datasets.core.
    shuffle), which fails without TensorFlow (DIV2K is ~3.5 GB of PNG): without it, spill to local files."""
    if importlib.util.find_spec("tensorflow") is not None:
        return
    from tensorflow_datasets.core import shuffle

    gfile = SimpleNamespace(GFile=lambda path, mode="r": open(path, mode), exists=os.path.exists, remove=os.remove)
    shuffle.tf = SimpleNamespace(io=SimpleNamespace(gfile=gfile),
                                 errors=SimpleNamespace(ResourceExhaustedError=MemoryError))


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Turns folders under `manual_dir` into one split of `{image, name}` examples.

    Examples are written in generation order (shuffling disabled): folders in
    `FOLDERS` order, files sorted by relative path like MATLAB's `dir`, keyed by
    their path relative to `manual_dir`. Storage defaults to array_record so
    `tfds.data_source` can read it without TensorFlow.
    """

    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "2.0.0": "Pixels as read_image gives them (grey, alpha, 16 bits, EXIF orientation kept)."}

    DESCRIPTION: str = ""
    SPLIT: str = "test"
    # Sub-folder of manual_dir ("" = manual_dir itself) -> exact image count, or None for any.
    FOLDERS: Mapping[str, int | None] = {}
    RECURSIVE: bool = False
    SUFFIXES: tuple[str, ...] = IMAGE_SUFFIXES  # which files of the folders are listed

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                # PNG bytes rather than tfds.features.Image: that feature fixes the channel count and 8 bits
                "png": tfds.features.Tensor(shape=(), dtype=np.object_, doc=(
                    "Lossless PNG of the pixels vdsr_jax.media.read_image gives (1-4 channels, 8 or 16 bits, "
                    "upright); decode with vdsr_jax.media.decode_image.")),
                "name": tfds.features.Text(doc="File name without extension."),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        _tf_free_spill()
        try:
            root = dl_manager.manual_dir
        except AssertionError as e:  # TFDS's way of saying "missing or empty".
            raise DataError(f"{self.name}: {e}") from None
        files = [path for sub, count in self.FOLDERS.items() for path in self._images(root, sub, count)]
        return {self.SPLIT: self._generate_examples(root, files)}

    def _images(self, root, sub: str, count: int | None) -> list[Path]:
        """The images of `root/sub` (media.list_images rule); DataError if missing or off-count."""
        folder = Path(root) / sub if sub else Path(root)
        if not folder.is_dir():
            present = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
            raise DataError(f"{self.name}: no folder {folder}; sub-folders of {root}: {present}. "
                            f"{self.instructions()}")
        try:
            images = list_images([folder], recursive=self.RECURSIVE, suffixes=self.SUFFIXES)
        except ImageError:
            where = "under" if self.RECURSIVE else "directly in"
            raise DataError(f"{self.name}: no {'/'.join(s[1:] for s in self.SUFFIXES)} files {where} {folder}. "
                            f"{self.instructions()}") from None
        if count is not None and len(images) != count:
            raise DataError(f"{self.name}: found {len(images)} images in {folder}, expected {count}. "
                            f"{self.instructions()}")
        return images

    def instructions(self) -> str:
        """MANUAL_DOWNLOAD_INSTRUCTIONS on one line, for error messages."""
        return " ".join(textwrap.dedent(self.MANUAL_DOWNLOAD_INSTRUCTIONS).split())

    def _generate_examples(self, root, files: list[Path]) -> Iterator[tuple[str, dict]]:
        """One example per readable file. The rule for a damaged or unreadable file: skipped with a warning
        on stderr naming it, and the count reported at the end; DataError if none is readable."""
        skipped = []
        for path in files:
            try:
                pixels = read_image(path)
            except ImageError as e:
                skipped.append(path)
                print(f"warning: {self.name}: skipping unreadable image {e}", file=sys.stderr)
                continue
            yield path.relative_to(root).as_posix(), {"png": encode_image(pixels, "PNG"), "name": path.stem}
        if skipped:
            print(f"warning: {self.name}: skipped {len(skipped)} unreadable of {len(files)} images", file=sys.stderr)
        if len(skipped) == len(files):
            raise DataError(f"{self.name}: none of the {len(files)} images in {root} is readable")
