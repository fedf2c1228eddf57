"""Sampling by presentation time: offline ``sample_indices`` and the live ``ClipBuffer``.

Frames are plain ints; ``convert`` turns frame ``i`` into a uniform image that encodes ``i`` in its three channels,
so every clip can be read back as the exact list of frame indices it holds, and every convert call is recorded.
Expectations are computed here by brute force from the rules of docs/contracts.md (the model file contract) and of
``ClipBuffer``'s documentation, never by calling the code under test.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.live.clips import ClipBuffer, nearest_at_or_before, sample_indices, sample_times
from agent.spec import ModelSpec
from tests import specs
from tests.specs import I3D, SLOWFAST, TSN

EPS = 1e-6
SIZE = 8

STYLES = {"tsn": TSN, "i3d": I3D, "slowfast": SLOWFAST}


def make_spec(inputs: list[dict]) -> ModelSpec:
    return specs.make_spec(inputs, size=SIZE)


def encode(i: int) -> np.ndarray:
    """Frame ``i`` as a uniform image: little-endian base-256 digits of ``i`` in R, G, B."""
    return np.full((SIZE, SIZE, 3), (i % 256, (i // 256) % 256, (i // 65536) % 256), np.uint8)


def decode(images: np.ndarray) -> list[int]:
    """Frame indices of ``[T, size, size, 3]`` images made by :func:`encode` (and check they are intact)."""
    assert images.dtype == np.uint8 and images.shape[1:] == (SIZE, SIZE, 3)
    assert (images == images[:, :1, :1, :]).all(), "a clip image is not one whole converted frame"
    px = images[:, 0, 0, :].astype(np.int64)
    return (px[:, 0] + 256 * px[:, 1] + 65536 * px[:, 2]).tolist()


class Recorder:
    """A ``convert`` that records every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, i: int) -> np.ndarray:
        self.calls.append(i)
        return encode(i)


# -- independent expectations ----------------------------------------------------------------------------------


def finest_of(inputs: list[dict]) -> dict:
    return min(inputs, key=lambda i: i["stride_s"])


def steps_of(inputs: list[dict]) -> dict[str, int]:
    fine = finest_of(inputs)["stride_s"]
    return {i["name"]: max(1, round(i["stride_s"] / fine)) for i in inputs}


def span_of(inputs: list[dict]) -> float:
    return max(i["frames"] * i["stride_s"] for i in inputs)


def newest_at_or_before(pts, candidates, instant: float) -> int:
    """Brute force: the candidate index with the largest pts <= instant (+EPS); the first candidate if none."""
    best = None
    for i in candidates:
        if pts[i] <= instant + EPS and (best is None or pts[i] > pts[best]):
            best = i
    return candidates[0] if best is None else best


def expected_offline(inputs: list[dict], pts, end: float) -> dict[str, list[int]]:
    fine = finest_of(inputs)
    instants = [end - (fine["frames"] - 1 - m) * fine["stride_s"] for m in range(fine["frames"])]
    chosen = [newest_at_or_before(pts, list(range(len(pts))), x) for x in instants]
    steps = steps_of(inputs)
    return {i["name"]: chosen[:: steps[i["name"]]][: i["frames"]] for i in inputs}


def expected_live(inputs: list[dict], pts, every_s: float = 1.0):
    """What ClipBuffer must do for frames ``0..n-1`` pushed with times ``pts``, from its documented rules.

    Returns (emits, converted, restarts, dropped): ``emits[k]`` = (frame ids per input, end slot, anchor) for
    each push ``k`` that must return a clip; ``converted`` = the set of frames chosen by some filled slot.
    """
    fine = finest_of(inputs)
    n_frames, stride = fine["frames"], fine["stride_s"]
    steps = steps_of(inputs)
    span = span_of(inputs)
    every = max(1, round(every_s / stride))
    emits: dict[int, tuple[dict[str, list[int]], int, float]] = {}
    converted: set[int] = set()
    restarts = dropped = 0
    seg: list[int] = []  # frames accepted since the last (re)start; their times increase strictly
    seg_t: list[float] = []
    anchor = None
    filled = -1
    next_emit = n_frames - 1

    def chosen(j: int) -> int:  # newest accepted frame at or before instant j (the anchor frame at worst)
        return seg[bisect.bisect_right(seg_t, anchor + j * stride + EPS) - 1]

    def close_segment() -> None:
        for j in range(filled + 1):
            converted.add(chosen(j))

    for k, t in enumerate(pts):
        if seg:
            prev = pts[seg[-1]]
            if t < prev - span or t - prev > span:
                restarts += 1
                close_segment()
                seg, seg_t, anchor, filled, next_emit = [], [], None, -1, n_frames - 1
            elif t <= prev:
                dropped += 1
                continue
        seg.append(k)
        seg_t.append(t)
        if anchor is None:
            anchor = t
        while anchor + (filled + 1) * stride <= t + EPS:
            filled += 1
        if filled >= next_emit:
            slots = [chosen(j) for j in range(filled - n_frames + 1, filled + 1)]
            emits[k] = ({i["name"]: slots[:: steps[i["name"]]][: i["frames"]] for i in inputs}, filled, anchor)
            next_emit = filled + every
    close_segment()
    return emits, converted, restarts, dropped


