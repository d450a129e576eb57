"""The standard super-resolution test sets: `set5`, `set14`, `b100`, `urban100`.

Each expects its ground-truth (HR) images directly inside a folder of the same name in `manual_dir`, so one
manual_dir can hold all four side by side.
"""

from vdsr_jax.data.folder_builder import FolderBuilder

_INSTRUCTIONS = """
    manual_dir must contain a folder {folder}/ with the {count} ground-truth (HR)
    images directly inside (png/jpg/jpeg/bmp/tif/tiff/webp), no LR copies.
    Example: manual_dir=shared/data/benchmarks (holding Set5/, Set14/, ...)
    """


def _benchmark(folder: str, count: int, description: str) -> type[FolderBuilder]:
    """A TFDS builder class named `folder` (registered as its snake_case name) for `count` HR images."""
    return type(folder, (FolderBuilder,), {
        "__doc__": description, "__module__": __name__, "DESCRIPTION": description,
        "FOLDERS": {folder: count},
        "MANUAL_DOWNLOAD_INSTRUCTIONS": _INSTRUCTIONS.format(folder=folder, count=count),
    })


Set5 = _benchmark("Set5", 5, "Set5: 5 test images (Bevilacqua et al., BMVC 2012).")
Set14 = _benchmark("Set14", 14, "Set14: 14 test images (Zeyde et al., 2010); bridge.png is grey.")
B100 = _benchmark("B100", 100, "B100 (BSD100): the 100 test images of BSD300 (Martin et al., 2001).")
Urban100 = _benchmark("Urban100", 100, "Urban100: 100 urban scenes (Huang et al., CVPR 2015).")
