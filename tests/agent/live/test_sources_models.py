"""A camera that feeds several models (fusion) and a flow model's camera: one decoding thread, a clip buffer per
model (a flow buffer for flow models), each clip named by its model, the newest clip of each model pending."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.config import CameraConfig, SourceConfig
from agent.live.clips import Clip, ClipBuffer
from agent.live.flowclips import FlowBuffer, FlowClip
from agent.live.sources import Camera
from agent.metrics import Metrics
from agent.spec import ModelSpec
from tests.videos import pattern_video

pytest.importorskip("cv2")
pytestmark = pytest.mark.timeout(120)


def spec(inputs: list[dict], channels: int = 3) -> ModelSpec:
    return ModelSpec(
        arch="test",
        labels=["a", "b"],
        inputs=inputs,
        size=32,
        resize_short=40,
        mean=(0,) * channels,
        std=(1,) * channels,
        source={"exported_by": "tests"},
    )


RGB = spec([{"name": "clip", "frames": 4, "stride_s": 0.25}])
FLOW = spec(
    [{"name": "clip", "frames": 3, "stride_s": 0.4, "modality": "flow",
      "flow": {"method": "farneback", "pairs": 2, "step_s": 1 / 15}}],
    channels=2,
)  # fmt: skip


def config(path, **kw) -> SourceConfig:
    return SourceConfig(name="cam", url=str(path), realtime=False, every_s=0.5, stall_s=5.0, **kw)


def clips_of(camera: Camera) -> list[Clip]:
    async def main():
        async with camera:
            return [clip async for clip in camera.clips()]

    return asyncio.run(main())


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return pattern_video(tmp_path_factory.mktemp("models") / "cam.mp4", 4, size="64x48", fps=15)


def test_one_stream_feeds_a_buffer_per_model_and_names_their_clips(video):
    metrics = Metrics()
    camera = Camera(config(video), {"rgb": RGB, "flow": FLOW}, metrics)
    assert isinstance(camera.buffers["rgb"], ClipBuffer) and isinstance(camera.buffers["flow"], FlowBuffer)
    clips = clips_of(camera)
    by_model = {m: [c for c in clips if c.model == m] for m in ("rgb", "flow")}
    alone = {m: [c for c in clips_of(Camera(config(video), one, Metrics())) if c is not None] for m, one in
             (("rgb", RGB), ("flow", FLOW))}  # fmt: skip
    for model in ("rgb", "flow"):  # a file paced by its consumer: every clip of each model, as when alone
        assert [c.end for c in by_model[model]] == [c.end for c in alone[model]] and by_model[model]
        assert all(c.model is None for c in alone[model])
    assert all(c.inputs["clip"].shape == (4, 32, 32, 3) for c in by_model["rgb"])
    flow = by_model["flow"][0]
    assert isinstance(flow, FlowClip) and flow.inputs == {}
    assert [len(chain) for chain in flow.chains] == [3, 3, 3] and flow.chains[0][0][1].shape == (40, 53)  # grey
    converted = sum(b.converted for b in camera.buffers.values())
    assert metrics.value("actionstream_frames_sampled_total", camera="cam") == converted


def test_the_newest_clip_of_each_model_waits(video):
    metrics = Metrics()
    camera = Camera(config(video), {"rgb": RGB, "flow": FLOW}, metrics)

    def clip(model: str, seq: int) -> Clip:
        return Clip("cam", seq, {}, 0.0, float(seq), 0.0, model=model)

    async def main():
        for model, seq in (("rgb", 1), ("flow", 2), ("rgb", 3), ("rgb", 4)):
            camera._offer(clip(model, seq))
        return [camera._pending.get_nowait() for _ in range(camera._pending.qsize())]

    waiting = asyncio.run(main())
    assert [(c.model, c.seq) for c in waiting] == [("flow", 2), ("rgb", 4)]
    assert metrics.value("actionstream_frames_dropped_total", camera="cam", reason="stale_clip") == 2


def test_a_flow_models_camera_converts_whole_grey_frames(video):
    camera = Camera(config(video), FLOW, Metrics())
    clips = clips_of(camera)
    assert clips and all(isinstance(c, FlowClip) and c.model is None for c in clips)
    grey = clips[0].chains[-1][-1][1]
    assert grey.dtype == np.uint8 and grey.ndim == 2 and grey.shape == (40, 53)  # resized, not cropped


def test_a_fused_cameras_models_see_its_region_with_the_mask_filled(video):
    """A region and mask apply to every model of the entry: the RGB model's frames are the region resized and
    cropped, the flow model's the region resized (not cropped: its flow is, later), each clip says the region; the
    mask is filled with the RGB model's mean colour and, for the flow model, mid-grey (no motion there)."""
    mask = [[(0.0, 0.0), (1.0, 0.0), (1.0, 0.5), (0.0, 0.5)]]  # the top half of the frame
    entry = CameraConfig(
        name="cam", url=str(video), realtime=False, every_s=0.5, stall_s=5.0, region=(0.0, 0.0, 0.5, 1.0), mask=mask
    )
    clips = clips_of(Camera(entry, {"rgb": RGB, "flow": FLOW}, Metrics()))
    rgb = [c for c in clips if c.model == "rgb"]
    flow = [c for c in clips if c.model == "flow"]
    assert rgb and flow and all(c.region == (0.0, 0.0, 0.5, 1.0) for c in clips)
    assert all(c.inputs["clip"].shape == (4, 32, 32, 3) for c in rgb)  # the 32x48 region: 40x60, cropped to 32
    frames = rgb[0].inputs["clip"]
    assert (frames[:, :10] == 0).all() and (frames[:, -10:] != 0).any()  # RGB's mean is 0 here: the top is masked
    grey = flow[0].chains[-1][-1][1]
    assert grey.shape == (60, 40)  # the region resized to a short side of 40, whole
    assert (grey[:28] == 128).all() and (grey[-28:] != 128).any()