def run_live(inputs: list[dict], pts, every_s: float = 1.0):
    """Push frames 0..n-1 at ``pts``; returns (buffer, recorder, {push index: clip}). Every push also checks what a
    camera's thread relies on to read frames in bursts: a frame before ``next_clip_t()`` never completes a clip."""
    rec = Recorder()
    buf = ClipBuffer(make_spec(inputs), rec, camera="cam", every_s=every_s)
    clips = {}
    for k, t in enumerate(pts):
        due = buf.next_clip_t()
        assert (due is None) == (k == 0)
        clip = buf.push(k, float(t), 1000.0 + k)
        if clip is not None:
            assert t >= due - EPS, f"frame {k} (t={t}) completed a clip before the announced {due}"
            clips[k] = clip
    return buf, rec, clips


def check_live(inputs: list[dict], pts, every_s: float = 1.0):
    """Run the buffer and compare every push, clip, conversion and counter with :func:`expected_live`."""
    buf, rec, clips = run_live(inputs, pts, every_s)
    emits, converted, restarts, dropped = expected_live(inputs, pts, every_s)
    assert sorted(clips) == sorted(emits), "clips were returned by the wrong pushes"
    for seq, k in enumerate(sorted(clips), start=1):
        clip, (want, _, _) = clips[k], emits[k]
        got = {name: decode(arr) for name, arr in clip.inputs.items()}
        assert got == want, f"clip returned at push {k} (t={pts[k]})"
        finest = finest_of(inputs)["name"]
        assert clip.start == pytest.approx(pts[want[finest][0]], abs=1e-12)
        assert clip.end == pytest.approx(pts[want[finest][-1]], abs=1e-12)
        assert clip.received_at == 1000.0 + want[finest][-1]
        assert clip.camera == "cam" and clip.seq == seq
    calls = Counter(rec.calls)
    assert all(c == 1 for c in calls.values()), f"frames converted more than once: {calls.most_common(3)}"
    assert set(calls) == converted
    assert buf.converted == len(converted)
    assert (buf.restarts, buf.dropped) == (restarts, dropped)
    return buf, rec, clips, emits


# -- timestamp sequences ----------------------------------------------------------------------------------------


def cfr(n: int, num: int, den: int, start: float = 0.0) -> list[float]:
    """``n`` frames at ``num/den`` s apart (e.g. 1001/30000 for 29.97 fps)."""
    return [start + k * num / den for k in range(n)]


