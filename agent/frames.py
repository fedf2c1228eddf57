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

Regions (``cameras[].region``): the rectangle is cut out of the decoded frame *before* the resize, in the same single
swscale pass and without copying any pixel. PyAV (>= 18) wraps memory it is given as a frame without a copy
(``VideoFrame.from_dlpack``, on the CPU for NV12 and planar formats with one component per plane), keeping the row
pitch of each plane; numpy views of the decoded frame's planes, offset to the rectangle's corner and keeping the
frame's line size, are such memory. swscale then reads only the rectangle's rows, straight from the decoder's
buffers. The planar formats decoders give (``yuv420p``, ``yuvj420p``, ``yuv422p``, ``yuv444p`` and their ``j``
forms, ``gray``, ``gbrp``) and ``nv12`` (NVDEC, copied back to host memory) are cut this way; any other format
(packed YUYV from a USB camera, 10-bit video) is first converted whole to ``gbrp`` at its own size, one full-frame
copy, and cut from that. The rectangle's edges are rounded to the nearest even pixel of the frame as stored, so that
4:2:0 chroma is cut exactly where luma is (FFmpeg's ``crop`` filter likewise keeps its corner on the chroma grid).

Masks (``cameras[].mask``): polygons filled with the model's mean colour (zero after the graph's normalisation) in the
converted frame, drawn at the model's input resolution (a pixel is masked when its centre is inside a polygon); the
raster is computed once per frame size.
"""

from __future__ import annotations

from collections.abc import Sequence

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from agent.geometry import FULL, Box, Polygon, inside_any
from agent.spec import ModelSpec, resized_size

DEFAULT_INTERPOLATION = Interpolation.BILINEAR
# Formats cut without a copy: (horizontal, vertical) chroma subsampling as shifts. nv12's second plane interleaves
# U and V: its rows are cut by the chroma shift, its bytes by the luma columns.
ZERO_COPY_FORMATS = {
    "yuv420p": (1, 1),
    "yuvj420p": (1, 1),
    "yuv422p": (1, 0),
    "yuvj422p": (1, 0),
    "yuv440p": (0, 1),
    "yuvj440p": (0, 1),
    "yuv444p": (0, 0),
    "yuvj444p": (0, 0),
    "gray": (0, 0),
    "gbrp": (0, 0),
    "nv12": (1, 1),
}


def centre_crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    return (width - size) // 2, (height - size) // 2


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that make the frame upright (its display matrix), as ffmpeg autorotates."""
    return round((frame.rotation or 0) / 90) % 4


def _turned(box: Box, turns: int, *, to_stored: bool) -> Box:
    """A normalised box of the upright frame as one of the frame as stored (``to_stored``), or back."""
    (x1, y1), (x2, y2) = box[:2], box[2:]
    for _ in range(turns):  # upright = np.rot90(stored, turns): each turn maps (u, v) to (1 - v, u) as stored
        if to_stored:
            (x1, y1), (x2, y2) = (1 - y1, x1), (1 - y2, x2)
        else:
            (x1, y1), (x2, y2) = (y1, 1 - x1), (y2, 1 - x2)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def region_pixels(region: Box, width: int, height: int, turns: int = 0) -> tuple[int, int, int, int]:
    """The pixels ``(x0, y0, x1, y1)`` (end exclusive) of the frame as stored (``width`` x ``height``, turned
    ``turns`` quarter turns from upright) that ``region`` (normalised to the upright frame) covers: edges rounded to
    the nearest even pixel, at least two pixels each way, inside the frame."""
    sx1, sy1, sx2, sy2 = _turned(region, turns, to_stored=True)
    edges = []
    for a, b, n in ((sx1, sx2, width), (sy1, sy2, height)):
        top = n - n % 2
        lo = min(max(0, 2 * round(a * n / 2)), top - 2)
        hi = min(max(lo + 2, 2 * round(b * n / 2)), top)
        edges.append((lo, hi))
    (x0, x1), (y0, y1) = edges
    return x0, y0, x1, y1


