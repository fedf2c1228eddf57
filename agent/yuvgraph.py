"""The conversion graph's inputs: a decoded frame's geometry and colour as tables (``cameras[].convert: graph``).

``agent/graphs/yuv_to_rgb.onnx`` turns the planes of a decoded frame (Y, U, V as the decoder stores them, uint8,
rows of ``line_size`` bytes: NV12's interleaved chroma plane is given as both U and V) into the model's uint8 RGB
frame, on the ONNX Runtime provider the model runs on. It is one graph for every stream, with dynamic shapes: the
source size, format, region, rotation, resize, crop, colour matrix, range and mask are all *inputs*, the tables this
module computes once per stream geometry (:func:`plan`). A graph per geometry would bake the same tables in as
constants and gain nothing at run time (they are uploaded once either way), while a camera that changes resolution
would need a graph built on the fly, which the agent cannot do without ``onnx``.

What the graph computes, per plane: the part of the plane any tap reads (``*_start`` to ``*_stop``), a vertical pass
(for each output row, a weighted sum of ``K`` source rows: ``*_rows`` indices, ``*_row_weights``: whole rows, so
contiguous copies), then a horizontal pass on the rows left (the same over columns: ``*_cols``, ``*_col_weights``),
in float32, straight into the model's layout (upright and centre-cropped: the rows and columns are taken in that
order, flips included; a frame stored a quarter turn from upright, ``turned``, has its stored columns as rows);
then ``matrix @ (yuv - offset)`` to RGB, the mask (``keep`` 0/1, ``fill`` the model's mean colour where masked),
rounding, clipping to 0..255, uint8, channels last.

The weights are swscale's ``BILINEAR`` (the conversion ``convert: cpu`` does, and the tolerance the interpolation
tests accept): a tent whose radius is the scale factor when shrinking (1 when enlarging), on pixel centres, edges
clamped, normalised. Chroma is resampled from its own grid straight to the output size, sited as FFmpeg sites it
(:func:`chroma_siting`: H.264, HEVC, MPEG-2 and MPEG-4 put 4:2:0 and 4:2:2 chroma on the left luma sample; VP9, AV1,
MJPEG and frames that say nothing, in the middle; a region, which swscale is given as a frame of its own that says
nothing, is read as centred by both). The colour matrix is the frame's (``colorspace``: BT.601 when
unspecified, as swscale assumes; BT.709, FCC, SMPTE 240M, BT.2020) with its range (``color_range``, full for the
``yuvj`` formats). Against swscale's own scaled output this is within 0.02 of a level on average (see
``tests/agent/test_yuvgraph.py``); the graph does not reproduce swscale's special cases for frames that are not
resized (chroma replicated, coarser rounding), where the two differ by up to about 2 levels on average.

Formats the graph reads: :data:`GRAPH_FORMATS`. Any other (10-bit, packed YUYV, RGB) is converted by swscale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from agent.spec import ModelSpec, resized_size

GRAPHS = Path(__file__).parent / "graphs"
YUV_TO_RGB = GRAPHS / "yuv_to_rgb.onnx"  # written by export/graphs.py, shipped with the package
TAKE_ROWS = GRAPHS / "take_rows.onnx"
OPSET = 17

PLANES = ("y", "u", "v")
TABLES = (
    "y_start",  # int64 [2]: where the part of the luma plane any tap reads begins: top, left
    "y_stop",  # int64 [2]: where it ends: bottom, right (exclusive)
    "y_rows",  # int64 [R, K]: for each output row, the source rows it sums (from y_start's top)
    "y_row_weights",  # float [R, K, 1]
    "y_cols",  # int64 [C, K]: for each output column, the source columns (bytes of a row, from y_start's left)
    "y_col_weights",  # float [C, K, 1]
    "c_start",  # the same for the chroma planes (U and V share the part read, rows and weights)
    "c_stop",
    "c_rows",
    "c_row_weights",
    "u_cols",
    "v_cols",  # NV12: U and V columns interleave in one plane (bytes 2i and 2i + 1)
    "c_col_weights",
    "offset",  # float [3, 1, 1]: subtracted from (Y, U, V)
    "matrix",  # float [3, 3]: matrix @ (yuv - offset) = (R, G, B)
    "turned",  # bool []: the frame is stored a quarter turn from upright: the resampled grid is the model's layout
    "keep",  # float [H, W]: 1, or 0 where masked
    "fill",  # float [3, H, W]: the fill colour where masked, else 0
)
OUTPUT = "rgb"  # uint8 [H, W, 3]
# Tables the host reads (Slice's bounds, If's condition: ONNX Runtime's CUDA kernels take them from host memory),
# so kept there on any provider: no copy back from the device per run.
HOST_TABLES = frozenset({"y_start", "y_stop", "c_start", "c_stop", "turned"})

# (horizontal, vertical) chroma subsampling as shifts; NV12's chroma is one plane of U, V pairs.
GRAPH_FORMATS = {
    "yuv420p": (1, 1),
    "yuvj420p": (1, 1),
    "nv12": (1, 1),
    "yuv422p": (1, 0),
    "yuvj422p": (1, 0),
    "yuv444p": (0, 0),
    "yuvj444p": (0, 0),
}
# Kr, Kb by AVColorSpace; anything else is BT.601 (swscale's default).
_LUMA_WEIGHTS = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 7: (0.212, 0.087), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)
_JPEG_RANGE = 2  # AVCOL_RANGE_JPEG
# Decoders that site 4:2:0 / 4:2:2 chroma on the left luma sample (libavcodec's default for these codecs).
LEFT_SITED = frozenset({"h264", "hevc", "mpeg2video", "mpeg4", "h264_cuvid", "hevc_cuvid"})


def chroma_siting(codec: str | None) -> str:
    """Where a stream's decoder puts chroma: ``left`` (co-sited with the even luma columns) or ``center``."""
    return "left" if codec in LEFT_SITED else "center"


