"""``actionstream infer --annotate``: re-encode a video with the current top labels drawn on each frame, for
person models each person's box with their top actions, and what the model sees (:class:`Overlays`): the region
outlined with the rest dimmed, the mask filled grey and hatched, each zone outlined and named.

Text uses a built-in 5x7 bitmap font (upper-case letters, digits, a few signs), so the agent needs no imaging
library. Frames are drawn upright (as the model sees them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from agent.frames import quarter_turns
from agent.geometry import Box, Polygon, inside, inside_any

# 5x7 glyphs, each row 5 bits (MSB left).
_GLYPHS = {
    "A": "0E 11 11 1F 11 11 11",
    "B": "1E 11 11 1E 11 11 1E",
    "C": "0E 11 10 10 10 11 0E",
    "D": "1E 11 11 11 11 11 1E",
    "E": "1F 10 10 1E 10 10 1F",
    "F": "1F 10 10 1E 10 10 10",
    "G": "0E 11 10 17 11 11 0F",
    "H": "11 11 11 1F 11 11 11",
    "I": "0E 04 04 04 04 04 0E",
    "J": "07 02 02 02 02 12 0C",
    "K": "11 12 14 18 14 12 11",
    "L": "10 10 10 10 10 10 1F",
    "M": "11 1B 15 15 11 11 11",
    "N": "11 11 19 15 13 11 11",
    "O": "0E 11 11 11 11 11 0E",
    "P": "1E 11 11 1E 10 10 10",
    "Q": "0E 11 11 11 15 12 0D",
    "R": "1E 11 11 1E 14 12 11",
    "S": "0F 10 10 0E 01 01 1E",
    "T": "1F 04 04 04 04 04 04",
    "U": "11 11 11 11 11 11 0E",
    "V": "11 11 11 11 11 0A 04",
    "W": "11 11 11 15 15 15 0A",
    "X": "11 11 0A 04 0A 11 11",
    "Y": "11 11 0A 04 04 04 04",
    "Z": "1F 01 02 04 08 10 1F",
    "0": "0E 11 13 15 19 11 0E",
    "1": "04 0C 04 04 04 04 0E",
    "2": "0E 11 01 02 04 08 1F",
    "3": "1F 02 04 02 01 11 0E",
    "4": "02 06 0A 12 1F 02 02",
    "5": "1F 10 1E 01 01 11 0E",
    "6": "06 08 10 1E 11 11 0E",
    "7": "1F 01 02 04 08 08 08",
    "8": "0E 11 11 0E 11 11 0E",
    "9": "0E 11 11 0F 01 02 0C",
    ".": "00 00 00 00 00 0C 0C",
    ":": "00 0C 0C 00 0C 0C 00",
    "-": "00 00 00 1F 00 00 00",
    "_": "00 00 00 00 00 00 1F",
    "(": "02 04 08 08 08 04 02",
    ")": "08 04 02 02 02 04 08",
    "/": "01 01 02 04 08 10 10",
    "%": "18 19 02 04 08 13 03",
    " ": "00 00 00 00 00 00 00",
}
_BITMAPS = {
    c: np.array([[(int(row, 16) >> (4 - b)) & 1 for b in range(5)] for row in rows.split()], dtype=bool)
    for c, rows in _GLYPHS.items()
}


def draw_text(image: np.ndarray, text: str, x: int, y: int, scale: int = 2) -> None:
    """Draw ``text`` in white on a dark box, in place, clipped to the image."""
    text = text.upper()
    w, h = len(text) * 6 * scale + 2 * scale, 9 * scale
    box = image[y : y + h, x : x + w]
    box[...] = box // 4
    for i, char in enumerate(text):
        glyph = np.kron(_BITMAPS.get(char, _BITMAPS["-"]), np.ones((scale, scale), dtype=bool))
        gx, gy = x + scale + i * 6 * scale, y + scale
        region = image[gy : gy + glyph.shape[0], gx : gx + glyph.shape[1]]
        region[glyph[: region.shape[0], : region.shape[1]]] = 255


BOX_COLOURS = ((255, 64, 64), (64, 200, 255), (255, 210, 0), (120, 255, 120), (255, 120, 255), (255, 255, 255))


def draw_box(image: np.ndarray, box: Box, colour: tuple[int, int, int], thickness: int = 2) -> tuple[int, int]:
    """Outline a normalised box in place; returns its top-left corner in pixels."""
    h, w = image.shape[:2]
    x1, x2 = (min(max(int(round(v * w)), 0), w - 1) for v in (box[0], box[2]))
    y1, y2 = (min(max(int(round(v * h)), 0), h - 1) for v in (box[1], box[3]))
    t = thickness
    image[y1 : y1 + t, x1 : x2 + 1] = colour
    image[max(y2 - t + 1, 0) : y2 + 1, x1 : x2 + 1] = colour
    image[y1 : y2 + 1, x1 : x1 + t] = colour
    image[y1 : y2 + 1, max(x2 - t + 1, 0) : x2 + 1] = colour
    return x1, y1


REGION_COLOUR = (255, 210, 0)
ZONE_COLOURS = ((64, 255, 160), (255, 120, 255), (64, 200, 255), (255, 160, 64), (160, 160, 255))
MASK_GREY = (124, 116, 104)  # about ImageNet's mean colour, what a mask is filled with for most models


def draw_polygon(image: np.ndarray, polygon: Polygon, colour: tuple[int, int, int], thickness: int = 2) -> None:
    """Outline a normalised polygon (closed) in place."""
    h, w = image.shape[:2]
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * (w, h)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        steps = max(2, int(np.hypot(bx - ax, by - ay) * 2))
        xs = np.clip(np.round(np.linspace(ax, bx, steps)).astype(int), 0, w - 1)
        ys = np.clip(np.round(np.linspace(ay, by, steps)).astype(int), 0, h - 1)
        for dy in range(-(thickness // 2), thickness - thickness // 2):
            for dx in range(-(thickness // 2), thickness - thickness // 2):
                image[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = colour


@dataclass
class Overlays:
    """What the model of a camera sees, drawn on its frames: ``region`` (the rest dimmed), ``mask`` (filled grey,
    hatched) and ``zones`` (outlined, named), all normalised to the upright frame."""

    region: Box | None = None
    mask: Sequence[Polygon] = ()
    zones: Mapping[str, Polygon] = field(default_factory=dict)
    _layers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __bool__(self) -> bool:
        return self.region is not None or bool(self.mask) or bool(self.zones)

    def draw(self, image: np.ndarray) -> None:
        """Draw them on ``image`` (uint8 RGB, upright) in place."""
        if not self:
            return
        h, w = image.shape[:2]
        if (w, h) not in self._layers:
            self._layers[(w, h)] = self._layer(w, h)
        dimmed, shade, masked = self._layers[(w, h)]
        image[dimmed] = (image[dimmed].astype(np.uint16) * shade[:, None] // 256).astype(np.uint8)
        image[masked[0]] = MASK_GREY
        image[masked[1]] = (60, 60, 60)
        scale = max(1, h // 240)
        for polygon in self.mask:
            draw_polygon(image, polygon, (200, 200, 200), thickness=scale)
        if self.region is not None:
            x1, y1, x2, y2 = self.region
            draw_polygon(image, [(x1, y1), (x2, y1), (x2, y2), (x1, y2)], REGION_COLOUR, thickness=2 * scale)
            draw_text(image, "REGION", int(x1 * w) + 3 * scale, int(y2 * h) - 12 * scale, scale)
        for n, (name, polygon) in enumerate(self.zones.items()):
            colour = ZONE_COLOURS[n % len(ZONE_COLOURS)]
            draw_polygon(image, polygon, colour, thickness=scale)
            x, y = min(polygon, key=lambda p: p[0] + p[1])  # the top-left vertex
            draw_text(image, f"ZONE {name}", int(x * w) + 2 * scale, int(y * h) + 2 * scale, scale)

    def _layer(self, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a frame size, once: the dimmed pixels and how much of each is kept (of 256): outside the region half,
        inside a zone a little (so that zones read as areas); the masked pixels, and those of them hatched."""
        ys, xs = np.mgrid[0:h, 0:w]
        u, v = (xs + 0.5) / w, (ys + 0.5) / h
        keep = np.full((h, w), 256, dtype=np.uint16)
        if self.region is not None:
            x1, y1, x2, y2 = self.region
            keep[~((u >= x1) & (u < x2) & (v >= y1) & (v < y2))] = 110
        for polygon in self.zones.values():
            within = inside(u, v, polygon)
            keep[within] = np.minimum(keep[within], 215)
        masked = inside_any(u, v, self.mask)
        hatch = masked & (((xs + ys) // (3 * max(1, h // 240))) % 3 == 0)
        dimmed = keep < 256
        return dimmed, keep[dimmed], np.stack([masked & ~hatch, hatch])


def annotate(
    video: Path,
    out: Path,
    timeline: list[tuple[float, list[tuple[str, float]]]],
    people: list[tuple[float, list[tuple[Box, list[tuple[str, float]]]]]] | None = None,
    overlays: Overlays | None = None,
) -> int:
    """Write ``out``: each frame shows the top labels of the newest window ending at or before it, ``overlays``
    (region, mask, zones) and, for person models, the boxes of the newest key time at or before it, each with its
    top three actions."""
    ends = [end for end, _ in timeline]
    people = people or []
    keys = [t for t, _ in people]
    overlays = overlays or Overlays()
    written = 0
    with av.open(str(video)) as src, av.open(str(out), mode="w") as dst:
        stream_in = src.streams.video[0]
        rate = stream_in.average_rate or Fraction(25)
        stream_out = dst.add_stream("libx264", rate=rate)
        stream_out.pix_fmt = "yuv420p"
        for frame in src.decode(stream_in):
            rgb = np.rot90(frame.to_ndarray(format="rgb24"), quarter_turns(frame))
            if written == 0:
                stream_out.width, stream_out.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
            image: NDArray[np.uint8] = np.ascontiguousarray(rgb[: stream_out.height, : stream_out.width])
            t = frame.time or 0.0
            current = max((i for i, end in enumerate(ends) if end <= t + 1e-6), default=None)
            scale = max(1, image.shape[0] // 240)
            overlays.draw(image)
            if current is not None:
                for row, (label, score) in enumerate(timeline[current][1][:3]):
                    draw_text(image, f"{label} {score:.2f}", 4 * scale, 4 * scale + row * 10 * scale, scale)
            key = max((i for i, k in enumerate(keys) if k <= t + 1e-6), default=None)
            for n, (box, top) in enumerate(people[key][1] if key is not None else []):
                x, y = draw_box(image, box, BOX_COLOURS[n % len(BOX_COLOURS)], thickness=scale)
                for row, (label, score) in enumerate(top[:3]):
                    draw_text(image, f"{label} {score:.2f}", x + scale, y + scale + row * 9 * scale, scale)
            for packet in stream_out.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                dst.mux(packet)
            written += 1
        for packet in stream_out.encode():
            dst.mux(packet)
    return written