def vfr(n: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return np.concatenate([[0.25], 0.25 + np.cumsum(rng.uniform(0.012, 0.075, n - 1))]).tolist()


SEQUENCES = {
    "25fps": cfr(300, 1, 25),
    "30fps": cfr(300, 1, 30),
    "29.97fps": cfr(300, 1001, 30000),
    "30fps_offset": cfr(300, 1, 30, start=1234.5),
    "vfr": vfr(300, seed=7),
}


# -- offline ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_sample_times_offsets_and_coarse_inputs(style):
    inputs = STYLES[style]
    spec = make_spec(inputs)
    times = sample_times(spec, end=10.0)
    fine = finest_of(inputs)
    assert set(times) == {i["name"] for i in inputs}
    want_fine = [10.0 - (fine["frames"] - 1 - m) * fine["stride_s"] for m in range(fine["frames"])]
    np.testing.assert_allclose(times[fine["name"]], want_fine, atol=1e-9)
    for inp in inputs:
        assert len(times[inp["name"]]) == inp["frames"]
        assert times[inp["name"]][0] == pytest.approx(want_fine[0])  # every input starts at the oldest instant
        np.testing.assert_allclose(np.diff(times[inp["name"]]), inp["stride_s"], atol=1e-3)


def test_nearest_at_or_before_brute_force():
    pts = np.array([0.0, 0.1, 0.2, 0.35, 0.5])
    targets = np.array([-1.0, 0.0, 0.05, 0.1 - 1e-7, 0.1 + 1e-7, 0.2999, 0.35, 0.49, 0.5, 7.0])
    assert nearest_at_or_before(pts, targets).tolist() == [0, 0, 0, 1, 1, 2, 3, 3, 4, 4]


def test_sample_indices_hand_checked_30fps_slowfast():
    pts = np.array(cfr(300, 1, 30))
    got = sample_indices(make_spec(SLOWFAST), pts, end=62 / 30)
    assert got["fast"].tolist() == list(range(0, 63, 2))
    assert got["slow"].tolist() == [0, 16, 32, 48]
    got = sample_indices(make_spec(SLOWFAST), pts)  # default: ends at the newest frame
    assert got["fast"].tolist() == list(range(299 - 62, 300, 2))
    assert got["slow"].tolist() == [237, 253, 269, 285]


def test_sample_indices_hand_checked_25fps_tsn():
    pts = np.array(cfr(300, 1, 25))
    # instants 0.5 s apart ending at 4.0 s: 0.5 s = 12.5 frames, so every other instant falls between frames
    got = sample_indices(make_spec(TSN), pts, end=4.0)
    assert got["clip"].tolist() == [12, 25, 37, 50, 62, 75, 87, 100]


def test_sample_indices_before_the_first_frame_takes_frame_zero():
    pts = np.array(cfr(100, 1, 30, start=5.0))
    got = sample_indices(make_spec(I3D), pts, end=5.5)
    fine = got["clip"].tolist()
    assert fine[:24] == [0] * 24  # instants before 5.0 s
    assert fine[-1] == 15
    assert sample_indices(make_spec(TSN), pts, end=1.0)["clip"].tolist() == [0] * 8


def test_sample_indices_empty_raises():
    with pytest.raises(ValueError):
        sample_indices(make_spec(TSN), np.array([]))


@pytest.mark.parametrize("seq", SEQUENCES)
@pytest.mark.parametrize("style", STYLES)
def test_sample_indices_brute_force(style, seq):
    inputs, pts = STYLES[style], SEQUENCES[seq]
    spec = make_spec(inputs)
    arr = np.array(pts)
    rng = np.random.default_rng(3)
    ends = [*pts[::17], pts[-1], *rng.uniform(pts[0] - 1, pts[-1] + 1, 20)]
    for end in ends:
        got = sample_indices(spec, arr, end=float(end))
        assert {k: v.tolist() for k, v in got.items()} == expected_offline(inputs, pts, float(end)), end


# -- live -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", SEQUENCES)
@pytest.mark.parametrize("style", STYLES)
def test_live_buffer_exact_frames(style, seq):
    inputs, pts = STYLES[style], SEQUENCES[seq]
    buf, rec, clips, emits = check_live(inputs, pts)
    assert len(clips) >= 5
    assert buf.restarts == buf.dropped == 0
    # the clip ending at grid instant J is the offline clip ending at that instant
    spec, arr = make_spec(inputs), np.array(pts)
    for k, clip in clips.items():
        _, end_slot, anchor = emits[k]
        offline = sample_indices(spec, arr, end=anchor + end_slot * finest_of(inputs)["stride_s"])
        assert {n: decode(a) for n, a in clip.inputs.items()} == {n: v.tolist() for n, v in offline.items()}


def test_live_hand_checked_30fps_slowfast():
    buf, rec, clips = run_live(SLOWFAST, cfr(300, 1, 30))
    # first clip when slot 31 (62/30 s, exactly frame 62) is filled; then every 15 slots = 30 frames
    assert sorted(clips) == [62, 92, 122, 152, 182, 212, 242, 272]
    first = clips[62]
    assert decode(first.inputs["fast"]) == list(range(0, 63, 2))
    assert decode(first.inputs["slow"]) == [0, 16, 32, 48]
    assert (first.start, first.received_at) == (0.0, 1062.0)
    assert first.end == pytest.approx(62 / 30)
    assert decode(clips[92].inputs["fast"]) == list(range(30, 93, 2))
    # only the even frames sit on the grid: 150 conversions for 300 frames, each once
    assert buf.converted == 150 and sorted(rec.calls) == list(range(0, 300, 2))


def test_live_hand_checked_25fps_tsn():
    buf, rec, clips = run_live(TSN, cfr(300, 1, 25))
    # slot 7 = 3.5 s lies between frames 87 and 88: it is final when frame 88 arrives
    assert min(clips) == 88
    assert decode(clips[88].inputs["clip"]) == [0, 12, 25, 37, 50, 62, 75, 87]
    assert clips[88].end == pytest.approx(87 / 25)
    # every_s = 1 s = 2 slots: slot 9 = 4.5 s, final at frame 113
    assert sorted(clips)[1] == 113
    assert decode(clips[113].inputs["clip"]) == [25, 37, 50, 62, 75, 87, 100, 112]


@pytest.mark.parametrize("style", STYLES)
def test_live_slow_is_fast_subsampled(style):
    inputs = STYLES[style]
    for pts in SEQUENCES.values():
        _, _, clips = run_live(inputs, pts)
        for clip in clips.values():
            if "slow" in clip.inputs:
                assert clip.inputs["fast"].shape == (32, SIZE, SIZE, 3)
                assert clip.inputs["slow"].shape == (4, SIZE, SIZE, 3)
                np.testing.assert_array_equal(clip.inputs["slow"], clip.inputs["fast"][::8])
            else:
                assert clip.inputs["clip"].shape == (inputs[0]["frames"], SIZE, SIZE, 3)


def test_conversions_tsn_30fps_one_in_fifteen():
    buf, rec, _ = run_live(TSN, cfr(300, 1, 30))
    assert sorted(rec.calls) == list(range(0, 300, 15))
    assert buf.converted == 20


def test_conversions_i3d_25fps_each_once():
    buf, rec, _ = run_live(I3D, cfr(250, 1, 25))
    # 15 instants a second at 25 fps: instant j (j*2/30 s) takes frame floor(5j/3); slots 0..149 are final
    assert len(rec.calls) == len(set(rec.calls)) == buf.converted == 150
    assert sorted(rec.calls) == [5 * j // 3 for j in range(150)]


@pytest.mark.parametrize("every_s", [1.0, 0.4, 2.0])
@pytest.mark.parametrize("style", ["i3d", "slowfast"])
def test_clips_every_every_s(style, every_s):
    pts = cfr(600, 1, 30)
    _, _, clips, _ = check_live(STYLES[style], pts, every_s=every_s)
    ends = [clips[k].end for k in sorted(clips)]
    assert ends[0] == pytest.approx(62 / 30)
    np.testing.assert_allclose(np.diff(ends), every_s, atol=1e-9)


def test_clips_every_every_s_tsn_25fps():
    _, _, clips = run_live(TSN, cfr(500, 1, 25), every_s=1.0)
    # slots 7, 9, ..., 39 (3.5 s ... 19.5 s); each is final when the frame after it arrives, 25 frames apart
    assert sorted(clips) == list(range(88, 489, 25))
    ends = [clips[k].end for k in sorted(clips)]
    np.testing.assert_allclose(np.diff(ends), 1.0, atol=1e-9)


@pytest.mark.parametrize("style", STYLES)
def test_ring_memory(style):
    inputs = STYLES[style]
    buf = ClipBuffer(make_spec(inputs), encode, every_s=1.0)
    n = finest_of(inputs)["frames"]
    assert buf.ring is None  # allocated for the first frame's shape
    times = cfr(400, 1, 30)
    buf.push(0, times[0], 0.0)
    buf.push(1, times[1], 0.0)
    assert buf.ring.nbytes == n * SIZE * SIZE * 3
    ring = buf.ring
    for k, t in enumerate(times[2:], 2):
        buf.push(k, t, 0.0)
    assert buf.ring is ring and buf.ring.nbytes == n * SIZE * SIZE * 3


def test_a_new_frame_shape_starts_a_new_ring_and_no_clip_mixes_shapes():
    """Whole-frame models (crop none): a camera that comes back at another resolution fills a fresh ring."""
    spec = make_spec(I3D)
    shape = {"shape": (SIZE, SIZE + 4, 3)}
    buf = ClipBuffer(spec, lambda k: np.full(shape["shape"], k % 256, np.uint8), every_s=1.0)
    times = cfr(400, 1, 30)
    clips = []
    for k, t in enumerate(times):
        if k == 200:
            shape["shape"] = (SIZE + 2, SIZE, 3)
        clip = buf.push(k, t, 0.0)
        if clip is not None:
            clips.append((k, clip))
    before = [c for k, c in clips if k < 200]
    after = [(k, c) for k, c in clips if k >= 200]
    assert before and after
    assert all(c.inputs["clip"].shape[1:] == (SIZE, SIZE + 4, 3) for c in before)
    assert all(c.inputs["clip"].shape[1:] == (SIZE + 2, SIZE, 3) for _, c in after)
    assert all(c.start >= times[200] for _, c in after)  # only new-shape frames, no empty slots


def test_clips_are_copies_not_views_of_the_ring():
    buf = ClipBuffer(make_spec(I3D), encode)
    kept = []
    for k, t in enumerate(cfr(400, 1, 30)):
        clip = buf.push(k, t, 0.0)
        if clip is not None:
            kept.append((clip, decode(clip.inputs["clip"])))
    assert len(kept) >= 5
    for clip, ids in kept:
        assert decode(clip.inputs["clip"]) == ids


def _segment_of(boundary: int):
    return lambda i: i >= boundary


@pytest.mark.parametrize("style", STYLES)
def test_gap_of_5_s_restarts(style):
    inputs = STYLES[style]
    before = cfr(150, 1, 30)
    after = cfr(200, 1, 30, start=before[-1] + 5.0)
    pts = before + after
    buf, rec, clips, emits = check_live(inputs, pts)
    assert buf.restarts == 1
    sides = [{i >= 150 for ids in (decode(a) for a in c.inputs.values()) for i in ids} for c in clips.values()]
    assert all(len(s) == 1 for s in sides), "a clip mixes frames from both sides of the gap"
    assert {True} in sides and {False} in sides
    # after the gap the grid restarts at the first new frame: the first new clip ends one span later
    first_after = min(k for k in clips if k >= 150)
    fine = finest_of(inputs)
    assert clips[first_after].start == pts[150]
    assert clips[first_after].end == pytest.approx(pts[150] + (fine["frames"] - 1) * fine["stride_s"], abs=1e-9)


@pytest.mark.parametrize("style", STYLES)
def test_reset_to_zero_restarts(style):
    inputs = STYLES[style]
    pts = cfr(300, 1, 30, start=100.0) + cfr(200, 1, 25)
    buf, rec, clips, _ = check_live(inputs, pts)
    assert buf.restarts == 1 and buf.dropped == 0
    for c in clips.values():
        ids = [i for a in c.inputs.values() for i in decode(a)]
        assert all(i < 300 for i in ids) or all(i >= 300 for i in ids), ids
    late = [c for k, c in clips.items() if k >= 300]
    assert late and late[0].start == 0.0 and all(c.end < 10 for c in late)


@pytest.mark.parametrize("fraction", [0.4, 0.75, 0.99])
@pytest.mark.parametrize("style", STYLES)
def test_small_gap_within_span_does_not_restart(style, fraction):
    inputs = STYLES[style]
    gap = fraction * span_of(inputs)
    pts = cfr(120, 1, 30) + cfr(120, 1, 30, start=119 / 30 + gap)
    buf, _, clips, _ = check_live(inputs, pts)
    assert buf.restarts == 0
    # some clip straddles the gap: it repeats the last frame before the gap for the instants inside it
    assert any(min(ids) < 120 <= max(ids) for c in clips.values() for ids in [decode(next(iter(c.inputs.values())))])


def test_out_of_order_and_duplicate_frames_dropped():
    pts = cfr(200, 1, 30)
    pts[50] = pts[48]  # backwards by 2 frames
    pts[51] = pts[49]  # duplicate of the previous accepted frame
    pts[120] = pts[119] - 1.5  # backwards by less than the span of I3D (2.13 s)
    buf, rec, clips, _ = check_live(I3D, pts)
    assert buf.dropped == 3 and buf.restarts == 0
    used = {i for c in clips.values() for i in decode(c.inputs["clip"])}
    assert not {50, 51, 120} & (used | set(rec.calls))


def test_big_backward_jump_restarts_small_one_drops():
    span = span_of(I3D)
    pts = cfr(100, 1, 30, start=50.0)
    pts = pts + [pts[-1] - span + 0.2] + [pts[-1] - span - 0.2 + k / 30 for k in range(100)]
    buf, _, clips, _ = check_live(I3D, pts)
    assert (buf.dropped, buf.restarts) == (1, 1)


def test_reset_method_forgets_buffered_frames():
    buf = ClipBuffer(make_spec(I3D), encode)
    pts = cfr(60, 1, 30)
    assert all(buf.push(k, t, 0.0) is None for k, t in enumerate(pts))  # 60 frames < one span (64 frames)
    buf.reset()
    got = [buf.push(1000 + k, 10.0 + k / 30, 0.0) for k in range(70)]
    assert [k for k, c in enumerate(got) if c is not None] == [62]
    assert decode(got[62].inputs["clip"]) == list(range(1000, 1063, 2))
    assert buf.restarts == 0


# -- properties -------------------------------------------------------------------------------------------------


@st.composite
def timelines(draw, span_ms: int):
    """Integer-millisecond timestamps: runs of small steps, with gaps/resets beyond the span and stray drops.

    Whole milliseconds keep every frame either on a grid instant or >= 1/3 ms away from it (no EPS ambiguity).
    """
    pts: list[int] = []
    t = draw(st.integers(0, 100_000))  # the next frame's time
    for _ in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 200))):
            pts.append(t)
            newest = t  # newest accepted time
            if draw(st.integers(0, 49)) == 0:  # a late or duplicate frame: dropped
                pts.append(t - draw(st.integers(0, span_ms - 1)))
            t += draw(st.integers(1, 66))
        jump = draw(st.sampled_from(["gap", "reset", "none", "short_gap"]))
        if jump == "short_gap":  # within the span: no restart
            t = newest + draw(st.integers(67, span_ms - 1))
        elif jump == "gap" or (jump == "reset" and newest <= span_ms + 1):
            t = newest + span_ms + draw(st.integers(1, 10_000))
        elif jump == "reset":
            t = draw(st.integers(0, newest - span_ms - 1))
    return pts


