"""Base TFDS builder for datasets that are folders of images on the local disk.

Concrete builders only declare their name, description, split and which
sub-folders of `manual_dir` hold how many images; preparing, the feature spec
and error messages live here once.
"""

import itertools
import textwrap
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from vdsr_jax.datasets.images import IMAGE_SUFFIXES, encode_png, read_rgb8


def _is_image(relative: epath.Path) -> bool:
    """Image suffix, and nothing hidden on the way (e.g. macOS `._x.png`, `.thumbnails/`)."""
    return relative.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in relative.parts)


class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Turns folders under `manual_dir` into one split of `{image, name}` examples.

    Examples are written in generation order (shuffling disabled): folders in
    `FOLDERS` order, files sorted by relative path like MATLAB's `dir`, keyed by
    their path relative to `manual_dir`. Storage defaults to array_record so
    `tfds.data_source` can read it without TensorFlow.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    DESCRIPTION: str = ""
    SPLIT: str = "test"
    # Sub-folder of manual_dir ("" = manual_dir itself) -> exact image count, or None for any.
    FOLDERS: Mapping[str, int | None] = {}
    RECURSIVE: bool = False

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(
                    shape=(None, None, 3),
                    dtype=np.uint8,
                    encoding_format="png",
                    doc="uint8 RGB; grayscale as 3 equal channels, alpha dropped, 16-bit reduced to its high byte.",
                ),
                "name": tfds.features.Text(doc="File name without extension."),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        try:
            root = dl_manager.manual_dir
        except AssertionError as e:  # TFDS's way of saying "missing or empty".
            raise FileNotFoundError(f"{self.name}: {e}") from e
        files = [path for sub, count in self.FOLDERS.items() for path in self._images(root, sub, count)]
        return {self.SPLIT: self._generate_examples(root, files)}

    def _images(self, root: epath.Path, sub: str, count: int | None) -> list[epath.Path]:
        """The images of `root/sub`, sorted; raises if the folder is missing or off-count."""
        folder = root / sub if sub else root
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"{self.name}: no folder {folder}; sub-folders of {root}: {present}.\n{self._instructions()}"
            )
        levels = folder.walk() if self.RECURSIVE else itertools.islice(folder.walk(), 1)
        files = (directory / name for directory, _, names in levels for name in names)
        images = sorted(
            (p for p in files if _is_image(p.relative_to(folder))), key=lambda p: p.relative_to(folder).as_posix()
        )
        if not images:
            where = "under" if self.RECURSIVE else "directly in"
            raise FileNotFoundError(
                f"{self.name}: no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images {where} {folder}.\n"
                f"{self._instructions()}"
            )
        if count is not None and len(images) != count:
            raise ValueError(
                f"{self.name}: found {len(images)} images in {folder}, expected {count}.\n{self._instructions()}"
            )
        return images

    def _instructions(self) -> str:
        return textwrap.dedent(self.MANUAL_DOWNLOAD_INSTRUCTIONS).strip()

    def _generate_examples(self, root: epath.Path, files: list[epath.Path]) -> Iterator[tuple[str, dict]]:
        for path in files:
            yield path.relative_to(root).as_posix(), {"image": encode_png(read_rgb8(path)), "name": path.stem}
