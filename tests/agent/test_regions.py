"""Regions and masks (``cameras[].region``, ``cameras[].mask``): the rectangle is cut out of the decoded frame without a
copy and scaled in the same swscale pass; its pixels are FFmpeg's own ``crop`` + ``scale`` of that rectangle; masks
are filled with the model's mean colour where the model sees them.

The FFmpeg references come from the ffmpeg CLI (``-vf crop=...,scale=...``), never from the code under test. Real
clips come from the shared data (skipped when absent) and from ffmpeg's test patterns (always).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from agent.frames import Converter, cropped, effective_region, region_pixels, to_model_rgb
from agent.geometry import inside, polygon_area, to_frame, to_region, zones_of
from tests.specs import make_spec
from tests.videos import pattern_video

ROTATED = "decord/tests/test_data/video_{}.mov"  # 568x320 coded, display matrix 0/90/180/270
# The tolerance test_sources_files.py allows the full frame against ffmpeg's scaler (mean absolute difference).
FULL_FRAME_TOLERANCE = 4


def even(v: float) -> int:
    """The documented rounding of a region's edges: to the nearest even pixel."""
    return 2 * round(v / 2)


def ffmpeg_rgb(path: Path, vf: str, fmt: str = "rgb24") -> np.ndarray:
    """The first frame as ffmpeg shows it (autorotated) through the filters ``vf``, as RGB ``[H, W, 3]``; ``fmt``
    gbrp: the scale filter converts to planar RGB (the agent's path), rgb24 to packed."""
    if fmt == "gbrp":
        vf += ",format=gbrp"
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-vf", vf, "-f", "rawvideo", "-pix_fmt", fmt, "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    size = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-vf", vf, "-f", "image2pipe", "-vcodec", "ppm",
         "-"],
        capture_output=True, check=True,
    ).stdout.split(b"\n", 2)[1]  # fmt: skip
    w, h = map(int, size.split())
    arr = np.frombuffer(raw, np.uint8)
    if fmt == "gbrp":
        g, b, r = arr.reshape(3, h, w)
        return np.stack([r, g, b], axis=-1)
    return arr.reshape(h, w, 3)


