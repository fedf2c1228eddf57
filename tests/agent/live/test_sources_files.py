"""File sources on real videos: ``Camera`` (decode thread + clip buffer), ``to_model_rgb`` rotation, ``read_clips``.

Expected clips come from ffprobe's timestamps and the buffer's documented rules (``expected_live`` in
test_clips.py), never from the code under test. pytest-asyncio is not installed: each test runs its own loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter

from agent.config import SourceConfig
from agent.frames import to_model_rgb
from agent.live.clips import Clip, ClipBuffer
from agent.live.sources import Camera, FrameSource, hw_unavailable
from agent.metrics import Metrics
from agent.offline import video as video_module
from agent.offline.video import VideoError, frame_times, iter_clips, read_clips
from agent.spec import ModelSpec
from tests import specs
from tests.agent.live.test_clips import expected_live
from tests.specs import I3D, SLOWFAST, TSN
from tests.videos import pattern_video

SIZE, SHORT = 112, 128
DEMO = "mmaction2/demo/demo.mp4"  # 340x256, 28 fps, 280 frames
SKELETON = "mmaction2/demo/demo_skeleton.mp4"  # 1920x1080, 30 fps with a 0.2 s hole: variable frame rate
AVI = "mmaction2/tests/data/test.avi"  # mpeg4 (packed B-frames) in AVI, 25 fps, 164 frames
CORRUPTED = "decord/tests/test_data/corrupted.mp4"
ROTATED = "decord/tests/test_data/video_{}.mov"  # 568x320 coded, display matrix 0/90/180/270

pytestmark = pytest.mark.timeout(120)


def make_spec(inputs: list[dict]) -> ModelSpec:
    return specs.make_spec(inputs, size=SIZE, resize_short=SHORT)


def config(path: Path | str, **kw) -> SourceConfig:
    base = dict(name="cam1", url=str(path), realtime=False, loop=False, every_s=1.0, stall_s=5.0, read_timeout_s=2.0)
    base.update(backoff_initial_s=0.05, backoff_max_s=0.2)
    base.update(kw)
    return SourceConfig(**base)


def ffprobe_times(path: Path, allow_missing: bool = False) -> list[float | None]:
    """Presentation times (s) of every frame in decoding order, as ffprobe reports them (best effort)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=time_base:frame=best_effort_timestamp", "-of", "json", str(path)],
        capture_output=True, check=True, text=True,
    ).stdout  # fmt: skip
    doc = json.loads(out)
    tb = Fraction(doc["streams"][0]["time_base"])
    times = [
        float(int(f["best_effort_timestamp"]) * tb) if "best_effort_timestamp" in f else None for f in doc["frames"]
    ]
    assert allow_missing or None not in times
    return times


def run_camera(cfg: SourceConfig, spec: ModelSpec, *, max_s: float, stop=None):
    """Consume ``camera.clips()`` until it ends, ``stop(clips)`` is true, or ``max_s`` passes.

    Returns (clips, metrics, ended): ``ended`` is True when the iterator finished by itself.
    """
    metrics = Metrics()
    clips = []

    async def main() -> bool:
        async with Camera(cfg, spec, metrics) as camera:

            async def consume() -> bool:
                async for clip in camera.clips():
                    clips.append(clip)
                    if stop is not None and stop(clips):
                        return False
                return True

            try:
                return await asyncio.wait_for(consume(), max_s)
            except TimeoutError:  # distinct classes on Python 3.10
                return False

    ended = asyncio.run(main())
    return clips, metrics, ended


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.value(f"actionstream_{name}", camera="cam1", **labels)


def check_shapes(clip, spec: ModelSpec) -> None:
    assert set(clip.inputs) == {i.name for i in spec.inputs}
    for inp in spec.inputs:
        arr = clip.inputs[inp.name]
        assert arr.dtype == np.uint8 and arr.shape == (inp.frames, SIZE, SIZE, 3), inp.name
    if "slow" in clip.inputs:
        np.testing.assert_array_equal(clip.inputs["slow"], clip.inputs["fast"][:: spec.alpha])


