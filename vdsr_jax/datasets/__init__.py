"""Datasets as TFDS builders over local image folders, read through `tfds.data_source` (no TensorFlow).

Importing this package registers `train291`, `set5`, `set14`, `b100`,
`urban100` and `image_folder` with TFDS, so `tfds.data_source(name, ...)`
finds them once prepared.
"""

from vdsr_jax.datasets.benchmarks import B100, Set5, Set14, Urban100
from vdsr_jax.datasets.image_folder import ImageFolder
from vdsr_jax.datasets.loading import load, load_images
from vdsr_jax.datasets.train291 import Train291

__all__ = ["B100", "ImageFolder", "Set5", "Set14", "Train291", "Urban100", "load", "load_images"]
