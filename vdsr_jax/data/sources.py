"""One entry point for images: a TFDS builder prepared (once) from a local folder, the image files of a folder
read as they are (`folder:PATH`), or scikit-image's bundled sample photos. tensorflow-datasets is imported (and the builders registered) only when a TFDS source
is loaded."""
import importlib.util
import os
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from vdsr_jax.errors import DataError, MissingDependency, known_names
from vdsr_jax.media import decode_image, list_images, read_image
from vdsr_jax.protocol import check_size

SKIMAGE_PREFIX = "skimage:"
FOLDER_PREFIX = "folder:"  # `folder:PATH`: the image files under PATH, read as they are (no TFDS)
DIRECT_PREFIXES = (SKIMAGE_PREFIX, FOLDER_PREFIX)  # sources named by the spec alone (no builder, no manual_dir)
# TFDS's div2k pairs LR with HR arrays; VDSR makes its own LR, so only `hr` is used.
_FOREIGN_IMAGE_KEYS = {"div2k": "hr"}
# The TFDS builders a source may name: this package's (registered in `_tfds`) and TFDS's own div2k.
BUILDERS = ("train291", "div2k_hr", "set5", "set14", "b100", "urban100")
BUILDER_FAMILIES = ("image_folder", "video_folder", "div2k")  # named `<family>/<config>`


def check_source(spec: str) -> None:
    """DataError naming the closest known names, before anything is read or prepared, for a `spec` that names
    no source: a builder outside BUILDERS and BUILDER_FAMILIES, or a scikit-image sample that does not exist.
    `folder:PATH` is checked when read."""
    if spec.startswith(SKIMAGE_PREFIX):
        _skimage_loaders(spec[len(SKIMAGE_PREFIX):])
    elif not spec.startswith(FOLDER_PREFIX) and spec not in BUILDERS and spec.split("/")[0] not in BUILDER_FAMILIES:
        known = [*BUILDERS, *(f"{family}/<name>" for family in BUILDER_FAMILIES), "skimage:NAMES", "folder:PATH"]
        raise DataError(f"no data source {spec!r}; {known_names(spec, known)}")


def load(name: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None,
         split: str | None = None):
    """Prepares builder `name` into `data_dir` if needed, then returns its random-access data source.

    `tfds.data_source` with array_record storage and a `manual_dir`: `train291`, `set5`, `set14`, `b100`,
    `urban100`, `div2k_hr`, `image_folder/<name>`, `video_folder/<name>[_every<N>]` build from local folders (see
    each builder's
    MANUAL_DOWNLOAD_INSTRUCTIONS; without `manual_dir` TFDS looks in `<data_dir>/downloads/manual`);
    `div2k/<config>` is TFDS's own builder, which downloads several GB and needs TensorFlow to prepare.
    `split=None` picks the dataset's only split, or `train`. Once prepared, the data is reused and
    `manual_dir` is no longer needed. DataError for a missing or malformed folder; MissingDependency where
    tensorflow-datasets or array_record is not installed.
    """
    tfds = _tfds(name)
    from vdsr_jax.data.folder_builder import FolderBuilder

    builder = tfds.builder(name, data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if name.split("/")[0] == "div2k" and not builder.is_prepared() and importlib.util.find_spec("tensorflow") is None:
        raise DataError(
            f"Preparing TFDS's {name} needs TensorFlow (its download extractor and example generator use "
            "tf.io.gfile); install tensorflow-cpu for the one-off preparation, or use the TF-free div2k_hr "
            "builder with manual_dir=<the folder holding the unzipped DIV2K_train_HR/>. Reading never needs TF."
        )
    if not builder.is_prepared() and isinstance(builder, FolderBuilder) and manual_dir is None:
        default = Path(builder.data_dir_root) / "downloads" / "manual"  # where TFDS would look
        if not default.is_dir():
            raise DataError(f"{name} is not prepared in {data_dir}, and no folder to build it from was given "
                            f"(manual_dir; in a config train_manual_dir or the eval set's folder). "
                            f"{builder.instructions()}")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    if split is None:
        splits = list(builder.info.splits)
        split = splits[0] if len(splits) == 1 else "train"
    return builder.as_data_source(split=split)


_TFDS_STACK = ("tensorflow_datasets", "array_record")


def _tfds(name: str):
    """The tensorflow_datasets module, with this package's builders registered (importing their modules does
    it); MissingDependency naming source `name` where TFDS or its array_record storage is not installed."""
    try:
        import array_record  # noqa: F401 - the storage TFDS reads and writes here; checked up front
        import tensorflow_datasets as tfds

        from vdsr_jax.data import benchmarks, div2k, image_folder, train291, video_folder  # noqa: F401
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] not in _TFDS_STACK:
            raise
        raise MissingDependency(f"{name} is a TFDS source, which needs tensorflow-datasets and array_record "
                                f"({e.name} is not installed): pip install tensorflow-datasets array_record") from None
    return tfds


