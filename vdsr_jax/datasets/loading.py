"""One entry point to prepare (once) and open any dataset as a random-access TFDS data source."""

import importlib.util
import os

import numpy as np
import tensorflow_datasets as tfds

# Builders whose image sits under another key; TFDS's div2k pairs LR with HR,
# but VDSR makes its own LR, so only `hr` is used.
_IMAGE_KEYS = {"div2k": "hr"}


def load(name: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None,
         split: str | None = None):
    """Prepares `name` into `data_dir` if needed, then returns its data source.

    This is `tfds.data_source` with array_record storage and a `manual_dir`:
    `train291`, `set5`, `set14`, `b100`, `urban100`, `image_folder/<name>` build
    from local folders (see each builder's MANUAL_DOWNLOAD_INSTRUCTIONS; without
    `manual_dir` TFDS looks in `<data_dir>/downloads/manual`). `div2k/<config>`
    (e.g. `div2k/bicubic_x2`) is TFDS's own builder: it downloads several GB
    and its preparation needs TensorFlow.
    `split=None` picks the dataset's only split, or `train`. Once prepared,
    the data is reused and `manual_dir` is no longer needed. Examples are
    dicts of NumPy values: `image` uint8 H×W×3 and `name` as bytes.
    """
    builder = tfds.builder(name, data_dir=os.path.expanduser(data_dir), file_format="array_record")
    if name.split("/")[0] == "div2k" and not builder.is_prepared() and importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            f"Preparing TFDS's {name} needs TensorFlow (its download extractor and example generator use "
            "tf.io.gfile); install tensorflow-cpu for the one-off preparation, or unzip DIV2K_train_HR yourself "
            "and load it TF-free as image_folder/div2k with manual_dir=<that folder>. Reading never needs TF."
        )
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    if split is None:
        splits = list(builder.info.splits)
        split = splits[0] if len(splits) == 1 else "train"
    return builder.as_data_source(split=split)


def load_images(name: str, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None,
                split: str | None = None) -> list[np.ndarray]:
    """All images of a split as uint8 H×W×3 arrays, in the dataset's order (see `load`)."""
    source = load(name, data_dir, manual_dir, split)
    key = _IMAGE_KEYS.get(name.split("/")[0], "image")
    return [example[key] for example in source.__getitems__(range(len(source)))]