def first_frame(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as container:
        return next(container.decode(video=0))


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def upright_size(frame: av.VideoFrame) -> tuple[int, int]:
    return (frame.height, frame.width) if round((frame.rotation or 0) / 90) % 2 else (frame.width, frame.height)


def check_against_ffmpeg(path: Path, region: tuple[float, float, float, float], short: int) -> None:
    frame = first_frame(path)
    w, h = upright_size(frame)
    x0, y0, x1, y1 = even(region[0] * w), even(region[1] * h), even(region[2] * w), even(region[3] * h)
    ours = to_model_rgb(frame, resize_short=short, size=None, region=region)
    oh, ow = ours.shape[:2]
    crop = f"crop={x1 - x0}:{y1 - y0}:{x0}:{y0}:exact=1"
    assert min(ow, oh) == short and abs(ow / oh - (x1 - x0) / (y1 - y0)) < 0.05  # the region, short side resized
    packed = ffmpeg_rgb(path, f"{crop},scale={ow}:{oh}:flags=bilinear")
    assert mean_abs(ours, packed) < FULL_FRAME_TOLERANCE, mean_abs(ours, packed)
    planar = ffmpeg_rgb(path, f"{crop},scale={ow}:{oh}:flags=bilinear", "gbrp")
    assert mean_abs(ours, planar) < 1, mean_abs(ours, planar)  # the same swscale path: identical with FFmpeg 8
    # the same rectangle mirrored (another part of the frame) differs: the comparison tells rectangles apart
    mx, my = even(w - x1), even(h - y1)
    assert (mx, my) != (x0, y0)
    mirrored = ffmpeg_rgb(path, f"crop={x1 - x0}:{y1 - y0}:{mx}:{my}:exact=1,scale={ow}:{oh}:flags=bilinear")
    assert mean_abs(ours, mirrored) > max(2 * mean_abs(ours, packed), 1)
    # the centre crop of a clip model is a view of the same conversion
    size = short - 8
    model = to_model_rgb(frame, resize_short=short, size=size, region=region)
    top, left = (oh - size) // 2, (ow - size) // 2
    np.testing.assert_array_equal(model, ours[top : top + size, left : left + size])


@pytest.mark.parametrize(
    ("name", "region"),
    [
        ("mmaction2/demo/demo.mp4", (0.2, 0.25, 0.7, 0.875)),  # 340x256
        ("mmaction2/demo/demo.mp4", (0.03, 0.11, 0.52, 0.97)),  # edges that round
        ("mmaction2/demo/demo_skeleton.mp4", (0.5, 0.1, 0.9, 0.6)),  # 1920x1080: a tenth of the frame
        *[(ROTATED.format(angle), (0.1, 0.2, 0.6, 0.9)) for angle in (0, 90, 180, 270)],  # upright, then cut
    ],
)
def test_region_pixels_are_ffmpegs_crop_and_scale_on_real_clips(shared_data, name, region):
    check_against_ffmpeg(shared_data / name, region, 128)


@pytest.mark.parametrize(("size", "region"), [("320x240", (0.25, 0.5, 0.75, 1.0)), ("641x361", (0.0, 0.0, 0.37, 0.53))])
def test_region_pixels_are_ffmpegs_crop_and_scale_on_generated_clips(tmp_path, size, region):
    clip = pattern_video(tmp_path / "clip.mp4", 0.2, size, 10, "testsrc2")
    check_against_ffmpeg(clip, region, 96)


def test_region_pixels_round_to_even_and_stay_in_the_frame():
    assert region_pixels((0.2, 0.25, 0.7, 0.875), 340, 256) == (68, 64, 238, 224)
    assert region_pixels((0.03, 0.11, 0.52, 0.97), 340, 256) == (10, 28, 176, 248)  # 10.2, 28.16, 176.8, 248.3
    assert region_pixels((0.0, 0.0, 1.0, 1.0), 641, 361) == (0, 0, 640, 360)  # odd sides: the chroma ends early
    assert region_pixels((0.5, 0.5, 0.5001, 0.5001), 100, 100) == (50, 50, 52, 52)  # at least 2 pixels
    assert region_pixels((0.999, 0.999, 1.0, 1.0), 100, 100) == (98, 98, 100, 100)
    # normalised to the upright frame: a frame stored turned (display matrix 90) is cut where it shows
    assert region_pixels((0.0, 0.0, 0.5, 0.25), 568, 320, turns=1) == (426, 0, 568, 160)
    assert effective_region((0.0, 0.0, 0.5, 0.25), 568, 320, turns=1) == pytest.approx((0.0, 0.0, 0.5, 0.25))
    assert effective_region((0.03, 0.11, 0.52, 0.97), 340, 256) == (10 / 340, 28 / 256, 176 / 340, 248 / 256)
    assert effective_region(None, 340, 256) == (0.0, 0.0, 1.0, 1.0)


def yuv_frame(width: int, height: int, fmt: str) -> av.VideoFrame:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)


@pytest.mark.parametrize("fmt", ["yuv420p", "yuvj420p", "nv12", "yuv422p", "yuv444p", "gray", "gbrp"])
def test_a_region_is_cut_from_the_decoded_frames_own_memory(fmt):
    """No pixel is copied to cut a region: the cut frame's planes start inside the decoded frame's, at the region's
    corner, with the decoded frame's row pitch; the pixels are those of cutting the whole converted frame."""
    frame = yuv_frame(320, 240, fmt)
    x0, y0, x1, y1 = 64, 40, 250, 200
    cut = cropped(frame, x0, y0, x1, y1)
    assert (cut.width, cut.height, cut.format.name) == (x1 - x0, y1 - y0, fmt)
    for i, (mine, theirs) in enumerate(zip(cut.planes, frame.planes, strict=True)):
        assert mine.line_size == theirs.line_size
        xs = 0 if i == 0 or fmt in ("yuv444p", "gbrp") else 1
        ys = 1 if i and fmt in ("yuv420p", "yuvj420p", "nv12") else 0
        column = x0 if fmt == "nv12" or i == 0 else x0 >> xs
        assert mine.buffer_ptr == theirs.buffer_ptr + (y0 >> ys) * theirs.line_size + column
    whole = frame.to_ndarray(format="rgb24")[y0:y1, x0:x1]
    if fmt in ("yuv444p", "gray", "gbrp"):
        np.testing.assert_array_equal(cut.to_ndarray(format="rgb24"), whole)
    else:  # chroma is upsampled from the cut's own samples at its edges
        assert mean_abs(cut.to_ndarray(format="rgb24"), whole) < 1
    del frame  # the cut keeps the decoded frame's memory alive
    assert cut.to_ndarray(format="rgb24").shape == (y1 - y0, x1 - x0, 3)


