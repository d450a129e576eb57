"""Labelled comparison images (bicubic | VDSR | HR) for `upscale --compare` and training's `images/`."""
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vdsr_jax.color import quantize


def side_by_side(images, labels) -> np.ndarray:
    """8-bit H'×W'×3 RGB image of equal-size images (H×W×C uint8/uint16, C = 1 to 4; alpha is dropped,
    grey shown as grey) next to each other, each under a white strip with its label."""
    font_size = max(12, images[0].shape[1] // 25)
    strip = font_size * 3 // 2
    panels = []
    for pixels, label in zip(images, labels, strict=True):
        rgb = pixels[..., :3] if pixels.shape[-1] >= 3 else np.repeat(pixels[..., :1], 3, axis=-1)
        if rgb.dtype == np.uint16:
            rgb = quantize(rgb / 65535, np.uint8)
        panel = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + strip), "white")
        panel.paste(Image.fromarray(rgb), (0, strip))
        ImageDraw.Draw(panel).text((font_size // 2, font_size // 4), label, fill="black",
                                   font=ImageFont.load_default(size=font_size))
        panels.append(np.asarray(panel))
    gap = np.full((panels[0].shape[0], max(2, font_size // 4), 3), 255, np.uint8)
    pieces = [piece for panel in panels for piece in (gap, panel)][1:]
    return np.concatenate(pieces, axis=1)
