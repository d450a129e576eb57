"""`image_folder`: a dataset from any folder tree of the user's own images."""

import functools

import tensorflow_datasets as tfds

from vdsr_jax.data.folder_builder import FolderBuilder


@functools.cache
def _named_config(name: str) -> tfds.core.BuilderConfig:
    # Cached so TFDS sees the same object for the same name on every lookup.
    return tfds.core.BuilderConfig(name=name, description=f"Images of the folder prepared as {name!r}.")


class ImageFolder(FolderBuilder):
    """Every image under `manual_dir`, recursively; the config name tells folders apart.

    `image_folder/<name>` accepts any name, so several folders can be prepared
    side by side in one data_dir (stored under `image_folder/<name>/`).
    The folder is read once: to pick up changed files, use a new name or
    delete `<data_dir>/image_folder/<name>`.
    """

    DESCRIPTION = "The user's own images (png/jpg/jpeg/bmp/tif/tiff/webp), found recursively."
    SPLIT = "train"
    FOLDERS = {"": None}
    RECURSIVE = True
    BUILDER_CONFIGS = [_named_config("default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir is the folder of images itself; sub-folders are searched too
    (png/jpg/jpeg/bmp/tif/tiff/webp; names starting with '.' are skipped).
    Name each folder with the config: image_folder/<name>.
    """

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig:
        """Any config name is valid: it only names the folder's prepared copy."""
        return super().get_builder_config(name, version) or _named_config(name)
