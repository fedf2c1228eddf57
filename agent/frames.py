"""Decoded frame → model input frame: resize short side, centre crop, RGB uint8 (MMAction2's test pipeline).

swscale does the resize and the colour conversion in one pass straight from the decoder's frame; the crop is
a numpy view. Sizes are rounded as MMAction2 (mmcv) rounds them, so the same frame gives the same pixels layout.
Callers that convert many frames pass one :class:`VideoReformatter` per stream: it keeps swscale's context between
frames (a fresh one per frame costs more than the conversion itself at sub-stream sizes). swscale splits a frame
across one thread per core unless told otherwise; a camera, already on its own thread, asks for one: handing a
sub-stream frame to slice threads costs more than converting it.

Scaled frames come out of swscale as planar RGB (``gbrp``), not packed ``rgb24``: FFmpeg 8 scales to packed RGB on
a slow path whenever the target width is odd (160x120 → 147x110, or 16:9 at short side 256 → 455 wide) and on a
fast path that lands farther from a float bilinear resize when it is even. Planar is the faster and the closer of
the two (``python -m bench.interp`` compares both). Unscaled frames stay packed, which is faster there (identical
pixels).
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from agent.spec import resized_size

DEFAULT_INTERPOLATION = Interpolation.BILINEAR


def centre_crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    return (width - size) // 2, (height - size) // 2


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that make the frame upright (its display matrix), as ffmpeg autorotates."""
    return round((frame.rotation or 0) / 90) % 4


def to_model_rgb(
    frame: av.VideoFrame,
    *,
    resize_short: int,
    size: int | None,
    interpolation: Interpolation = DEFAULT_INTERPOLATION,
    reformatter: VideoReformatter | None = None,
    threads: int = 0,
    resize_to: tuple[int, int] | None = None,
) -> np.ndarray:
    """``[size, size, 3]`` uint8 RGB, upright, resized and centre-cropped (a view of swscale's output); with
    ``size`` None the whole resized frame (person models: ``crop: none``). ``resize_to`` (width, height): resize
    the upright frame to exactly that instead of its short side to ``resize_short`` (the spec's ``resize_to``).
    ``threads``: swscale's (0: one per core); the pixels do not depend on it."""
    turns = quarter_turns(frame)
    width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)  # as displayed
    w, h = resize_to or resized_size(width, height, resize_short)
    sw, sh = (h, w) if turns % 2 else (w, h)  # as stored
    rgb = resized_rgb(frame, sw, sh, interpolation=interpolation, reformatter=reformatter, threads=threads)
    if turns:
        rgb = np.rot90(rgb, turns)
    if size is None:
        return rgb
    x0, y0 = centre_crop_origin(w, h, size)
    return rgb[y0 : y0 + size, x0 : x0 + size]


def resized_rgb(
    frame: av.VideoFrame,
    width: int,
    height: int,
    *,
    interpolation: Interpolation = DEFAULT_INTERPOLATION,
    reformatter: VideoReformatter | None = None,
    threads: int = 0,
) -> np.ndarray:
    """``frame`` (as stored) scaled to ``width`` x ``height``: uint8 RGB ``[height, width, 3]``."""
    reformatter = reformatter or VideoReformatter()  # what PyAV's to_ndarray(width=...) makes for every call
    fmt = "rgb24" if (width, height) == (frame.width, frame.height) else "gbrp"  # see the module's docstring
    out = reformatter.reformat(
        frame, width=width, height=height, format=fmt, interpolation=interpolation, threads=threads
    )
    return out.to_ndarray()  # gbrp: PyAV stacks the planes in R, G, B order


class BestEffortTimestamp:
    """FFmpeg's best-effort timestamp (``guess_correct_pts``) for decoded frames, which arrive in display order.

    Trust ``pts`` unless it has gone backwards more often than ``dts`` (AVI files with packed B-frames report
    pts 1, 2, 4, 3, 5, 7, 6, ...); then use ``dts``. Live, the switch can cost one frame (the one whose bad pts
    revealed the problem); offline, :func:`best_effort_times` decides once for the whole file.
    """

    def __init__(self) -> None:
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts: int | None = None
        self.last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        if pts is not None and (self.faulty_pts <= self.faulty_dts or dts is None):
            return pts
        return dts


def best_effort_times(pts: list[int | None], dts: list[int | None]) -> list[int | None]:
    """Offline: the same choice, made once with the whole file in view."""
    guess = BestEffortTimestamp()
    for p, d in zip(pts, dts, strict=True):
        guess(p, d)
    use_dts = guess.faulty_pts > guess.faulty_dts
    return [d if (use_dts and d is not None) or p is None else p for p, d in zip(pts, dts, strict=True)]
