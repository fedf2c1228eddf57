"""Snapshots: a decoded frame at its full resolution as a JPEG, a person's box drawn and labelled on it.

Pillow encodes (libjpeg-turbo, a few milliseconds for 1080p); the callers run this in worker threads, never on the
event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache

import av
from PIL import Image, ImageDraw, ImageFont

BOX_COLOUR = (255, 64, 32)
TEXT_COLOUR = (255, 255, 255)


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def draw_box(image: Image.Image, box: Sequence[float], caption: str) -> None:
    """Draws ``box`` (x1, y1, x2, y2 normalised to [0, 1]) on ``image`` with ``caption`` above it (inside the
    image)."""
    w, h = image.size
    x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in box)
    rect = (round(x1 * (w - 1)), round(y1 * (h - 1)), round(x2 * (w - 1)), round(y2 * (h - 1)))
    line = max(2, round(min(w, h) / 240))
    draw = ImageDraw.Draw(image)
    draw.rectangle(rect, outline=BOX_COLOUR, width=line)
    font = _font(max(12, round(h / 36)))
    left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
    tw, th = right - left + 2 * line, bottom - top + 2 * line
    tx = min(max(rect[0], 0), max(w - tw, 0))
    ty = rect[1] - th if rect[1] - th >= 0 else min(rect[1] + line, max(h - th, 0))
    draw.rectangle((tx, ty, tx + tw, ty + th), fill=BOX_COLOUR)
    draw.text((tx + line - left, ty + line - top), caption, fill=TEXT_COLOUR, font=font)


def encode_jpeg(
    frame: av.VideoFrame, *, quality: int = 85, box: Sequence[float] | None = None, caption: str = ""
) -> bytes:
    """The frame as a JPEG at its own resolution; with ``box``, the box and ``caption`` drawn on it."""
    image = frame.to_image()
    return image_jpeg(image, quality=quality, box=box, caption=caption)


def image_jpeg(
    image: Image.Image, *, quality: int = 85, box: Sequence[float] | None = None, caption: str = ""
) -> bytes:
    if image.mode != "RGB":
        image = image.convert("RGB")
    if box is not None:
        draw_box(image, box, caption)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
