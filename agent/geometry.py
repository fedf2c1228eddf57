"""Plane geometry for regions, masks and zones, in coordinates normalised to a camera's upright frame.

``x`` runs from the left edge (0) to the right edge (1), ``y`` from the top (0) to the bottom (1). A box or a region
is ``(x1, y1, x2, y2)``; a polygon is a sequence of ``(x, y)`` vertices, closed implicitly (the last vertex joins the
first). Inside means the even-odd rule: a point is inside when a ray from it crosses the polygon's edges an odd
number of times, so a polygon that crosses itself has holes where it overlaps itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Point = tuple[float, float]
Polygon = Sequence[Point]

FULL: Box = (0.0, 0.0, 1.0, 1.0)


def polygon_area(polygon: Polygon) -> float:
    """The area a simple polygon encloses (the shoelace formula; 0 for one with no area)."""
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def inside(x: ArrayLike, y: ArrayLike, polygon: Polygon) -> np.ndarray:
    """Whether each point (``x``, ``y``, arrays of one shape) is inside ``polygon`` (even-odd rule)."""
    px, py = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    out = np.zeros(np.broadcast(px, py).shape, dtype=bool)
    pts = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    for (ax, ay), (bx, by) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        if ay == by:
            continue  # a horizontal edge: the ray runs along it, the edges beside it decide
        crosses = (ay > py) != (by > py)
        at_x = ax + (py - ay) * (bx - ax) / (by - ay)
        out ^= crosses & (px < at_x)
    return out


def inside_any(x: ArrayLike, y: ArrayLike, polygons: Sequence[Polygon]) -> np.ndarray:
    """Whether each point is inside at least one of ``polygons``."""
    out = np.zeros(np.broadcast(np.asarray(x), np.asarray(y)).shape, dtype=bool)
    for polygon in polygons:
        out |= inside(x, y, polygon)
    return out


def foot(box: Box) -> Point:
    """Where a person's box stands: the centre of its bottom edge."""
    return (box[0] + box[2]) / 2, box[3]


def zones_of(box: Box, zones: Mapping[str, Polygon]) -> list[str]:
    """The names of the zones (in their order) that the box's :func:`foot` is inside."""
    x, y = foot(box)
    return [name for name, polygon in zones.items() if bool(inside(x, y, polygon))]


def to_frame(box: Box, region: Box) -> Box:
    """A box normalised to ``region`` (the frame a model saw) as a box normalised to the whole frame."""
    rx1, ry1, rx2, ry2 = region
    w, h = rx2 - rx1, ry2 - ry1
    return rx1 + box[0] * w, ry1 + box[1] * h, rx1 + box[2] * w, ry1 + box[3] * h


def to_region(box: Box, region: Box) -> Box | None:
    """A box normalised to the whole frame as a box normalised to ``region``, cut to it; None when they do not
    overlap."""
    rx1, ry1, rx2, ry2 = region
    w, h = rx2 - rx1, ry2 - ry1
    x1, y1 = max(0.0, (box[0] - rx1) / w), max(0.0, (box[1] - ry1) / h)
    x2, y2 = min(1.0, (box[2] - rx1) / w), min(1.0, (box[3] - ry1) / h)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
