"""`video_folder`: training frames sampled from a folder of video files.

`video_folder/<name>` takes every 10th frame (frames 0, 10, 20, … of each clip); `video_folder/<name>_every<N>`
every N-th (`_every1`: all). Videos (.mp4, .mkv, .avi, .mov, .webm) are found recursively under manual_dir,
sorted by path, hidden names skipped; each sampled frame is one example, stored as a lossless PNG of its
8-bit RGB (or grey) pixels like the image builders, named `<clip>_<frame index>`. Example, for the
Weizmann "SpaceTimeActions" clips (180×144 AVI files such as daria_walk.avi) unpacked in data/weizmann:

    python -m vdsr_jax.train --config x2 --config.train_data=video_folder/weizmann_every5 \\
        --config.train_manual_dir=data/weizmann --workdir runs/weizmann
"""

import dataclasses
import functools
import re

import tensorflow_datasets as tfds

from vdsr_jax.data.folder_builder import FolderBuilder
from vdsr_jax.errors import DataError
from vdsr_jax.media import VIDEO_SUFFIXES, encode_image, iter_frames

DEFAULT_FRAME_STEP = 10


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
    frame_step: int = DEFAULT_FRAME_STEP


@functools.cache
def _named_config(name: str) -> VideoFolderConfig:
    match = re.fullmatch(r"(.+?)(?:_every(\d+))?", name)
    step = int(match.group(2)) if match.group(2) else DEFAULT_FRAME_STEP
    if step < 1:
        raise DataError(f"video_folder/{name}: the frame step must be at least 1")
    return VideoFolderConfig(name=name, frame_step=step,
                             description=f"Every {step}th frame of the videos prepared as {name!r}.")


class VideoFolder(FolderBuilder):
    """Every `frame_step`-th frame of every video under `manual_dir`; see the module docstring."""

    DESCRIPTION = "Frames sampled from the user's own videos (mp4/mkv/avi/mov/webm), found recursively."
    SPLIT = "train"
    FOLDERS = {"": None}
    RECURSIVE = True
    SUFFIXES = VIDEO_SUFFIXES
    BUILDER_CONFIGS = [_named_config("default")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    manual_dir is the folder of video files itself (mp4/mkv/avi/mov/webm; sub-folders are searched too,
    names starting with '.' are skipped). Name each folder with the config: video_folder/<name>, or
    video_folder/<name>_every<N> to take every N-th frame (default every 10th).
    """

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig:
        """Any config name is valid: it names the folder's prepared copy and may end in `_every<N>`."""
        return super().get_builder_config(name, version) or _named_config(name)

    def _generate_examples(self, root, files):
        step = self.builder_config.frame_step
        for path in files:
            for index, pixels in iter_frames(path, step):
                yield f"{path.relative_to(root).as_posix()}#{index}", {
                    "png": encode_image(pixels, "PNG"), "name": f"{path.stem}_{index:06d}"}
