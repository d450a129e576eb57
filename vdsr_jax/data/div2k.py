"""`div2k_hr`: DIV2K's HR images from the folders users download, prepared without TensorFlow.

TFDS's own `div2k` downloads the archives and needs TensorFlow to prepare; this builder reads the unzipped
`DIV2K_train_HR/` (800 PNGs, about 2040×1356) and, when present, `DIV2K_valid_HR/` (100) from `manual_dir`.
VDSR makes its own LR images, so the LR folders are not needed. Any count is accepted (subsets, stand-ins).
"""
from pathlib import Path

from vdsr_jax.data.folder_builder import FolderBuilder

TRAIN_FOLDER, VALID_FOLDER = "DIV2K_train_HR", "DIV2K_valid_HR"


class Div2kHr(FolderBuilder):
    """DIV2K (Agustsson & Timofte, CVPR-W 2017) HR images: split `train`, and `validation` if present."""

    DESCRIPTION = "DIV2K HR images (800 train, 100 validation), from the unzipped DIV2K_{train,valid}_HR folders."
    SPLIT = "train"
    FOLDERS = {TRAIN_FOLDER: None}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    manual_dir must contain {TRAIN_FOLDER}/ (the unzipped DIV2K_train_HR.zip: 0001.png ... 0800.png) and
    optionally {VALID_FOLDER}/ (0801.png ... 0900.png), from https://data.vision.ee.ethz.ch/cvl/DIV2K/
    """

    def _split_generators(self, dl_manager):
        splits = super()._split_generators(dl_manager)
        root = Path(dl_manager.manual_dir)
        if (root / VALID_FOLDER).is_dir():
            splits["validation"] = self._generate_examples(root, self._images(root, VALID_FOLDER, None))
        return splits