def match_expected(clip, expected: dict) -> tuple:
    """The expected emission (frames, end slot, anchor) whose frames start and end where ``clip`` does."""
    hits = [e for e in expected if abs(e[0] - clip.start) < 1e-9 and abs(e[1] - clip.end) < 1e-9]
    assert len(hits) == 1, f"clip {clip.start}..{clip.end} is none of the expected {sorted(expected)}"
    return expected[hits[0]]


def expected_clips(inputs: list[dict], times: list[float], every_s: float):
    emits, converted, restarts, dropped = expected_live(inputs, times, every_s)
    fine = min(inputs, key=lambda i: i["stride_s"])["name"]
    by_span = {(times[w[fine][0]], times[w[fine][-1]]): (w, slot, anchor) for w, slot, anchor in emits.values()}
    return by_span, converted, restarts, dropped


# -- Camera on real files ---------------------------------------------------------------------------------------


def test_demo_every_frame_decoded_and_clips_match_the_rules(shared_data):
    path = shared_data / DEMO
    spec = make_spec(SLOWFAST)
    times = ffprobe_times(path)
    assert len(times) == 280
    expected, converted, _, _ = expected_clips(SLOWFAST, times, 1.0)
    assert len(expected) == 8

    clips, metrics, ended = run_camera(config(path), spec, max_s=30)

    assert ended, "clips() must end after a non-looping file"
    assert value(metrics, "frames_decoded_total") == 280
    assert value(metrics, "frames_sampled_total") == len(converted) < 280
    assert value(metrics, "frames_dropped_total", reason="out_of_order") == 0
    assert value(metrics, "stream_up") == 0  # the file is over
    assert clips, "no clip from a 10 s file"
    # a file played as fast as it decodes waits for its consumer: every clip the buffer made, none replaced
    assert len(clips) == len(expected) and value(metrics, "frames_dropped_total", reason="stale_clip") == 0
    assert [c.seq for c in clips] == sorted({c.seq for c in clips})
    assert clips[-1].end == pytest.approx(max(e for _, e in expected), abs=1e-9)
    received = [c.received_at for c in clips]
    assert received == sorted(received) and abs(received[-1] - time.time()) < 60
    stride = SLOWFAST[1]["stride_s"]
    ends = []
    for clip in clips:
        assert clip.camera == "cam1"
        check_shapes(clip, spec)
        _, slot, anchor = match_expected(clip, expected)
        ends.append(anchor + slot * stride)
    # the live clips hold exactly the pixels of the offline clips ending at the same grid instants
    offline = read_clips(path, spec, ends=ends)
    for live, off in zip(clips, offline, strict=True):
        for name in live.inputs:
            np.testing.assert_array_equal(live.inputs[name], off.inputs[name])


def test_vfr_1080p_clips_assemble(shared_data):
    path = shared_data / SKELETON
    spec = make_spec(I3D)
    times = ffprobe_times(path)
    gaps = np.diff(times)
    assert gaps.max() > 0.15 and gaps.min() < 0.04  # it really is variable frame rate
    expected, converted, _, _ = expected_clips(I3D, times, 0.2)
    assert len(expected) == 2  # slots 31 (2.07 s) and 36 (2.4 s: slot 34 falls in the hole, 2.2 s - 2.4 s)

    clips, metrics, ended = run_camera(config(path, every_s=0.2), spec, max_s=30)

    assert ended and clips
    assert value(metrics, "frames_decoded_total") == len(times) == 72
    assert value(metrics, "frames_sampled_total") == len(converted)
    stride = I3D[0]["stride_s"]
    for clip in clips:
        check_shapes(clip, spec)
        match_expected(clip, expected)
        # 31 strides between the oldest and newest instants; each frame lies at most one frame gap before its instant
        assert spec.span_s - stride - gaps.max() - 1e-9 <= clip.end - clip.start <= spec.span_s + 1e-9


def test_mpeg4_avi_clips_assemble(shared_data):
    path = shared_data / AVI
    spec = make_spec(I3D)
    clips, metrics, ended = run_camera(config(path), spec, max_s=30)
    assert ended and clips
    assert value(metrics, "frames_decoded_total") == 164
    for clip in clips:
        check_shapes(clip, spec)
        # 31 strides between the oldest and newest instants, each frame at most 2 frames (0.08 s) before its instant
        assert abs(clip.end - clip.start - 31 * I3D[0]["stride_s"]) <= 0.08 + 1e-9
        assert clip.inputs["clip"].std() > 1  # real picture, not a blank ring