def _skimage_loaders(names: str) -> list:
    """(name, loader) of each of scikit-image's sample images `names` ("astronaut,camera"); DataError naming
    the closest samples for a name that is none."""
    from skimage import data

    loaders = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        loader = getattr(data, name, None)
        if loader is None or name.startswith("_"):
            raise DataError(f"skimage.data has no sample image {name!r}; {known_names(name, data.__all__)}")
        loaders.append((name, loader))
    return loaders


def skimage_images(names: str) -> list[np.ndarray]:
    """scikit-image's bundled sample photos (`"astronaut,camera"`) as H×W×C uint8: data without a download.
    DataError for an unknown name or a sample that is not an 8-bit image."""
    images = []
    for name, loader in _skimage_loaders(names):
        image = np.asarray(loader())
        if image.dtype != np.uint8:
            raise DataError(f"skimage.data.{name} is {image.dtype}, not an 8-bit image")
        images.append(image[..., None] if image.ndim == 2 else image)
    return images


class _Files(Sequence):
    """Image files read on access (`vdsr_jax.media.read_image`)."""

    def __init__(self, paths: list[Path]):
        self._paths = paths

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return read_image(self._paths[i])


class ImageStore:
    """Random access to HR images (H×W×C uint8/uint16, `vdsr_jax.media.images` conventions) without holding
    them: `len(store)`, `store[i]` (decodes image i), `store.shape(i)`.

    Backed by a list of arrays or by a TFDS data source (`load`), whose examples hold a PNG (the folder
    builders) or, for TFDS's own div2k, a decoded `hr` array.
    """

    def __init__(self, images: Sequence[np.ndarray] | None = None, source=None, key: str = "png"):
        self._images, self._source, self._key = images, source, key

    def __len__(self) -> int:
        return len(self._images) if self._images is not None else len(self._source)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._images is not None:
            return self._images[i]
        example = self._source[int(i)]
        if self._key != "png":
            return example[self._key]
        return decode_image(example["png"], name=example["name"].decode())

    def shape(self, i: int) -> tuple[int, int]:
        """(H, W) of image i; read from the PNG header (no decoding) where the examples hold PNGs."""
        if self._images is not None or self._key != "png":
            return tuple(self[i].shape[:2])
        png = self._source[int(i)]["png"]
        return int.from_bytes(png[20:24], "big"), int.from_bytes(png[16:20], "big")


def image_store(spec: str, data_dir: str | os.PathLike = "~/tensorflow_datasets",
                manual_dir: str | os.PathLike | None = None, split: str | None = None) -> ImageStore:
    """The images of `spec` (`skimage:NAMES`; `folder:PATH`, the image files under PATH at any depth in
    path order, e.g. 8-bit grey PNGs holding a training Y; or a builder name prepared from `manual_dir`, see
    `load`), read on demand. DataError for an unknown or unusable source (`check_source`)."""
    check_source(spec)
    if spec.startswith(SKIMAGE_PREFIX):
        return ImageStore(images=skimage_images(spec[len(SKIMAGE_PREFIX):]))
    if spec.startswith(FOLDER_PREFIX):
        folder = Path(spec[len(FOLDER_PREFIX):]).expanduser()
        if not folder.is_dir():
            raise DataError(f"{spec}: {folder} is not a folder")
        return ImageStore(images=_Files(list_images([folder], recursive=True)))
    return ImageStore(source=load(spec, data_dir, manual_dir or None, split),
                      key=_FOREIGN_IMAGE_KEYS.get(spec.split("/")[0], "png"))


def load_folder(directory, scales) -> list[np.ndarray]:
    """The HR images of an evaluation folder (`vdsr_jax.media.list_images` rule), all read up front, as
    H×W×C uint8/uint16 arrays. DataError if the folder is missing or an image is too small to evaluate at one
    of `scales` (`protocol.check_size`); ImageError for a file that cannot be read."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data folder {directory} does not exist" if not directory.exists()
                        else f"{directory} is a file, not a folder of images")
    images = []
    for path in list_images([directory]):
        pixels = read_image(path)
        for scale in scales:
            try:
                check_size(pixels.shape, scale)
            except ValueError as e:
                raise DataError(f"{path}: {e}") from None
        images.append(pixels)
    return images


def read_shapes(store: ImageStore) -> np.ndarray:
    """(N, 2) int64 image shapes (H, W); with several processes each reads its share of them
    (i ≡ `jax.process_index()` mod `jax.process_count()`) and the shares are exchanged."""
    count, rank, n = len(store), jax.process_index(), jax.process_count()
    shapes = np.zeros((count, 2), np.int64)
    for i in range(rank, count, n):
        shapes[i] = store.shape(i)
    if n > 1:
        from jax.experimental import multihost_utils

        shapes = np.asarray(multihost_utils.process_allgather(shapes)).sum(axis=0)
    return shapes


def load_images(spec: str, data_dir: str | os.PathLike = "~/tensorflow_datasets",
                manual_dir: str | os.PathLike | None = None, split: str | None = None) -> list[np.ndarray]:
    """All images of `spec` as H×W×C uint8/uint16 arrays (`vdsr_jax.media.images` conventions), in order
    (`image_store` read whole). DataError for an unknown or unusable source.
    """
    store = image_store(spec, data_dir, manual_dir, split)
    return [store[i] for i in range(len(store))]
