"""Checks that a PNG is a real picture: it decodes, has a sensible size, and is not blank."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def assert_picture(png: str | Path | bytes, min_width: int = 100, min_height: int = 80, min_colours: int = 8) -> None:
    data = png if isinstance(png, bytes) else Path(png).read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG", image.format
        image.load()  # a truncated file fails here
        pixels = np.asarray(image.convert("RGB"))
    height, width, _ = pixels.shape
    assert width >= min_width and height >= min_height, f"{width} x {height} pixels"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours >= min_colours, f"only {colours} colour(s): a blank picture"
