"""Image, animation and video files: everything the package reads from or writes to disk as pictures.

`images`: still images (listing folders, decoding, encoding, atomic writes, the policy for outputs that
exist). Frame files, read and written one frame at a time behind one interface (`frames.FrameReader`,
`frames.FrameWriter`): `video` (PyAV: timing, display and colour description kept, other streams copied,
converted or refused) and `animation` (animated GIF, WebP and PNG, multi-page TIFF); `frame_files` picks the
reader and writer for a path and streams a file through (`transcode`). `bmp`, `gif` and `mp4` read and write
the ICC profile where Pillow and FFmpeg do not. PyAV is imported only when a video is read or written, or a
GIF or APNG written.
"""

from vdsr_jax.media.frame_files import frame_summary, is_frame_file, iter_frames, open_frames, transcode
from vdsr_jax.media.frames import ANIMATION_SUFFIXES, FRAME_SUFFIXES, VIDEO_SUFFIXES, Frame, FrameReader, FrameWriter
from vdsr_jax.media.images import (EXIF_ORIENTATION, IMAGE_SUFFIXES, ImageMetadata, atomic_output, check_encodable,
                                   check_writable, decode_image, decode_image_and_metadata, encode_image, list_images,
                                   metadata_note, read_image, read_image_and_metadata, refuse_existing, write_image)
from vdsr_jax.media.video import check_crf

__all__ = ["ANIMATION_SUFFIXES", "EXIF_ORIENTATION", "FRAME_SUFFIXES", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES",
           "Frame", "FrameReader", "FrameWriter", "ImageMetadata", "atomic_output", "check_crf", "check_encodable",
           "check_writable", "decode_image", "decode_image_and_metadata", "encode_image", "frame_summary",
           "is_frame_file", "iter_frames", "list_images", "metadata_note", "open_frames", "read_image",
           "read_image_and_metadata", "refuse_existing", "transcode", "write_image"]