def test_mpeg4_avi_frames_are_not_dropped_as_out_of_order(shared_data):
    """Decoders hand frames over in display order; ffprobe's timestamps for them increase strictly.

    PyAV's ``frame.pts`` for this AVI (packed B-frames) goes 1, 2, 4, 3, 5, 7, 6, ...: a camera reading this file
    must still not throw away a third of its frames as out of order. Like FFmpeg's best-effort timestamp, the
    live source switches to dts once pts has proven faulty, which can cost the one frame that revealed it.
    """
    path = shared_data / AVI
    times = [t for t in ffprobe_times(path, allow_missing=True) if t is not None]  # ffprobe: N/A for the last
    assert len(times) >= 163 and all(b > a for a, b in zip(times, times[1:], strict=False))
    _, metrics, ended = run_camera(config(path), make_spec(I3D), max_s=30)
    assert ended
    assert value(metrics, "frames_dropped_total", reason="out_of_order") <= 1


def test_mpeg4_avi_frame_times_increase(shared_data):
    """``frame_times`` (decoding order) of a file whose frames come out in display order must increase."""
    times = frame_times(shared_data / AVI)
    assert len(times) == 164
    assert np.all(np.diff(times) > 0), f"not increasing at frames {np.nonzero(np.diff(times) <= 0)[0][:5].tolist()}"


def test_looping_file_stream_time_keeps_increasing(shared_data):
    path = shared_data / DEMO
    spec = make_spec(SLOWFAST)
    clips, metrics, ended = run_camera(config(path, loop=True), spec, max_s=40, stop=lambda cs: cs[-1].end > 25.0)
    assert not ended
    assert clips[-1].end > 25.0, "a looping 10 s file must keep producing clips past its length"
    assert value(metrics, "frames_decoded_total") >= 2 * 280
    ends = [c.end for c in clips]
    starts = [c.start for c in clips]
    assert all(b > a for a, b in zip(ends, ends[1:], strict=False)), "stream time went backwards across a loop"
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    for clip in clips:
        check_shapes(clip, spec)
        assert clip.end - clip.start <= spec.span_s + 1e-9  # never a clip stitched across the loop point
    assert value(metrics, "frames_dropped_total", reason="out_of_order") == 0


def test_a_cancel_arriving_with_a_clip_stops_the_consumer():
    """Stopping the agent cancels each camera's task; a clip landing in the same loop iteration must not swallow
    that cancel (Python 3.11's wait_for did: the task ran on and the agent never stopped)."""
    camera = Camera(config("/nonexistent.mp4"), make_spec(SLOWFAST), Metrics())  # never entered: no thread
    clip = Clip(camera="cam1", seq=1, inputs={}, start=0.0, end=1.0, received_at=0.0)
    got = []

    async def consume():
        async for c in camera.clips():
            got.append(c)

    async def scenario() -> bool:
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)  # waiting for a clip
        camera._offer(clip)  # as the source thread's call_soon_threadsafe does
        await asyncio.sleep(0)  # the queue hands the clip over...
        task.cancel()  # ...as the stop arrives
        done, _ = await asyncio.wait([task], timeout=2)
        return task in done and task.cancelled()

    assert asyncio.run(scenario()), "the camera's task ignored the cancel"


def test_realtime_file_paces_at_file_rate(shared_data):
    path = shared_data / DEMO  # 28 fps
    metrics = Metrics()
    seen = {}

    async def main() -> None:
        async with Camera(config(path, realtime=True), make_spec(SLOWFAST), metrics):
            await asyncio.sleep(0.5)
            first = value(metrics, "frames_decoded_total")
            seen["up"] = value(metrics, "stream_up")
            t0 = time.monotonic()
            await asyncio.sleep(2.0)
            seen["frames"] = value(metrics, "frames_decoded_total") - first
            seen["wall"] = time.monotonic() - t0
            seen["exit_from"] = time.monotonic()
        seen["exit_s"] = time.monotonic() - seen["exit_from"]

    asyncio.run(main())
    assert seen["up"] == 1
    decoded_s = seen["frames"] / 28
    assert 0.5 * seen["wall"] <= decoded_s <= 1.75 * seen["wall"], seen
    assert seen["exit_s"] < 3.0, "leaving the context must stop a paced source promptly"
    assert value(metrics, "stream_up") == 0


