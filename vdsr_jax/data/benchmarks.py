"""The standard super-resolution test sets: `set5`, `set14`, `b100`, `urban100`.

Each expects its ground-truth (HR) images directly inside a folder of the same
name in `manual_dir`, so one manual_dir can hold all four side by side.
"""

from vdsr_jax.data.folder_builder import FolderBuilder

_INSTRUCTIONS = """
    manual_dir must contain a folder {folder}/ with the {count} ground-truth (HR)
    images directly inside (png/jpg/jpeg/bmp/tif/tiff/webp), no LR copies.
    Example: manual_dir=shared/data/benchmarks (holding Set5/, Set14/, ...)
    """


class Set5(FolderBuilder):
    """Set5 (Bevilacqua et al., BMVC 2012)."""

    DESCRIPTION = "Set5: 5 test images (Bevilacqua et al., 2012)."
    FOLDERS = {"Set5": 5}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(folder="Set5", count=5)


class Set14(FolderBuilder):
    """Set14 (Zeyde et al., 2010); bridge.png is grayscale."""

    DESCRIPTION = "Set14: 14 test images (Zeyde et al., 2010)."
    FOLDERS = {"Set14": 14}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(folder="Set14", count=14)


class B100(FolderBuilder):
    """B100, a.k.a. BSD100: the 100 BSD300 test images."""

    DESCRIPTION = "B100 (BSD100): the 100 test images of BSD300 (Martin et al., 2001)."
    FOLDERS = {"B100": 100}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(folder="B100", count=100)


class Urban100(FolderBuilder):
    """Urban100 (Huang et al., CVPR 2015)."""

    DESCRIPTION = "Urban100: 100 urban scenes (Huang et al., 2015)."
    FOLDERS = {"Urban100": 100}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS.format(folder="Urban100", count=100)
