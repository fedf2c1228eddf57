"""agent.live.flowclips: a flow model's sampling live (the same pairs as offline, only their frames converted), and
the flow computed in the camera's flow thread with its cost in the metrics."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from agent.flow import FlowMaker, chain_indices
from agent.live.clips import Clip
from agent.live.flowclips import FlowBuffer, FlowClip, FlowStage
from agent.metrics import Metrics
from agent.spec import ModelSpec

pytest.importorskip("cv2")


def flow_spec(frames=3, stride_s=0.5, pairs=5, method="farneback", size=16) -> ModelSpec:
    flow = {"method": method, "pairs": pairs, "step_s": 1 / 30}
    return ModelSpec(
        arch="test",
        labels=["a", "b"],
        inputs=[{"name": "clip", "frames": frames, "stride_s": stride_s, "modality": "flow", "flow": flow}],
        size=size,
        resize_short=size,
        mean=(128, 128),
        std=(128, 128),
        source={"exported_by": "tests"},
    )


class Frame:
    """A decoded frame stand-in: its index, and its picture (random RGB)."""

    def __init__(self, index: int, shape=(20, 24, 3)) -> None:
        self.index = index
        self.rgb = np.random.default_rng(index).integers(0, 255, shape, dtype=np.uint8)


def play(spec, pts, every_s=0.5, shapes=None):
    buffer = FlowBuffer(spec, lambda f: f.rgb, every_s=every_s)
    clips = []
    for i, t in enumerate(pts):
        frame = Frame(i, shapes[i] if shapes else (20, 24, 3))
        clip = buffer.push(frame, float(t), 1000.0 + t, 5.0 + t)
        if clip is not None:
            clips.append((i, clip))
    return buffer, clips


SPECS = {"tsn 5x1x3": (3, 0.5, 5), "slowonly 16x4": (16, 4 / 30, 1), "2 pairs": (4, 0.1, 2)}


@pytest.mark.parametrize("fps", [30, 25, 60, 50, 24, 15])
@pytest.mark.parametrize("sampling", list(SPECS))
def test_live_chains_are_the_offline_chains_of_the_grid(sampling, fps):
    frames, stride, pairs = SPECS[sampling]
    spec = flow_spec(frames, stride, pairs)
    pts = np.arange(5 * fps) / fps  # 5 s
    buffer, clips = play(spec, pts)
    assert len(clips) >= 4
    for i, clip in clips:
        assert isinstance(clip, FlowClip) and clip.inputs == {}
        live = np.array([[np.searchsorted(pts, t) for t, _ in chain] for chain in clip.chains])
        first_instant = buffer.anchor + np.round((pts[live[0, 0]] - buffer.anchor) / stride + 0.5 - 1e-9) * stride
        bases = first_instant + np.arange(frames) * stride
        for candidate in (bases, bases - stride):  # the instant is at or after the chain's first frame
            if (chain_indices(spec.inputs[0], pts, bases=candidate) == live).all():
                break
        else:
            pytest.fail(f"clip {clip.seq}: {live.tolist()} is no offline chain")
        assert i == live[-1, -1] and clip.end == pts[i] and clip.start == pts[live[0, 0]]  # ends at its newest frame
        assert clip.received_at == 1000.0 + pts[i] and clip.received_mono == 5.0 + pts[i]
        assert clip.frame is not None and clip.frame.index == i  # the newest decoded frame (evidence snapshots)
        assert all(g.shape == (20, 24) for _, g in clip.chains[0])  # grey, whole frame (cropped after the flow)
    assert np.diff([c.end for _, c in clips]).min() >= 0.5 - 1 / fps  # every_s


def test_only_chain_frames_are_converted():
    spec = flow_spec(3, 1.0, 2)  # 3 instants 1 s apart, 2 pairs each: 9 of every 30 frames at most
    buffer, clips = play(spec, np.arange(300) / 30, every_s=1.0)
    assert len(clips) == 8
    assert buffer.converted == 3 * 10  # 10 instants, 3 frames each


def test_flow_at_25_fps_pairs_the_next_frame_and_rescales():
    spec = flow_spec(2, 0.5, 1)
    pts = np.arange(60) / 25
    _, clips = play(spec, pts)
    (t0, _), (t1, _) = clips[0][1].chains[0]
    assert t1 - t0 == pytest.approx(0.04)


def test_timestamp_breaks_restart_and_small_steps_back_are_dropped():
    spec = flow_spec(3, 0.5, 2)
    pts = list(np.arange(60) / 30) + [1.0] + list(100 + np.arange(60) / 30)  # a step back (dropped), a jump
    buffer, clips = play(spec, pts)
    assert buffer.dropped == 1 and buffer.restarts == 1
    assert all(c.start >= 100 or c.end < 2 for _, c in clips)  # no clip spans the jump


def test_a_new_frame_size_starts_over():
    spec = flow_spec(2, 0.2, 1)
    shapes = [(20, 24, 3)] * 40 + [(30, 40, 3)] * 40
    _, clips = play(spec, np.arange(80) / 30, every_s=0.2, shapes=shapes)
    sizes = [{g.shape for chain in c.chains for _, g in chain} for _, c in clips]
    assert all(len(s) == 1 for s in sizes) and {(30, 40)} in sizes and {(20, 24)} in sizes


def test_the_stage_computes_flow_in_its_thread_and_times_each_field():
    spec = flow_spec(3, 0.5, 2, size=16)
    _, clips = play(spec, np.arange(90) / 30)
    metrics = Metrics()
    stage = FlowStage(spec, "cam", metrics)
    threads: list[str] = []
    maker_call = stage.maker.__call__

    def spy(chains):
        threads.append(threading.current_thread().name)
        return maker_call(chains)

    stage.maker = spy  # type: ignore[assignment]

    async def main():
        plain = Clip("cam", 1, {"clip": np.zeros((1,))}, 0.0, 1.0, 0.0)
        assert await stage.ready(plain) is plain
        return [await stage.ready(c) for _, c in clips[:2]]

    done = asyncio.run(main())
    stage.close()
    assert threads == ["flow-cam_0", "flow-cam_0"]
    for (_, pending), clip in zip(clips, done, strict=False):
        assert type(clip) is Clip and clip.inputs["clip"].shape == (6, 16, 16, 2)
        assert (clip.seq, clip.end, clip.frame) == (pending.seq, pending.end, pending.frame)
        np.testing.assert_array_equal(clip.inputs["clip"], FlowMaker(spec)(pending.chains))
    count = metrics.value("actionstream_flow_seconds_count", camera="cam", method="farneback")
    assert count == 6 + 2  # 6 fields, then 2 new ones: the second clip shares 4 with the first (every 0.5 s)
    assert metrics.value("actionstream_flow_seconds_sum", camera="cam", method="farneback") > 0


def test_the_stage_can_use_another_method():
    spec = flow_spec(method="tvl1")
    stage = FlowStage(spec, "cam", Metrics(), method="dis")
    assert stage.method == "dis" and stage.maker.estimator.method == "dis"
    stage.close()