def test_corrupted_file_does_not_break_the_camera(shared_data):
    path = shared_data / CORRUPTED
    spec = make_spec(SLOWFAST)
    clips, metrics, _ = run_camera(config(path), spec, max_s=10)  # must not raise
    decoded = value(metrics, "frames_decoded_total")
    assert 0 < decoded <= 50
    for clip in clips:
        check_shapes(clip, spec)
    # and the process keeps working: a good file right after
    good, metrics2, ended = run_camera(config(shared_data / DEMO), spec, max_s=30)
    assert ended and good and value(metrics2, "frames_decoded_total") == 280


@pytest.fixture
def random_file(tmp_path: Path) -> Path:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(1234).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    return path


def test_random_bytes_camera_retries_without_raising(random_file, shared_data, caplog):
    spec = make_spec(SLOWFAST)
    caplog.set_level(logging.WARNING, logger="actionstream.sources")
    t0 = time.monotonic()
    clips, metrics, ended = run_camera(config(random_file), spec, max_s=1.5)  # must not raise
    assert time.monotonic() - t0 < 6, "leaving the context must stop a retrying source promptly"
    assert clips == [] and not ended
    assert value(metrics, "frames_decoded_total") == 0
    assert value(metrics, "stream_up") == 0
    retries = [r for r in caplog.records if "reconnect attempt" in r.getMessage() and "cam1" in r.getMessage()]
    assert len(retries) >= 2, "an unreadable file is retried with backoff, and said so"
    good, metrics2, ended = run_camera(config(shared_data / DEMO), spec, max_s=30)
    assert ended and good


# -- offline reading --------------------------------------------------------------------------------------------


def test_iter_clips_is_one_decoding_pass_with_the_same_clips(h264_file, monkeypatch):
    """``infer`` over many windows decodes the file once more after the timestamps (not once per batch), and each
    window is the clip ``read_clips`` gives for it alone."""
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    times = frame_times(h264_file)
    ends = [float(e) for e in np.arange(0.8, float(times.max()), 0.1)]
    alone = {end: read_clips(h264_file, spec, [end])[0] for end in ends}
    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: opened.append(a[0]) or real_open(*a, **kw))
    clips = list(iter_clips(h264_file, spec, ends, times))
    assert len(opened) == 1 and len(clips) == len(ends) >= 10
    for end, clip in zip(ends, clips, strict=True):
        assert clip.end == end
        np.testing.assert_array_equal(clip.inputs["clip"], alone[end].inputs["clip"])


class _NoDecode:
    """A container whose frames must not be decoded (anything else passes through)."""

    def __init__(self, container) -> None:
        self.container = container

    def decode(self, *a, **kw):
        raise AssertionError("frame_times decoded the file")

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.container.__exit__(*exc)


@pytest.mark.parametrize("name", [DEMO, SKELETON, ROTATED.format(90)])
def test_frame_times_come_from_the_packets_and_equal_a_decoding_pass(shared_data, name, monkeypatch):
    path = shared_data / name
    decoded = frame_times(path, decode=True)
    real_open = video_module._open
    monkeypatch.setattr(video_module, "_open", lambda p: _NoDecode(real_open(p)))
    np.testing.assert_array_equal(frame_times(path), decoded)


def _clips_equal(a, b) -> None:
    assert [c.end for c in a] == [c.end for c in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.inputs["clip"], y.inputs["clip"])


def test_iter_clips_plans_again_when_a_frame_is_not_where_its_packet_said(shared_data):
    """Frame 200 promised just after frame 199: the clip ending between them waits for it, decoding contradicts the
    promise, and the rest is planned again from a decoding pass. Every clip is the one the decoder's own times
    give (that clip takes frame 199), none is repeated or lost."""
    path = shared_data / DEMO
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    decoded = frame_times(path, decode=True)
    promised = decoded.copy()
    promised[200] = decoded[199] + 0.001  # still in order, so only decoding can tell
    ends = sorted([float(e) for e in np.arange(decoded[0] + 0.7, decoded[-1], 0.25)] + [float(decoded[199] + 0.002)])
    _clips_equal(list(iter_clips(path, spec, ends, promised)), list(iter_clips(path, spec, ends, decoded)))


