"""Image grids: uint8 images tiled into one picture, optionally captioned, written as PNG (numpy and PIL only).

:func:`grid_shape` is checked before any sampling, so a grid too large to write is refused at once;
:func:`grid_upscale` enlarges tiny images so that they stay visible.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ditscale.errors import ConfigError
from ditscale.io import atomic_path

# The largest grid written, in pixels (an 805 MB RGB array): image viewers and PNG encoders give up beyond.
MAX_GRID_PIXELS = 1 << 28


# Height in pixels of the caption band under each cell of a labelled grid (PIL's default bitmap font is 11 px).
CAPTION_PX = 12
MIN_SHOWN_PX = 64  # grid_upscale's default enlarges small images to at least this side


def grid_upscale(upscale: int | None, h: int, w: int) -> int:
    """``upscale``, else the smallest factor that shows images of ``h x w`` pixels at least
    :data:`MIN_SHOWN_PX` wide (4 for 16 px images, 1 from 64 px)."""
    return upscale if upscale is not None else max(1, math.ceil(MIN_SHOWN_PX / min(h, w)))


def grid_shape(
    n: int, h: int, w: int, nrow: int | None = None, padding: int = 2, upscale: int = 1, caption_px: int = 0
) -> tuple[int, int]:
    """``(height, width)`` in pixels of the grid of ``n`` images of ``h x w`` (see :func:`make_grid`);
    a one-line :class:`ConfigError` when it exceeds :data:`MAX_GRID_PIXELS` (checked before any work)."""
    cols = _columns(n, nrow)
    rows = math.ceil(n / cols)
    height = rows * (h * upscale + caption_px + padding) + padding
    width = cols * (w * upscale + padding) + padding
    if height * width > MAX_GRID_PIXELS:
        raise ConfigError(
            f"a grid of {n} images of {h * upscale}x{w * upscale} px would be {width}x{height} px "
            f"({height * width * 3 / 1e9:.1f} GB); lower --upscale or the number of images"
        )
    return height, width


def _columns(n: int, nrow: int | None) -> int:
    """Images per row of a grid of ``n``: ``nrow``, by default ``ceil(sqrt(n))``, never more than ``n``."""
    return min(n, nrow or math.ceil(math.sqrt(n)))


def _cells(n: int, h: int, w: int, nrow: int | None, padding: int, caption_px: int) -> list[tuple[int, int]]:
    """``(top, left)`` of each of ``n`` cells of ``h x w`` pixels (a caption band of ``caption_px`` under each)."""
    cols = _columns(n, nrow)
    return [
        (padding + (i // cols) * (h + caption_px + padding), padding + (i % cols) * (w + padding)) for i in range(n)
    ]


def make_grid(
    images: np.ndarray, nrow: int | None = None, padding: int = 2, upscale: int = 1, caption_px: int = 0
) -> np.ndarray:
    """Tile uint8 images ``(N, H, W, 3)`` into one ``(rows*(H+c+p)+p, cols*(W+p)+p, 3)`` array.

    ``nrow`` images per row (default ``ceil(sqrt(N))``), black ``padding`` pixels between and around
    them, as ``torchvision.utils.make_grid``. ``upscale`` > 1 first enlarges every image that many
    times by pixel repetition (nearest neighbour), so tiny images stay visible (H, W are then the
    enlarged sizes; the padding is not scaled). ``caption_px`` leaves a black band of that height
    under each image for its caption (:func:`save_grid` writes it).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) == 0:
        raise ConfigError(f"expected a non-empty uint8 array (N, H, W, 3), got {images.dtype} {images.shape}")
    if int(upscale) != upscale or upscale < 1:
        raise ConfigError(f"upscale must be a positive integer, got {upscale}")
    height, width = grid_shape(len(images), images.shape[1], images.shape[2], nrow, padding, upscale, caption_px)
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, h, w, _ = images.shape
    grid = np.zeros((height, width, 3), dtype=np.uint8)
    for img, (top, left) in zip(images, _cells(n, h, w, nrow, padding, caption_px)):
        grid[top : top + h, left : left + w] = img
    return grid


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    """``text``, cut with "..." until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def save_grid(
    images: np.ndarray,
    path: str | Path,
    nrow: int | None = None,
    padding: int = 2,
    upscale: int = 1,
    captions: Sequence[str] | None = None,
) -> Path:
    """Write uint8 images ``(N, H, W, 3)`` as one image grid (see :func:`make_grid`), atomically;
    with ``captions`` (one per image: its class name or prompt) each cell is labelled underneath,
    cut to the cell's width. The format follows the suffix (PNG when unknown or missing). Returns the path."""
    path = Path(path)
    if captions is not None and len(captions) != len(images):
        raise ConfigError(f"{len(captions)} captions for {len(images)} images; give one per image")
    caption_px = CAPTION_PX if captions is not None else 0
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    grid = Image.fromarray(make_grid(images, nrow, padding, upscale, caption_px))
    if captions is not None:
        draw, font = ImageDraw.Draw(grid), ImageFont.load_default()
        h, w = images.shape[1] * upscale, images.shape[2] * upscale
        for text, (top, left) in zip(captions, _cells(len(images), h, w, nrow, padding, caption_px)):
            draw.text((left + 1, top + h), _fit_text(draw, str(text), w - 2, font), fill=(255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        grid.save(tmp, format=fmt)
    return path