@pytest.mark.parametrize("fmt", ["rgb24", "yuyv422", "yuv420p10le"])
def test_other_formats_are_cut_after_one_whole_conversion(fmt):
    yy, xx = np.mgrid[0:120, 0:160]
    rgb = np.stack([xx * 255 // 159, yy * 255 // 119, (xx + yy) * 255 // 278], axis=-1).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
    cut = cropped(frame, 20, 10, 100, 90)
    assert (cut.width, cut.height) == (80, 80)
    assert mean_abs(cut.to_ndarray(format="rgb24"), rgb[10:90, 20:100]) < 1.5


SPEC = make_spec([{"name": "clip", "frames": 1, "stride_s": 1}], size=64, resize_short=64)
MEAN_SPEC = SPEC.model_copy(update={"mean": (123.675, 116.28, 103.53)})


def test_a_mask_fills_the_models_mean_colour_where_pixel_centres_are_inside():
    frame = yuv_frame(320, 240, "yuv420p")
    triangle = [(0.0, 0.0), (0.5, 0.0), (0.0, 1.0)]
    plain = Converter(MEAN_SPEC)(frame)  # 85x64, then the centre 64x64
    masked = Converter(MEAN_SPEC, mask=[triangle])(frame)
    h, w = plain.shape[:2]
    resized_w = 85  # 320x240 at short side 64
    left = (resized_w - 64) // 2
    xs = (left + np.arange(w) + 0.5) / resized_w
    ys = (np.arange(h) + 0.5) / 64
    inside_mask = inside(xs[None, :], ys[:, None], triangle)
    assert 0.1 < inside_mask.mean() < 0.4
    assert (masked[inside_mask] == (124, 116, 104)).all()
    np.testing.assert_array_equal(masked[~inside_mask], plain[~inside_mask])


def test_a_mask_outside_the_region_changes_nothing_and_inside_it_follows_the_region():
    frame = yuv_frame(320, 240, "yuv420p")
    region = (0.5, 0.0, 1.0, 1.0)  # the right half
    left_half = [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]
    top_right = [(0.5, 0.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.5)]
    person = SPEC.model_copy(update={"crop": "none", "mean": (10.0, 20.0, 30.0)})
    base = Converter(person, region=region)(frame)
    np.testing.assert_array_equal(Converter(person, region=region, mask=[left_half])(frame), base)
    masked = Converter(person, region=region, mask=[left_half, top_right])(frame)
    rows = masked.shape[0]
    assert (masked[: rows // 2] == (10, 20, 30)).all() and (masked[rows // 2 :] == base[rows // 2 :]).all()


def test_a_mask_never_writes_into_the_decoded_frame():
    rgb = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")  # converted at its own size: no new frame from swscale
    out = Converter(SPEC, mask=[[(0, 0), (1, 0), (1, 1), (0, 1)]])(frame)
    assert (out == 0).all()
    np.testing.assert_array_equal(frame.to_ndarray(format="rgb24"), rgb)


# -- geometry --------------------------------------------------------------------------------------------------------


def test_inside_is_the_even_odd_rule_on_concave_polygons():
    ell = [(0, 0), (1, 0), (1, 0.4), (0.4, 0.4), (0.4, 1), (0, 1)]  # an L
    points = {(0.2, 0.2): True, (0.8, 0.2): True, (0.2, 0.8): True, (0.8, 0.8): False, (1.2, 0.2): False}
    for (x, y), want in points.items():
        assert bool(inside(x, y, ell)) is want, (x, y)
    assert polygon_area(ell) == pytest.approx(1 * 0.4 + 0.4 * 0.6)
    assert polygon_area([(0, 0), (1, 1), (0.5, 0.5)]) == 0


def test_boxes_move_between_the_region_and_the_frame():
    region = (0.5, 0.2, 1.0, 0.6)
    box = (0.1, 0.5, 0.3, 1.0)  # in the region
    assert to_frame(box, region) == pytest.approx((0.55, 0.4, 0.65, 0.6))
    assert to_region(to_frame(box, region), region) == pytest.approx(box)
    assert to_region((0.0, 0.0, 0.4, 0.4), region) is None
    assert to_region((0.4, 0.1, 0.75, 0.4), region) == pytest.approx((0.0, 0.0, 0.5, 0.5))


def test_a_person_is_in_the_zones_their_feet_are_in():
    zones = {"door": [(0, 0.5), (0.5, 0.5), (0.5, 1), (0, 1)], "all": [(0, 0), (1, 0), (1, 1), (0, 1)]}
    assert zones_of((0.1, 0.1, 0.3, 0.9), zones) == ["door", "all"]  # feet at (0.2, 0.9)
    assert zones_of((0.1, 0.1, 0.3, 0.4), zones) == ["all"]  # a box reaching into the door zone, feet outside it
    assert zones_of((0.4, 0.1, 0.7, 0.9), zones) == ["all"]  # feet at x 0.55: beside it