def test_iter_clips_refuses_to_go_on_when_clips_already_given_were_wrong(shared_data):
    """Promised times with a 0.5 s hole from frame 100: the clip ending inside it is given from frames before the
    hole; decoding frame 100 shows that clip should have used it, and the error says so rather than go on."""
    path = shared_data / DEMO
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    decoded = frame_times(path, decode=True)
    promised = decoded.copy()
    promised[100:] += 0.5
    ends = [float(decoded[100] + 0.3), float(decoded[200])]
    clips = iter_clips(path, spec, ends, promised)
    assert next(clips).end == ends[0]
    with pytest.raises(VideoError) as err:
        next(clips)
    assert str(path) in str(err.value) and "already" in str(err.value)


def test_iter_clips_on_a_damaged_file_gives_its_decodable_part(shared_data, caplog):
    """corrupted.mp4 has 50 packets but only its first 28 frames decode: windows planned over the packets end at
    the last decodable frame, with a warning naming the file, and match the decoder's own plan."""
    path = shared_data / CORRUPTED
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    promised, decoded = frame_times(path), frame_times(path, decode=True)
    assert len(promised) == 50 and len(decoded) == 28
    ends = [float(e) for e in np.arange(0.6, promised.max() + 1e-6, 0.1)]
    caplog.set_level(logging.WARNING, logger="actionstream.video")
    clips = list(iter_clips(path, spec, ends, promised))
    decodable = [e for e in ends if e <= decoded.max() + 1e-6]
    assert len(decodable) < len(ends)
    _clips_equal(clips, list(iter_clips(path, spec, decodable, decoded)))
    assert any(str(path) in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)


def test_read_clips_random_bytes_names_the_file(random_file):
    spec = make_spec(TSN)
    with pytest.raises(VideoError) as err:
        read_clips(random_file, spec)
    assert str(random_file) in str(err.value)
    with pytest.raises(VideoError) as err:
        frame_times(random_file)
    assert str(random_file) in str(err.value)


def test_read_clips_missing_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(VideoError) as err:
        read_clips(missing, make_spec(TSN))
    assert str(missing) in str(err.value)


def test_read_clips_audio_only_file_names_the_file(tmp_path):
    import wave

    path = tmp_path / "sound.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    with pytest.raises(VideoError) as err:
        read_clips(path, make_spec(TSN))
    assert str(path) in str(err.value)


def test_read_clips_default_end_and_frames(shared_data):
    path = shared_data / DEMO
    times = ffprobe_times(path)
    np.testing.assert_allclose(frame_times(path), times, atol=1e-9)
    spec = make_spec(SLOWFAST)
    [clip] = read_clips(path, spec)
    assert clip.end == pytest.approx(times[-1])
    check_shapes(clip, spec)
    # the clip's newest frame is the file's last frame, converted as the agent converts it
    with av.open(str(path)) as container:
        *_, last = container.decode(video=0)
        np.testing.assert_array_equal(clip.inputs["fast"][-1], to_model_rgb(last, resize_short=SHORT, size=SIZE))


def test_one_decoder_thread_gives_the_same_clips(shared_data):
    """``decode_threads: 1`` (the default with many cameras) changes who decodes, not what comes out."""
    path = shared_data / DEMO
    spec = make_spec(SLOWFAST)
    default, _, _ = run_camera(config(path), spec, max_s=30)
    single, metrics, _ = run_camera(config(path, decode_threads=1), spec, max_s=30)
    assert value(metrics, "frames_decoded_total") == 280
    by_span = {(c.start, c.end): c for c in default}
    same = [(c, by_span[(c.start, c.end)]) for c in single if (c.start, c.end) in by_span]
    assert same, "the two runs share no clip"
    for a, b in same:
        for name in a.inputs:
            np.testing.assert_array_equal(a.inputs[name], b.inputs[name])


