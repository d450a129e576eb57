"""Images for training and evaluation, and the training patches drawn from them.

`load_images(spec, data_dir, manual_dir)` is the one entry (`sources.image_store` the same, read on
demand): `skimage:NAMES` or a TFDS builder prepared from a local folder and read through `tfds.data_source`
(no TensorFlow). The builders `train291`, `div2k_hr`, `set5`, `set14`, `b100`, `urban100`, `image_folder` and
`video_folder` are registered with TFDS when a TFDS source is first loaded (`sources.load`), so nothing here
needs tensorflow-datasets until then. `load_folder(directory, scales)` reads an evaluation folder as the
`evaluate` command does. `patches` turns images into the training pairs sampled on the device.
"""

from vdsr_jax.data.sources import SKIMAGE_PREFIX, load, load_folder, load_images

__all__ = ["SKIMAGE_PREFIX", "load", "load_folder", "load_images"]
