"""Images for training and evaluation, and the training patches drawn from them.

`load_images(spec, data_dir, manual_dir)` is the one entry (`sources.image_store` the same, read on
demand): `skimage:NAMES` or a TFDS builder prepared from a local folder and read through `tfds.data_source`
(no TensorFlow). Importing this package registers the
builders `train291`, `div2k_hr`, `set5`, `set14`, `b100`, `urban100`, `image_folder` and `video_folder` with TFDS.
`patches` turns
images into the training pairs sampled on the device.
"""

from vdsr_jax.data.benchmarks import B100, Set5, Set14, Urban100
from vdsr_jax.data.div2k import Div2kHr
from vdsr_jax.data.image_folder import ImageFolder
from vdsr_jax.data.sources import SKIMAGE_PREFIX, load, load_images
from vdsr_jax.data.train291 import Train291
from vdsr_jax.data.video_folder import VideoFolder

__all__ = ["B100", "Div2kHr", "ImageFolder", "SKIMAGE_PREFIX", "Set5", "Set14", "Train291", "Urban100", "VideoFolder",
           "load", "load_images"]