def effective_region(region: Box | None, width: int, height: int, turns: int = 0) -> Box:
    """The region a frame of this size is cut to, after rounding (:func:`region_pixels`), normalised to the upright
    frame; the whole frame without one."""
    if region is None or region == FULL:
        return FULL
    x0, y0, x1, y1 = region_pixels(region, width, height, turns)
    return _turned((x0 / width, y0 / height, x1 / width, y1 / height), turns, to_stored=False)


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A plane's rows as a numpy view of the frame's own memory (each row ``line_size`` bytes)."""
    return np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)[: plane.height]


def cropped(
    frame: av.VideoFrame, x0: int, y0: int, x1: int, y1: int, *, reformatter: VideoReformatter | None = None
) -> av.VideoFrame:
    """The pixels ``[y0:y1, x0:x1]`` of ``frame`` (even edges) as a frame of their own. Formats of
    :data:`ZERO_COPY_FORMATS` share the decoded frame's memory (nothing is copied; the frame stays alive while the
    result does); any other format is converted whole to ``gbrp`` (with ``reformatter``) and cut from that."""
    if frame.format.name == "cuda":  # NVDEC's frame kept in GPU memory (convert: graph): downloaded first
        frame = frame.reformat(format=frame.sw_format.name if frame.sw_format else "nv12")
    name = frame.format.name
    if name not in ZERO_COPY_FORMATS or any(p.line_size <= 0 for p in frame.planes):
        full = (reformatter or VideoReformatter()).reformat(frame, format="gbrp", threads=1)
        return cropped(full, x0, y0, x1, y1)
    hs, vs = ZERO_COPY_FORMATS[name]
    views = [_plane(frame.planes[0])[y0:y1, x0:x1]]
    for plane in frame.planes[1:]:
        columns = slice(x0, x1) if name == "nv12" else slice(x0 >> hs, x1 >> hs)
        views.append(_plane(plane)[y0 >> vs : y1 >> vs, columns])
    out = av.VideoFrame.from_dlpack(views, format=name)
    out.colorspace, out.color_range = frame.colorspace, frame.color_range  # swscale's YUV matrix and range
    return out


def to_model_rgb(
    frame: av.VideoFrame,
    *,
    resize_short: int,
    size: int | None,
    interpolation: Interpolation = DEFAULT_INTERPOLATION,
    reformatter: VideoReformatter | None = None,
    threads: int = 0,
    resize_to: tuple[int, int] | None = None,
    region: Box | None = None,
) -> np.ndarray:
    """``[size, size, 3]`` uint8 RGB, upright, resized and centre-cropped (a view of swscale's output); with
    ``size`` None the whole resized frame (person models: ``crop: none``). ``resize_to`` (width, height): resize
    the upright frame to exactly that instead of its short side to ``resize_short`` (the spec's ``resize_to``).
    ``region`` (x1, y1, x2, y2 normalised to the upright frame): only that part of the frame, cut out before the
    resize (see the module docstring); the resize and the crop then apply to it. ``threads``: swscale's (0: one per
    core); the pixels do not depend on it."""
    turns = quarter_turns(frame)
    if region is not None and region != FULL:
        x0, y0, x1, y1 = region_pixels(region, frame.width, frame.height, turns)
        if (x0, y0, x1, y1) != (0, 0, frame.width, frame.height):
            frame = cropped(frame, x0, y0, x1, y1)
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
    """``frame`` (as stored) scaled to ``width`` x ``height``: uint8 RGB ``[height, width, 3]``, memory of its own."""
    reformatter = reformatter or VideoReformatter()  # what PyAV's to_ndarray(width=...) makes for every call
    fmt = "rgb24" if (width, height) == (frame.width, frame.height) else "gbrp"  # see the module's docstring
    out = reformatter.reformat(
        frame, width=width, height=height, format=fmt, interpolation=interpolation, threads=threads
    )
    rgb = out.to_ndarray()  # gbrp: PyAV stacks the planes in R, G, B order
    return rgb.copy() if out is frame else rgb  # an rgb24 frame at its own size comes back as it is: not a view of it


class Converter:
    """A camera's (or a video's) conversion for one model: ``converter(frame)`` → the model's RGB frame, with its
    ``region`` cut out, resized and cropped as the spec says (``crop=False``: not cropped, as a flow model's frames
    before their flow), and ``mask`` (polygons normalised to the upright frame) filled with ``fill`` (the model's mean
    colour; mid-grey for a flow model). One swscale context, used by one thread; the mask's raster is
    kept per frame size."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        region: Box | None = None,
        mask: Sequence[Polygon] = (),
        threads: int = 0,
        interpolation: Interpolation = DEFAULT_INTERPOLATION,
        crop: bool = True,
    ) -> None:
        self.resize_short, self.resize_to = spec.resize_short, spec.resize_to
        self.size = spec.crop_size if crop else None
        self.region: Box | None = None if region is None or tuple(region) == FULL else _box(region)
        self.mask: list[list[tuple[float, float]]] = [[(float(x), float(y)) for x, y in p] for p in mask]
        mean = spec.mean if len(spec.mean) == 3 else [128.0] * 3  # a flow model's mean is per flow channel: mid-grey
        self.fill = np.asarray([min(255, max(0, round(v))) for v in mean], dtype=np.uint8)
        self.threads, self.interpolation = threads, interpolation
        self.reformatter = VideoReformatter()
        self._rasters: dict[tuple[int, int, int], np.ndarray | None] = {}

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = to_model_rgb(
            frame,
            resize_short=self.resize_short,
            size=self.size,
            interpolation=self.interpolation,
            reformatter=self.reformatter,
            threads=self.threads,
            resize_to=self.resize_to,
            region=self.region,
        )
        if self.mask:
            raster = self._raster(frame.width, frame.height, quarter_turns(frame))
            if raster is not None:
                rgb[raster] = self.fill
        return rgb

    def region_of(self, frame: av.VideoFrame) -> Box:
        """The part of ``frame`` (normalised to its upright form) that the model sees."""
        return effective_region(self.region, frame.width, frame.height, quarter_turns(frame))

    def _raster(self, width: int, height: int, turns: int) -> np.ndarray | None:
        """The masked pixels of the converted frame of a frame this size (None: none), computed once per size."""
        key = (width, height, turns)
        if key not in self._rasters:
            if self.region is None:
                rw, rh = width, height
            else:
                x0, y0, x1, y1 = region_pixels(self.region, width, height, turns)
                rw, rh = x1 - x0, y1 - y0
            if turns % 2:
                rw, rh = rh, rw
            w, h = self.resize_to or resized_size(rw, rh, self.resize_short)
            ox, oy, ow, oh = 0, 0, w, h
            if self.size is not None:
                (ox, oy), ow, oh = centre_crop_origin(w, h, self.size), self.size, self.size
            ux1, uy1, ux2, uy2 = effective_region(self.region, width, height, turns)
            xs = ux1 + (ox + np.arange(ow) + 0.5) / w * (ux2 - ux1)
            ys = uy1 + (oy + np.arange(oh) + 0.5) / h * (uy2 - uy1)
            raster = inside_any(xs[None, :], ys[:, None], self.mask)
            self._rasters[key] = raster if raster.any() else None
        return self._rasters[key]


def _box(values: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


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