@pytest.fixture(scope="module")
def h264_file(tmp_path_factory) -> Path:
    """Two seconds of ffmpeg's test pattern, H.264 160x120 at 15 fps (what NVDEC would take)."""
    return pattern_video(tmp_path_factory.mktemp("h264") / "testsrc.mp4", 2, "160x120", 15, "testsrc")


def test_resize_to_is_honoured_live_and_offline(h264_file):
    """A spec with ``resize_to`` (S3D's fixed resize): cameras and ``read_clips`` give the same frames, each the
    frame resized to exactly (width, height) and centre-cropped, not its short side resized."""
    spec = ModelSpec.model_validate(make_spec(BURST_SPEC).model_dump() | {"resize_to": (150, 120)})
    cfg = config(h264_file, every_s=0.5)
    clips, *_ = run_camera(cfg, spec, max_s=30)
    assert clips
    offline = read_clips(h264_file, spec, [c.end for c in clips])
    for live, again in zip(clips, offline, strict=True):
        np.testing.assert_array_equal(live.inputs["clip"], again.inputs["clip"])
    with av.open(str(h264_file)) as container:
        *_, last = container.decode(video=0)
    [clip] = read_clips(h264_file, spec)
    y0, x0 = (120 - SIZE) // 2, (150 - SIZE) // 2
    expected = to_model_rgb(last, resize_short=SIZE, size=None, resize_to=(150, 120))[y0 : y0 + SIZE, x0 : x0 + SIZE]
    np.testing.assert_array_equal(clip.inputs["clip"][-1], expected)
    assert not np.array_equal(expected, to_model_rgb(last, resize_short=SHORT, size=SIZE))


@pytest.mark.parametrize("realtime", [False, True])
def test_a_slow_consumer_gets_every_clip_of_a_fast_file_and_the_newest_of_a_live_one(h264_file, realtime):
    """``realtime: false`` has no live edge: the decoder waits for the consumer (no clip lost). Played as if live,
    the newest clip wins and the replaced ones are counted as ``stale_clip``."""
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    expected, *_ = expected_clips([{"name": "clip", "frames": 4, "stride_s": 0.2}], ffprobe_times(h264_file), 0.2)
    pause = 0.3 if realtime else 0.05  # per clip, blocking the event loop: slower than the clips come
    clips, metrics, ended = run_camera(config(h264_file, every_s=0.2, realtime=realtime), spec, max_s=30,
                                       stop=lambda _: time.sleep(pause))  # fmt: skip
    stale = value(metrics, "frames_dropped_total", reason="stale_clip")
    assert ended and len(expected) >= 6
    assert len(clips) + stale == len(expected)
    if realtime:
        assert stale > 0 and clips[-1].seq == len(expected)
    else:
        assert stale == 0 and [c.seq for c in clips] == list(range(1, len(expected) + 1))


def test_a_looping_file_starting_over_is_not_a_reconnect(h264_file):
    """Alerts fire on reconnects: a 2 s file looped for 5 s must not count one every 2 s."""
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    clips, metrics, _ = run_camera(config(h264_file, loop=True, realtime=True, every_s=0.2), spec, max_s=5)
    assert clips and value(metrics, "frames_decoded_total") >= 2 * 30  # went round at least twice
    assert value(metrics, "stream_reconnects_total") == 0


