"""agent.flow: optical flow as MMAction2's flow_extraction.py makes it (quantisation, methods), which frames pair up,
and the flow of a clip's chains, each pair computed once. (Parity with MMAction2's own functions on a real video:
tests/parity/test_mmaction2_flow.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from agent.errors import SpecError
from agent.flow import (
    FlowEstimator,
    FlowMaker,
    base_times,
    centre_crop,
    chain_indices,
    grey,
    next_frame,
    pair_scale,
    quantise,
)
from agent.spec import FLOW_METHODS, FlowSpec, InputSpec, ModelSpec

pytest.importorskip("cv2")


def flow_spec(*, frames=3, stride_s=0.5, pairs=2, method="farneback", size=24, resize=24) -> ModelSpec:
    flow = {"method": method, "pairs": pairs, "step_s": 1 / 30}
    return ModelSpec(
        arch="test",
        labels=["a", "b"],
        inputs=[{"name": "clip", "frames": frames, "stride_s": stride_s, "modality": "flow", "flow": flow}],
        size=size,
        resize_short=resize,
        mean=(128, 128),
        std=(128, 128),
        source={"exported_by": "tests"},
    )


def mmaction2_flow_to_img(raw_flow: np.ndarray, bound: float = 20.0) -> np.ndarray:
    """MMAction2 1.2.0's ``tools/misc/flow_extraction.py:flow_to_img``, as written there (one channel at a time)."""
    flow = np.clip(raw_flow, -bound, bound)
    flow += bound
    flow *= 255 / float(2 * bound)
    return flow.astype(np.uint8)


