"""``convert: graph``: the conversion graph (agent/graphs/yuv_to_rgb.onnx on ONNX Runtime's CPU provider) against
swscale (``convert: cpu``, :class:`agent.frames.Converter`) on real clips: ffmpeg's moving test pattern encoded with
each colour property the graph reads (NV12, YUV 4:2:0, 4:2:2, 4:4:4; BT.601 and BT.709; limited and full range; odd
sizes; H.264's left-sited chroma and VP9's and MJPEG's centred chroma; rotated streams), and the shared data's real
videos when present.

Bounds, as mean absolute difference per channel value (the interpolation tests allow 4 against ffmpeg's scaler and
8 against a float bilinear resize): resized frames, whole or a region, 0.05 (the two agree to rounding: no value
further apart than 1 in a thousand); frames not resized 4 (swscale's unscaled converters replicate chroma).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from agent import yuvgraph
from agent.frames import Converter, quarter_turns
from agent.live.device import DeviceArray
from agent.live.graphconvert import Conversion, GraphConverter
from agent.spec import resized_size
from tests.specs import make_spec

FULL_FRAME_TOLERANCE = 4  # test_regions.py: the full frame against ffmpeg's scaler
RESIZED = 0.05
H264 = ["-c:v", "libx264", "-preset", "ultrafast"]
CLIPS = {  # name: (size, ffmpeg arguments after the test pattern)
    "h264_601_limited": ("640x360", [*H264, "-pix_fmt", "yuv420p"]),
    "h264_709_limited": ("640x360", ["-vf", "scale=out_color_matrix=bt709", *H264, "-pix_fmt", "yuv420p",
                                     "-colorspace", "bt709", "-color_range", "tv"]),
    "h264_709_full": ("640x360", ["-vf", "scale=out_color_matrix=bt709:out_range=full", *H264, "-pix_fmt",
                                  "yuvj420p", "-colorspace", "bt709", "-color_range", "pc"]),
    "h264_601_full": ("640x360", [*H264, "-pix_fmt", "yuvj420p"]),
    "h264_422": ("640x360", [*H264, "-pix_fmt", "yuv422p"]),
    "h264_444_odd": ("321x241", [*H264, "-pix_fmt", "yuv444p"]),
    "mjpeg_odd": ("321x241", ["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"]),
    "vp9": ("640x360", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-pix_fmt", "yuv420p"]),
    "h264_1080p": ("1920x1080", [*H264, "-pix_fmt", "yuv420p"]),
}  # fmt: skip
ROTATED = {"h264_rot90": 90, "h264_rot270": 270}  # h264_601_limited with a display matrix
SHARED = ["mmaction2/demo/demo.mp4", "mmaction2/demo/demo_skeleton.mp4",
          *[f"decord/tests/test_data/video_{a}.mov" for a in (0, 90, 180, 270)]]  # fmt: skip
SPECS = {
    "crop224": make_spec([{"name": "clip", "frames": 1, "stride_s": 1}], size=224, resize_short=256),
    "whole110": make_spec([{"name": "clip", "frames": 1, "stride_s": 1}], size=96, resize_short=110).model_copy(
        update={"crop": "none"}
    ),
}
REGION = (0.1, 0.2, 0.6, 0.9)
GRAPH = Conversion("graph", why="test")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("yuvgraph")
    out = {}
    for name, (size, args) in CLIPS.items():
        w, h = size.split("x")
        path = folder / f"{name}.{'avi' if 'mjpeg' in name else 'mkv' if name == 'vp9' else 'mp4'}"
        source = f"testsrc2=size={int(w) + int(w) % 2}x{int(h) + int(h) % 2}:rate=25"  # testsrc2 draws even sizes
        scale = [] if "-vf" in args or size.split("x") == [str(int(w) + int(w) % 2), str(int(h) + int(h) % 2)] else [
            "-vf", f"scale={w}:{h}"]  # fmt: skip
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", source, "-t", "0.2", *scale, *args, str(path)],
                       check=True)  # fmt: skip
        out[name] = path
    for name, angle in ROTATED.items():
        path = folder / f"{name}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(out["h264_601_limited"]), "-c", "copy",
                        "-metadata:s:v:0", f"rotate={angle}", str(path)], check=True)  # fmt: skip
        out[name] = path
    return out


def first_frame(path: Path) -> tuple[av.VideoFrame, str]:
    with av.open(str(path)) as container:
        return next(container.decode(video=0)), container.streams.video[0].codec_context.name


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def graph_of(spec, codec: str, conversion: Conversion = GRAPH, **kw) -> GraphConverter:
    return GraphConverter(spec, conversion, codec=lambda: codec, **kw)


def resized(frame: av.VideoFrame, spec, region) -> bool:
    """Whether the conversion resizes (a frame already at the model's size is converted as it is)."""
    if region is not None:
        return True
    upright = (frame.height, frame.width) if quarter_turns(frame) % 2 else (frame.width, frame.height)
    return (spec.resize_to or resized_size(*upright, spec.resize_short)) != upright


def compare(frame: av.VideoFrame, codec: str, spec, region=None) -> float:
    """The graph's and swscale's conversions of ``frame``: their mean absolute difference (resized frames: no more
    than one value in a thousand further apart than 1)."""
    ours = graph_of(spec, codec, region=region)(frame)
    theirs = Converter(spec, region=region, threads=1)(frame)
    assert ours.shape == theirs.shape and ours.dtype == np.uint8
    apart = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    if resized(frame, spec, region):
        assert (apart > 1).mean() < 1e-3, (apart > 1).mean()
    return float(apart.mean())


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("name", [*CLIPS, *ROTATED])
def test_the_graph_equals_swscale_on_generated_clips(clips, name, spec):
    frame, codec = first_frame(clips[name])
    assert (frame.rotation or 0) % 360 == ROTATED.get(name, 0) % 360 or name not in ROTATED
    for fmt in {frame.format.name, "nv12"} if frame.format.name in ("yuv420p", "yuvj420p") else {frame.format.name}:
        f = frame if fmt == frame.format.name else frame.reformat(format="nv12")  # NVDEC's format
        assert compare(f, codec, SPECS[spec]) < RESIZED, (name, fmt)
        assert compare(f, codec, SPECS[spec], REGION) < RESIZED, (name, fmt, "region")


@pytest.mark.parametrize("name", SHARED)
def test_the_graph_equals_swscale_on_real_videos(shared_data, name):
    frame, codec = first_frame(shared_data / name)
    for f in (frame, frame.reformat(format="nv12")):
        for spec in SPECS.values():
            bound = RESIZED if resized(frame, spec, None) else FULL_FRAME_TOLERANCE  # demo.mp4: 340x256 at 256
            assert compare(f, codec, spec) < bound, name
            assert compare(f, codec, spec, REGION) < RESIZED, name


def test_the_colour_properties_reach_the_graph(clips):
    """The clips carry what they are named for, and a wrong matrix or range would show: BT.709 read as BT.601 (or
    full range as limited) is far outside the bound."""
    seen = {}
    for name in ("h264_601_limited", "h264_709_limited", "h264_709_full", "mjpeg_odd", "h264_444_odd"):
        frame, _ = first_frame(clips[name])
        seen[name] = (frame.format.name, int(frame.colorspace), int(frame.color_range), frame.width, frame.height)
    assert seen["h264_709_limited"][1:3] == (1, 1) and seen["h264_709_full"][:3] == ("yuvj420p", 1, 2)
    assert seen["mjpeg_odd"][3:] == (321, 241) and seen["h264_444_odd"][0] == "yuv444p"
    frame, codec = first_frame(clips["h264_709_limited"])
    geometry = yuvgraph.geometry(frame, SPECS["crop224"], region=(0, 0, 640, 360), turns=0, siting="left")
    right = yuvgraph.plan(geometry)
    for wrong in (geometry.__class__(**(geometry.__dict__ | {"colorspace": 5})),
                  geometry.__class__(**(geometry.__dict__ | {"full_range": True}))):  # fmt: skip
        tables = yuvgraph.plan(wrong)
        assert not np.allclose(tables["matrix"], right["matrix"]) or not np.allclose(tables["offset"], right["offset"])


@pytest.mark.parametrize("colorspace", [1, 2, 4, 5, 6, 7, 9])  # BT.709, unspecified, FCC, BT.601 x2, 240M, BT.2020
def test_every_matrix_swscale_knows_in_either_range(clips, colorspace):
    """The frame's tags are what both conversions read: retagged, the same planes convert alike for each matrix."""
    frame, codec = first_frame(clips["h264_601_limited"])
    for full in (False, True):
        frame.colorspace, frame.color_range = colorspace, 2 if full else 1
        assert compare(frame, codec, SPECS["crop224"]) < RESIZED, (colorspace, full)


@pytest.mark.parametrize("name", ["h264_601_limited", "mjpeg_odd"])
def test_frames_not_resized_stay_within_the_full_frame_tolerance(clips, name):
    frame, codec = first_frame(clips[name])
    spec = SPECS["whole110"].model_copy(update={"resize_to": (frame.width, frame.height)})
    assert compare(frame, codec, spec) < FULL_FRAME_TOLERANCE


def test_masks_fill_the_same_pixels_with_the_models_mean(clips):
    frame, codec = first_frame(clips["h264_601_limited"])
    spec = SPECS["crop224"].model_copy(update={"mean": (123.675, 116.28, 103.53)})
    mask = [[(0.0, 0.0), (0.5, 0.0), (0.0, 1.0)], [(0.7, 0.7), (1.0, 0.7), (1.0, 1.0)]]
    ours = graph_of(spec, codec, region=REGION, mask=mask)(frame)
    theirs = Converter(spec, region=REGION, mask=mask, threads=1)(frame)
    filled = (theirs == (124, 116, 104)).all(axis=-1)
    assert 0.1 < filled.mean() < 0.5
    assert (ours[filled] == (124, 116, 104)).all()
    assert mean_abs(ours[~filled], theirs[~filled]) < RESIZED


def test_clips_in_device_memory_hold_the_same_pixels(clips):
    """``on_device``: the graph writes the model's frame into a device buffer (here the CPU's): the same bytes."""
    frame, codec = first_frame(clips["h264_709_full"])
    host = graph_of(SPECS["crop224"], codec)(frame)
    device = graph_of(SPECS["crop224"], codec, Conversion("graph", on_device=True))(frame)
    assert isinstance(device, DeviceArray) and device.shape == host.shape
    np.testing.assert_array_equal(device.numpy(), host)


@pytest.mark.parametrize("name", ["h264_601_limited", "h264_444_odd"])
def test_planes_uploaded_into_device_buffers_convert_alike(clips, name):
    """The CUDA path for frames decoded in software: each plane copied once into a buffer kept per plane shape
    (here on the CPU device), NV12's chroma plane once for U and V; the same pixels as reading them in place."""
    frame, codec = first_frame(clips[name])
    for f in (frame, frame.reformat(format="nv12")):
        in_place = graph_of(SPECS["crop224"], codec)
        uploaded = graph_of(SPECS["crop224"], codec, Conversion("graph", on_device=True))
        uploaded.upload = True
        for _ in range(2):  # the second frame reuses the buffers
            np.testing.assert_array_equal(uploaded(f).numpy(), in_place(f))
        assert len(uploaded._uploads) == (2 if f.format.name == "nv12" else 3)


@pytest.mark.parametrize("fmt", ["rgb24", "yuyv422", "yuv420p10le"])
def test_formats_the_graph_does_not_read_go_through_swscale_said_once(clips, fmt, caplog):
    frame, codec = first_frame(clips["h264_601_limited"])
    other = frame.reformat(format=fmt)
    converter = graph_of(SPECS["crop224"], codec)
    with caplog.at_level(logging.INFO, logger="actionstream.sources"):
        first, again = converter(other), converter(other)
    np.testing.assert_array_equal(first, Converter(SPECS["crop224"], threads=1)(other))
    np.testing.assert_array_equal(first, again)
    assert sum(fmt in r.getMessage() for r in caplog.records) == 1


def test_the_tables_follow_swscales_bilinear_filter():
    index, weight = yuvgraph.taps(8, 4)  # halving: a tent of radius 2 on pixel centres 0.5, 2.5, 4.5, 6.5
    assert index.shape == weight.shape and np.allclose(weight.sum(axis=1), 1)
    centre = (index * weight).sum(axis=1)
    assert np.allclose(centre[1:3], [2.5, 4.5])
    index, weight = yuvgraph.taps(4, 8)  # doubling: two taps, linear interpolation
    assert np.allclose((index * weight).sum(axis=1)[2:6], [0.75, 1.25, 1.75, 2.25])
    assert yuvgraph.chroma_siting("h264") == "left" and yuvgraph.chroma_siting("mjpeg") == "center"
    assert yuvgraph.chroma_siting(None) == "center"