@pytest.mark.parametrize("hwaccel", ["cuda", "auto"])
def test_hwaccel_decodes_the_same_clips_or_falls_back_once(h264_file, hwaccel, caplog):
    """NVDEC where it works, software where not (here: no GPU): every frame decoded, the same pixels, and an
    explicit ``cuda`` that cannot be had is said once per camera as a warning (``auto`` says it as info)."""
    caplog.set_level(logging.INFO, logger="actionstream.sources")
    spec = make_spec([{"name": "clip", "frames": 4, "stride_s": 0.2}])
    software, _, _ = run_camera(config(h264_file, every_s=0.2), spec, max_s=30)
    hw, _, _ = run_camera(config(h264_file, every_s=0.2, hwaccel=hwaccel, loop=True), spec, max_s=30,
                                stop=lambda clips: len(clips) >= 2 * len(software))  # fmt: skip
    assert len(software) >= 5 and len(hw) == 2 * len(software)  # the second half from the file's second round
    for a, b in zip(software, hw, strict=False):  # the first loop of the file: the same clips
        assert (a.start, a.end) == (b.start, b.end)
        np.testing.assert_array_equal(a.inputs["clip"], b.inputs["clip"])
    said = [r for r in caplog.records if "cam1" in r.getMessage() and "decod" in r.getMessage()]
    reason = hw_unavailable("cuda")
    if reason is None:
        assert [r.getMessage() for r in said] == ["camera cam1: decoding on cuda"]
    else:
        assert len(said) == 1, "once per camera, not once per (re)open"
        assert said[0].levelno == (logging.WARNING if hwaccel == "cuda" else logging.INFO)
        assert f"hwaccel {hwaccel}: cuda decoding unavailable ({reason}); decoding in software" in said[0].getMessage()


def test_one_reformatter_for_many_frames_gives_the_fresh_conversions():
    """A camera keeps one single-threaded swscale context; frames of another size (a reconnect at a new resolution)
    still convert exactly as a fresh, slice-threaded context would."""
    rng = np.random.default_rng(0)
    reformatter = VideoReformatter()
    for w, h in [(160, 120), (320, 240), (160, 120), (120, 160)]:
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        kept = to_model_rgb(frame, resize_short=SHORT, size=SIZE, reformatter=reformatter, threads=1)  # as cameras
        np.testing.assert_array_equal(kept, to_model_rgb(frame, resize_short=SHORT, size=SIZE))  # fresh, sliced
        assert kept.shape == (SIZE, SIZE, 3)


# -- rotation ---------------------------------------------------------------------------------------------------


def ffmpeg_ppm(path: Path, scale: tuple[int, int] | None = None) -> np.ndarray:
    """First frame as ffmpeg shows it (autorotated), optionally scaled after the rotation."""
    vf = ["-vf", f"scale={scale[0]}:{scale[1]}:flags=bilinear"] if scale else []
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", *vf, "-f", "image2pipe", "-vcodec", "ppm", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    magic, dims, maxval, data = raw.split(b"\n", 3)
    assert magic == b"P6" and maxval == b"255"
    w, h = map(int, dims.split())
    return np.frombuffer(data[: w * h * 3], np.uint8).reshape(h, w, 3)


@pytest.mark.parametrize("angle", [0, 90, 180, 270])
@pytest.mark.parametrize(("short", "size"), [(64, 64), (128, 112)])
def test_to_model_rgb_is_upright_like_ffmpeg(shared_data, angle, short, size):
    path = shared_data / ROTATED.format(angle)
    upright = ffmpeg_ppm(path)
    h, w = upright.shape[:2]
    assert (w, h) == ((320, 568) if angle in (90, 270) else (568, 320))
    scale = short / min(w, h)
    rw, rh = int(w * scale + 0.5), int(h * scale + 0.5)
    ref = ffmpeg_ppm(path, (rw, rh))
    y0, x0 = (rh - size) // 2, (rw - size) // 2
    ref = ref[y0 : y0 + size, x0 : x0 + size].astype(np.int16)

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
    out = to_model_rgb(frame, resize_short=short, size=size)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    mad = [float(np.abs(out.astype(np.int16) - np.rot90(ref, k)).mean()) for k in range(4)]
    # a square centre crop of a frame turned the wrong way is the right crop turned: compare with those
    assert mad[0] < 4, mad
    assert mad[0] < min(mad[1:]) / 3, mad


# -- frames no clip waits for, read in bursts (read_burst_s) -----------------------------------------------------

BURST_SPEC = [{"name": "clip", "frames": 4, "stride_s": 0.2}]  # at 15 fps: a clip every 9 frames with every_s 0.6