def colour(colorspace: int, full_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(offset, matrix)``: ``matrix @ (yuv - offset)`` is RGB on 0..255 for a frame of this AVColorSpace and
    range (``offset`` ``[3, 1, 1]``)."""
    kr, kb = _LUMA_WEIGHTS.get(colorspace, _BT601)
    kg = 1 - kr - kb
    if full_range:
        offset, ys, cs = np.array([0.0, 128.0, 128.0]), 1.0, 1.0
    else:
        offset, ys, cs = np.array([16.0, 128.0, 128.0]), 255 / 219, 255 / 224
    rows = [  # R, G, B from Y, U (Cb), V (Cr)
        [ys, 0.0, cs * 2 * (1 - kr)],
        [ys, -cs * 2 * kb * (1 - kb) / kg, -cs * 2 * kr * (1 - kr) / kg],
        [ys, cs * 2 * (1 - kb), 0.0],
    ]
    return offset.astype(np.float32)[:, None, None], np.array(rows, dtype=np.float32)


def taps(n_src: int, n_dst: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """swscale's bilinear filter resizing ``n_src`` samples to ``n_dst``: ``(indices, weights)``, ``[n_dst, K]``.
    Pixel centres align (output ``i`` sits at source ``(i + 0.5) * n_src / n_dst - 0.5 + shift``); the tent's radius
    is the scale factor when shrinking, 1 when enlarging; taps past an edge count for the edge sample."""
    scale = n_src / n_dst
    radius = max(1.0, scale)
    centre = (np.arange(n_dst) + 0.5) * scale - 0.5 + shift
    k = int(np.ceil(2 * radius)) + 1
    first = np.floor(centre - radius).astype(np.int64) + 1
    index = first[:, None] + np.arange(k)[None, :]
    weight = np.maximum(0.0, 1.0 - np.abs(index - centre[:, None]) / radius)
    used = weight.any(axis=0)  # drop taps that are zero for every output sample
    index, weight = index[:, used], weight[:, used]
    weight /= weight.sum(axis=1, keepdims=True)
    return np.clip(index, 0, n_src - 1), weight.astype(np.float32)


@dataclass(frozen=True)
class Geometry:
    """What the tables depend on: the frame as stored, its format and colour, and what the model sees of it."""

    width: int
    height: int
    format: str
    turns: int  # counter-clockwise quarter turns to upright
    colorspace: int
    full_range: bool
    siting: str  # chroma_siting()
    region: tuple[int, int, int, int]  # pixels of the frame as stored, end exclusive
    resized: tuple[int, int]  # (width, height) of the upright region after the resize
    crop: int | None  # the centre crop's side; None: the whole resized region


def plan(geometry: Geometry, mask: np.ndarray | None = None, fill: Sequence[int] = (0, 0, 0)) -> dict[str, np.ndarray]:
    """The graph's tables for frames of ``geometry``; ``mask``: bool ``[H, W]`` of the model's frame, True where
    ``fill`` goes (None: nothing masked)."""
    g = geometry
    hs, vs = GRAPH_FORMATS[g.format]
    x0, y0, x1, y1 = g.region
    w, h = g.resized
    sw, sh = (h, w) if g.turns % 2 else (w, h)  # the resized grid as stored
    ox, oy, ow, oh = 0, 0, w, h
    if g.crop is not None:
        ox, oy, ow, oh = (w - g.crop) // 2, (h - g.crop) // 2, g.crop, g.crop
    upright = np.rot90(np.arange(sh * sw, dtype=np.int64).reshape(sh, sw), g.turns)[oy : oy + oh, ox : ox + ow]
    rows, cols = upright // sw, upright % sw  # the resized stored grid's row and column of each pixel the model sees
    # The graph resamples a [C, R] grid: for each output column and row, in the order the model's frame takes them
    # (flips and the crop are in the order; upright, a turned frame's rows are stored columns).
    turned = bool(g.turns % 2)
    row_order, col_order = (rows[0, :], cols[:, 0]) if turned else (rows[:, 0], cols[0, :])
    tables: dict[str, np.ndarray] = {"turned": np.array(turned)}

    def axis(
        start: int, stop: int, n_out: int, keep: np.ndarray, sub: int, shift: float
    ) -> tuple[np.ndarray, np.ndarray]:
        first, last = start >> sub, -(-stop >> sub)  # a region's edges are even: its chroma starts on a sample
        index, weight = taps(last - first, n_out, shift)
        return index[keep] + first, weight[keep]

    siting = 0.5 - 0.5 / (1 << hs) if g.siting == "left" else 0.0  # left: chroma sample i at luma i << hs
    for name, sub_x, sub_y, shift in (("y", 0, 0, 0.0), ("c", hs, vs, siting)):
        col_index, col_weight = axis(x0, x1, sw, col_order, sub_x, shift)
        row_index, row_weight = axis(y0, y1, sh, row_order, sub_y, 0.0)
        if name == "c" and g.format == "nv12":  # U and V columns interleave: bytes 2i and 2i + 1 of a row
            columns = {"u_cols": 2 * col_index, "v_cols": 2 * col_index + 1}
        else:
            columns = {"y_cols": col_index} if name == "y" else {"u_cols": col_index, "v_cols": col_index}
        top, bottom = int(row_index.min()), int(row_index.max()) + 1
        left = min(int(c.min()) for c in columns.values())
        right = max(int(c.max()) for c in columns.values()) + 1
        tables[f"{name}_start"] = np.array([top, left], dtype=np.int64)
        tables[f"{name}_stop"] = np.array([bottom, right], dtype=np.int64)
        tables[f"{name}_rows"] = row_index - top
        tables[f"{name}_row_weights"] = row_weight[:, None, :]
        tables |= {key: index - left for key, index in columns.items()}
        tables[f"{name}_col_weights"] = col_weight[:, None, :]
    tables["offset"], tables["matrix"] = colour(g.colorspace, g.full_range)
    keep = np.ones((oh, ow), np.float32) if mask is None else (~mask).astype(np.float32)
    tables["keep"] = keep
    tables["fill"] = (1 - keep)[None] * np.asarray(fill, np.float32)[:, None, None]
    return {k: np.ascontiguousarray(v) for k, v in tables.items()}


def geometry(
    frame: av.VideoFrame,
    spec: ModelSpec,
    *,
    region: tuple[int, int, int, int],
    turns: int,
    siting: str,
) -> Geometry:
    """The :class:`Geometry` of ``frame`` for ``spec``; ``region``: pixels as stored (the whole frame or
    :func:`agent.frames.region_pixels`), ``turns``: :func:`agent.frames.quarter_turns`. NVDEC's frames (format
    ``cuda``) are described by their planes' format."""
    fmt = frame.sw_format.name if frame.format.name == "cuda" and frame.sw_format is not None else frame.format.name
    x0, y0, x1, y1 = region
    rw, rh = (y1 - y0, x1 - x0) if turns % 2 else (x1 - x0, y1 - y0)  # upright
    resized = spec.resize_to or resized_size(rw, rh, spec.resize_short)
    return Geometry(
        width=frame.width,
        height=frame.height,
        format=fmt,
        turns=turns,
        colorspace=int(frame.colorspace),
        full_range=fmt.startswith("yuvj") or int(frame.color_range) == _JPEG_RANGE,
        siting=siting,
        region=region,
        resized=resized,
        crop=spec.crop_size,
    )
