"""`train291`: VDSR's training set, Yang et al.'s 91 images plus 200 BSD300 train images."""

from vdsr_jax.data.folder_builder import FolderBuilder


class Train291(FolderBuilder):
    """The 291 images VDSR (Kim et al., CVPR 2016) trains on."""

    DESCRIPTION = "T91 (Yang et al., 2010) + BSD200 (Martin et al., 2001): the 291 training images of VDSR."
    SPLIT = "train"
    FOLDERS = {"T91": 91, "BSD200": 200}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir must contain two folders with the images directly inside:
      T91/     the 91 images of Yang et al. (t1.bmp ... t99.bmp),
      BSD200/  the 200 BSD300 training images (100075.png ...).
    Example: manual_dir=shared/data/train291
    """