def hand_ons(cfg: SourceConfig, *, until_s: float = 20.0) -> list[tuple[float, float, float, float, bool]]:
    """(stream time, monotonic and UNIX time handed on, received at (UNIX), ends a clip) for each frame a
    FrameSource hands to its clip buffer, until the source ends or ``until_s`` passes."""
    buffer = ClipBuffer(make_spec(BURST_SPEC), lambda frame: np.zeros((SIZE, SIZE, 3), np.uint8), every_s=cfg.every_s)
    records = []

    def sink(frame, t, received, received_mono):
        records.append((t, time.monotonic(), time.time(), received, buffer.push(frame, t, received) is not None))

    source = FrameSource(cfg, sink, Metrics(), on_reset=buffer.reset, next_clip_t=buffer.next_clip_t)
    source.start()
    source.join(until_s)
    source.stop()
    source.join(5)
    return records


def wake_ups(records) -> int:
    """Times the source's thread came to hand frames on: frames handed on within 10 ms of the one before share one."""
    times = sorted(handed for _, handed, *_ in records)
    return 1 + sum(b - a > 0.01 for a, b in zip(times, times[1:], strict=False))


def test_a_realtime_file_hands_on_frames_no_clip_waits_for_in_bursts_and_no_clip_later(h264_file):
    """Played as if live, frames that no clip waits for yet are handed on in bursts at most ``read_burst_s`` late;
    the frame each clip ends on comes when it is due, every frame counts as received when it was due, and the clips
    are those of reading each frame as it comes."""
    runs = {}
    for burst in (0.0, 0.3):
        records = hand_ons(config(h264_file, realtime=True, every_s=0.6, read_burst_s=burst))
        t0, handed0, _, received0, _ = records[0]
        late = [(handed - handed0) - (t - t0) for t, handed, *_ in records]
        assert min(late) > -0.002, "a frame was handed on before it was due"
        for t, _, _, received, _ in records:
            assert abs((received - received0) - (t - t0)) < 0.02, "a frame must count as received when it was due"
        assert max(lag for (*_, ends), lag in zip(records, late, strict=True) if ends) < 0.05, "a clip came late"
        assert max(late) < burst + 0.05
        runs[burst] = records
    assert len(runs[0.0]) == len(runs[0.3]) == 30
    assert [t for t, *_, ends in runs[0.0] if ends] == [t for t, *_, ends in runs[0.3] if ends] != []
    assert wake_ups(runs[0.0]) >= 25 and wake_ups(runs[0.3]) <= 12, (wake_ups(runs[0.0]), wake_ups(runs[0.3]))


def test_a_live_stream_is_read_in_bursts_and_each_frame_counts_as_received_when_it_came(h264_file, tmp_path):
    """A live stream (a pipe fed at its frame rate by ffmpeg): frames no clip waits for stay in the pipe for up to
    ``read_burst_s`` and are read in one go; such a frame counts as received when it came by the stream's clock,
    and the frame each clip ends on is read as it comes."""
    runs = {}
    for burst in (0.0, 0.3):
        fifo = tmp_path / f"live-{burst}.ts"
        os.mkfifo(fifo)
        feeder = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-stream_loop", "4", "-i", str(h264_file), "-c", "copy",
             "-flush_packets", "1", "-f", "mpegts", "-y", str(fifo)],
        )  # fmt: skip
        try:
            records = hand_ons(config(fifo, every_s=0.6, read_burst_s=burst), until_s=6)  # the feed lasts 10 s
        finally:
            feeder.kill()
            feeder.wait()
        records = [r for r in records if r[1] - records[0][1] > 1.0]  # past ffmpeg's first burst and the probing
        assert len(records) > 40
        runs[burst] = records
    for burst, records in runs.items():
        offsets = [received - t for t, _, _, received, _ in records]
        assert max(offsets) - min(offsets) < 0.06, f"burst {burst}: received does not follow the stream's clock"
        assert all(received <= handed + 0.002 for _, _, handed, received, _ in records)
        read_late = sorted(handed - received for _, _, handed, received, ends in records if ends)
        assert len(read_late) >= 4 and read_late[len(read_late) // 2] < 0.02, f"burst {burst}: clips' frames read late"
    held = [handed - received for _, _, handed, received, ends in runs[0.3] if not ends]
    assert max(held) > 0.15, "frames no clip waits for should have stayed in the pipe"
    assert wake_ups(runs[0.0]) > 0.8 * len(runs[0.0]) and wake_ups(runs[0.3]) < 0.5 * len(runs[0.3])