@pytest.mark.parametrize("style", STYLES)
def test_property_random_timelines(style):
    inputs = STYLES[style]
    span = span_of(inputs)
    fine = finest_of(inputs)
    span_ms = math.ceil(span * 1000)

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(timelines(span_ms), st.sampled_from([0.3, 1.0, 1.7]))
    def prop(ms, every_s):
        pts = [m / 1000 for m in ms]
        buf, rec, clips, _ = check_live(inputs, pts, every_s=every_s)  # never raises; matches the rules
        steps, newest = [], pts[0]  # steps between consecutive accepted frames of one run (no restart)
        for t in pts[1:]:
            if t < newest - span or t - newest > span:
                newest = t
            elif t > newest:
                steps.append(t - newest)
                newest = t
        widest = max(steps, default=0.0)
        for clip in clips.values():
            fine_ids = decode(clip.inputs[fine["name"]])
            assert fine_ids == sorted(fine_ids)
            assert clip.end == pts[fine_ids[-1]] and clip.start == pts[fine_ids[0]]
            # the oldest instant takes the newest frame at or before it, so a clip spans at most
            # (frames - 1) strides + the widest step between frames: the model's span when steps <= stride
            assert clip.end - clip.start <= (fine["frames"] - 1) * fine["stride_s"] + widest + EPS
            if widest <= fine["stride_s"]:
                assert clip.end - clip.start <= span + EPS
            if "slow" in clip.inputs:
                np.testing.assert_array_equal(clip.inputs["slow"], clip.inputs["fast"][::8])
        assert len(rec.calls) == len(set(rec.calls))

    prop()