def textured(height=48, width=64, seed=0) -> np.ndarray:
    """A smooth random grey texture (flow methods need gradients)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = (rng.random((height + 16, width + 16)) * 255).astype(np.uint8)
    return cv2.GaussianBlur(noise, (9, 9), 2.0)


@pytest.mark.parametrize("bound", [20.0, 15.0, 7.5])
def test_quantise_is_mmaction2s_flow_to_img(bound):
    rng = np.random.default_rng(1)
    raw = (rng.standard_normal((40, 50, 2)) * bound * 0.8).astype(np.float32)
    raw[0, :6, 0] = [-bound - 1, -bound, 0.0, bound - 1e-4, bound, bound + 3]  # the edges of the range
    expected = np.stack(
        [mmaction2_flow_to_img(raw[..., 0].copy(), bound), mmaction2_flow_to_img(raw[..., 1], bound)], -1
    )
    got = quantise(raw, bound)
    assert got.dtype == np.uint8 and got.shape == raw.shape
    np.testing.assert_array_equal(got, expected)
    assert list(got[0, :6, 0]) == list(mmaction2_flow_to_img(raw[0, :6, 0].copy(), bound))
    assert got[0, 2, 0] == 127 and got[0, 4, 0] == 255 and got[0, 0, 0] == 0  # still is 127.5, truncated


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_each_method_sees_a_shift_right_and_down(method):
    image = textured()
    first, second = image[8:-8, 8:-8], image[5:-11, 6:-10]  # content moves 2 px right, 3 px down
    raw = FlowEstimator(method).raw(first, second)
    assert raw.shape == (*first.shape, 2) and raw.dtype == np.float32
    inner = raw[12:-12, 12:-12].reshape(-1, 2)
    assert np.median(inner[:, 0]) == pytest.approx(2.0, abs=0.35)
    assert np.median(inner[:, 1]) == pytest.approx(3.0, abs=0.35)
    quantised = FlowEstimator(method, bound=20)(first, second)
    assert np.median(quantised[12:-12, 12:-12, 0]) == pytest.approx(127.5 + 2 * 6.375, abs=3)


def test_scale_applies_only_beyond_one_percent():
    image = textured()
    a, b = image[8:-8, 8:-8], image[8:-8, 4:-12]  # 4 px right
    estimator = FlowEstimator("farneback", bound=20)
    plain = estimator(a, b)
    np.testing.assert_array_equal(estimator(a, b, scale=1.005), plain)
    slower = estimator(a, b, scale=30 / 25 * 0 + 25 / 30)  # a 25 fps pair for a 30 fps model: 5/6 of the motion
    inner = (slice(12, -12), slice(12, -12), 0)
    assert np.median(slower[inner].astype(float)) - 127.5 == pytest.approx(
        (np.median(plain[inner].astype(float)) - 127.5) * 25 / 30, abs=1.0
    )
    assert pair_scale(FlowSpec(step_s=1 / 30), 1.0, 1.04) == pytest.approx((1 / 30) / 0.04)
    assert pair_scale(FlowSpec(step_s=1 / 30), 1.0, 1.0) == 1.0


def test_grey_uses_opencvs_weights_on_rgb():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # red
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    assert list(grey(rgb)[0]) == [76, 150, 29]  # 0.299 R, 0.587 G, 0.114 B (as BGR2GRAY on the BGR picture)


def test_unknown_method_is_refused():
    with pytest.raises(SpecError, match="unknown flow method 'raft'"):
        FlowEstimator("raft")


@pytest.mark.parametrize(
    ("fps", "expected"), [(30, 1), (25, 1), (60, 2), (50, 2), (40, 1), (120, 4), (15, 1)]
)  # fmt: skip
def test_next_frame_is_the_one_nearest_a_model_frame_later(fps, expected):
    pts = np.arange(20) / fps
    assert next_frame(pts, 0, 1 / 30) == expected
    assert next_frame(pts, 19, 1 / 30) == 19  # the last frame pairs with itself


def test_chain_indices_start_at_or_before_each_instant():
    inp = InputSpec(name="clip", frames=3, stride_s=0.5, modality="flow", flow=FlowSpec(pairs=5, step_s=1 / 30))
    pts = np.arange(120) / 30
    chains = chain_indices(inp, pts, end=3.0)
    np.testing.assert_allclose(base_times(inp, 3.0), [3.0 - 5 / 30 - 1.0, 3.0 - 5 / 30 - 0.5, 3.0 - 5 / 30])
    assert chains.shape == (3, 6)
    assert chains[:, 0].tolist() == [55, 70, 85] and chains[-1, -1] == 90  # the last chain ends at `end`
    assert (np.diff(chains, axis=1) == 1).all()
    np.testing.assert_array_equal(chain_indices(inp, pts, end=0.2)[0], [0, 1, 2, 3, 4, 5])  # before the start: 0


def test_the_maker_computes_each_pair_once_and_crops_after():
    spec = flow_spec(pairs=2, size=16, resize=24)
    image = textured(64, 80)
    frames = [image[8 + i : 40 + i, 8 + 2 * i : 48 + 2 * i] for i in range(6)]  # 32 x 40, moving up-left
    seen: list[float] = []
    maker = FlowMaker(spec, on_field=seen.append)
    chains = [[(i / 30, frames[i]) for i in range(k, k + 3)] for k in (0, 1, 2)]  # overlapping chains
    out = maker(chains)
    assert out.shape == (6, 16, 16, 2) and out.dtype == np.uint8
    assert maker.computed == 4 and len(seen) == 4  # pairs (0,1) (1,2) (2,3) (3,4): shared ones once
    full = FlowEstimator("farneback")(frames[0], frames[1])
    np.testing.assert_array_equal(out[0], centre_crop(full, 16))  # flow of the whole frame, then the centre crop
    again = maker([[(i / 30, frames[i]) for i in range(k, k + 3)] for k in (1, 2, 3)])
    assert maker.computed == 5 and maker.reused == 3  # the next clip reuses what it shares with this one
    np.testing.assert_array_equal(again[:2], out[2:4])


def test_the_method_can_be_overridden():
    spec = flow_spec(method="tvl1")
    assert FlowMaker(spec, method="dis").estimator.method == "dis"
    assert FlowMaker(spec).estimator.method == "tvl1"
    rgb = ModelSpec.model_validate(flow_spec().model_dump() | {"inputs": [{"name": "clip", "frames": 2, "stride_s": 1}],
                                                                "mean": (0, 0, 0), "std": (1, 1, 1)})  # fmt: skip
    with pytest.raises(SpecError, match="not a flow model"):
        FlowMaker(rgb)
