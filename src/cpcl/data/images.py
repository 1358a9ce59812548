"""Decoded images as the models take them: 8-bit RGB from whatever mode Pillow opens (no torch here: the image
check decodes in worker processes)."""

from __future__ import annotations

import numpy as np
from PIL import Image

# greyscale modes deeper than 8 bits, and their full scale: Pillow's convert("RGB") clips them at 255, which turns
# a 16-bit picture white
_DEEP_GREY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": None, "F": None}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any image Pillow opens, as 8-bit RGB. 16-bit greyscale (``I;16*``) is scaled from 0-65535; 32-bit integer
    (``I``) and float (``F``) greyscale from their own range: 0-255 when the values fit in it (8-bit data
    widened), 0-65535 when they fit in that (16-bit PNGs that Pillow opens as ``I``), else their maximum; float
    values within 0-1 are scaled from 0-1. Alpha is dropped (as CLIP's preprocessing does); every other mode
    (1, L, P, CMYK, YCbCr, LAB, ...) is Pillow's own conversion."""
    if image.mode not in _DEEP_GREY:
        return image.convert("RGB")
    values = np.asarray(image, dtype=np.float64)
    top = _DEEP_GREY[image.mode]
    if top is None:
        peak = float(values.max(initial=0.0))
        top = 1.0 if image.mode == "F" and peak <= 1.0 else 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    grey = np.clip(np.round(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")
