"""SampleFrames / TSN indices against hand-computed MMAction2 cases; crops, flip, normalise, formatting.

Expected indices are worked out by hand from MMAction2 1.2.0's ``SampleFrames`` rules (train: stride
``avg = (total - clip_len·interval + 1) // num_clips`` plus a random offset below it; test: centred), never by
calling the code under test. Random draws come from a stub generator so the hand computation is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.spec import IMAGENET_MEAN as MEAN
from agent.spec import IMAGENET_STD as STD
from agent.spec import resized_size
from train.config import ConfigError, build_config
from train.pipelines import (
    ClipPipeline,
    centre_crop,
    format_inputs,
    normalize,
    pipeline_for,
    random_crop_box,
    sample_frames,
    tsn_segments,
)


class StubRng:
    """Returns queued values from ``integers`` (checking the bound MMAction2 would pass)."""

    def __init__(self, *draws: tuple[int, list[int]]) -> None:
        self.draws = list(draws)

    def integers(self, high, size=None):
        expected_high, values = self.draws.pop(0)
        assert high == expected_high and size == len(values)
        return np.array(values)


# --- test mode ----------------------------------------------------------------------------------------------------


def test_test_mode_one_clip_is_centred():
    # span = (8 - 1) * 2 + 1 = 15, max_offset = 30 - 15 = 15, offset = 15 // 2 = 7
    got = sample_frames(30, clip_len=8, frame_interval=2, test_mode=True)
    assert got.tolist() == [7, 9, 11, 13, 15, 17, 19, 21]


def test_test_mode_several_clips_spread_evenly():
    # span 7, max_offset 23, between = 23 / 2 = 11.5 -> offsets round(0, 11.5, 23) = 0, 12 (half to even), 23
    got = sample_frames(30, clip_len=4, frame_interval=2, num_clips=3, test_mode=True)
    assert got.tolist() == [0, 2, 4, 6, 12, 14, 16, 18, 23, 25, 27, 29]


def test_test_mode_short_video_loops():
    # span 15 > 10 frames: offset 0, indices 0..14 step 2 wrap modulo 10
    got = sample_frames(10, clip_len=8, frame_interval=2, test_mode=True)
    assert got.tolist() == [0, 2, 4, 6, 8, 0, 2, 4]


def test_tsn_test_mode_takes_segment_middles():
    # 30 frames / 8 segments = 3.75; middles 1.875 + 3.75 k, truncated
    assert tsn_segments(30, 8, test_mode=True).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]
    # 5 frames, 8 segments: middles 0.3125 + 0.625 k
    assert tsn_segments(5, 8, test_mode=True).tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


# --- train mode -------------------------------------------------------------------------------------------------


def test_train_mode_random_offset_in_stride():
    # span 16, avg = (30 - 16 + 1) // 1 = 15: offset = randint(15)
    got = sample_frames(30, clip_len=8, frame_interval=2, rng=StubRng((15, [9])))
    assert got.tolist() == [9, 11, 13, 15, 17, 19, 21, 23]


def test_tsn_train_mode_one_random_frame_per_segment():
    # avg = 30 // 8 = 3: bases 0, 3, ..., 21 plus randint(3) each
    got = tsn_segments(30, 8, rng=StubRng((3, [0, 1, 2, 0, 1, 2, 0, 1])))
    assert got.tolist() == [0, 4, 8, 9, 13, 17, 18, 22]


def test_train_mode_too_few_frames_for_strides_sorts_random_offsets():
    # span 16, avg = (20 - 16 + 1) // 8 = 0, 20 > max(8, 16): sorted randint(5) offsets
    got = sample_frames(20, clip_len=2, frame_interval=8, num_clips=8, rng=StubRng((5, [4, 0, 3, 3, 1, 0, 2, 4])))
    assert got.reshape(8, 2)[:, 0].tolist() == [0, 0, 1, 2, 3, 3, 4, 4]


def test_train_mode_exact_and_short_videos():
    # 15 frames, span 16: avg 0 and not longer than the span -> offsets spread by (15 - 16 + 1) / 1 = 0
    assert sample_frames(15, clip_len=8, frame_interval=2, rng=StubRng()).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    # 10 frames: avg < 0 -> offset 0, indices wrap
    assert sample_frames(10, clip_len=8, frame_interval=2, rng=StubRng()).tolist() == [0, 2, 4, 6, 8, 0, 2, 4]


def test_train_mode_seeded_is_reproducible_and_covers_offsets():
    draws = {tuple(sample_frames(30, clip_len=8, frame_interval=2, rng=np.random.default_rng(s))) for s in range(200)}
    assert len(draws) == 15  # every offset 0..14 shows up
    a = sample_frames(90, clip_len=8, frame_interval=8, rng=np.random.default_rng(7))
    b = sample_frames(90, clip_len=8, frame_interval=8, rng=np.random.default_rng(7))
    assert a.tolist() == b.tolist()


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(1, 300),
    clip_len=st.integers(1, 16),
    interval=st.integers(1, 8),
    clips=st.integers(1, 10),
    test_mode=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_indices_always_valid(total, clip_len, interval, clips, test_mode, seed):
    got = sample_frames(
        total,
        clip_len=clip_len,
        frame_interval=interval,
        num_clips=clips,
        test_mode=test_mode,
        rng=np.random.default_rng(seed),
    )
    assert got.shape == (clip_len * clips,)
    assert got.min() >= 0 and got.max() < total
    if total >= clip_len * interval * clips:  # room for every clip: no wrap, consecutive frames interval apart
        assert (np.diff(got.reshape(clips, clip_len), axis=1) == interval).all()


def test_train_mode_needs_rng():
    with pytest.raises(ValueError, match="rng"):
        sample_frames(30, clip_len=8)


# --- pixels -----------------------------------------------------------------------------------------------------


def test_resized_size_rounds_like_mmcv():
    assert resized_size(160, 120, 73) == (97, 73)  # 160 * 73 / 120 = 97.33
    assert resized_size(340, 256, 256) == (340, 256)


def test_centre_crop_origin():
    x = torch.arange(7 * 9).view(1, 7, 9)
    crop = centre_crop(x, 4)  # top (7 - 4) // 2 = 1, left (9 - 4) // 2 = 2
    assert crop[0, 0, 0].item() == 1 * 9 + 2 and crop.shape == (1, 4, 4)


def test_random_crop_box_in_bounds_and_fallback():
    rng = np.random.default_rng(0)
    for _ in range(50):
        top, left, h, w = random_crop_box(73, 97, rng, (0.3, 1.0))
        assert 0 <= top and top + h <= 73 and 0 <= left and left + w <= 97 and h > 0 and w > 0
    # impossible aspect ratios: MMAction2 falls back to the centred square of the short side
    assert random_crop_box(10, 20, rng, (1.0, 1.0), (8.0, 9.0)) == (0, 5, 10, 10)


def test_normalize_uses_imagenet_mean_std():
    x = torch.tensor(MEAN).round().to(torch.uint8).view(3, 1, 1)
    expected = (torch.tensor(MEAN).round() - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(normalize(x).view(3), expected)


def test_format_inputs_per_kind():
    x = torch.randn(2, 8, 3, 4, 4)  # V T C H W
    (tsn,) = format_inputs(x, "2d")
    assert tsn.shape == (2, 8, 3, 4, 4)
    (i3d,) = format_inputs(x, "3d")
    assert i3d.shape == (2, 3, 8, 4, 4) and torch.equal(i3d[:, :, 5], x[:, 5])
    slow, fast = format_inputs(x, "slowfast", alpha=4)
    assert slow.shape == (2, 3, 2, 4, 4) and torch.equal(slow[:, :, 1], fast[:, :, 4])


def frames_with_left_marker(t: int = 4, h: int = 40, w: int = 60) -> np.ndarray:
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    frames[:, :, :10] = 255  # bright band on the left
    return frames


def test_flip_swaps_labels_and_pixels():
    pipeline = ClipPipeline(
        kind="3d",
        clip_len=4,
        frame_interval=1,
        num_clips=1,
        size=32,
        resize_short=40,
        test_mode=False,
        area_range=(1.0, 1.0),
        aspect_ratio_range=(1.5, 1.5),
        flip_ratio=1.0,
        flip_label_map={0: 1, 1: 0},
    )
    (x,), label = pipeline(frames_with_left_marker(), 0, np.random.default_rng(0))
    assert label == 1 and x.shape == (1, 3, 4, 32, 32)
    assert x[..., -2:].mean() > x[..., :2].mean()  # the band is now on the right
    assert pipeline(frames_with_left_marker(), 2, np.random.default_rng(0))[1] == 2  # unmapped labels stay


def test_test_pipeline_is_deterministic_centre_crop():
    pipeline = ClipPipeline(
        kind="2d", clip_len=1, frame_interval=1, num_clips=4, size=32, resize_short=40, test_mode=True
    )
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 60, 3), dtype=np.uint8)
    (x,), _ = pipeline(frames, 0, np.random.default_rng(1))
    expected = normalize(torch.from_numpy(frames).permute(0, 3, 1, 2)[:, :, 4:36, 14:46])
    torch.testing.assert_close(x[0], expected)


def test_pipeline_for_uses_arch_sampling():
    cfg = build_config(
        {
            "data": {"train": "t.txt"},
            "model": {"arch": "slowfast_r50_4x16", "size": 64},
            "sampling": {"test_clips": 3},
            "augment": {"flip_pairs": [["l", "r"]]},
        }
    )
    train = pipeline_for(cfg, ["l", "r", "s"], test_mode=False)
    test = pipeline_for(cfg, ["l", "r", "s"], test_mode=True)
    assert (train.clip_len, train.frame_interval, train.alpha, train.num_clips) == (32, 2, 8, 1)
    assert test.num_clips == 3 and test.resize_short == 73 and train.flip_label_map == {0: 1, 1: 0}
    tsn = pipeline_for(build_config({"data": {"train": "t"}, "model": {"arch": "tsn_r50"}}), ["a"], test_mode=True)
    assert (tsn.clip_len, tsn.num_clips, tsn.views) == (1, 8, 1)
    with pytest.raises(ConfigError, match="unknown label 'x'"):
        bad = build_config({"data": {"train": "t"}, "augment": {"flip_pairs": [["x", "r"]]}})
        pipeline_for(bad, ["l", "r"], test_mode=False)


def test_pipeline_for_uses_the_archs_mean_std_and_resize():
    c3d = pipeline_for(build_config({"data": {"train": "t"}, "model": {"arch": "c3d_sports1m"}}), ["a"], test_mode=True)
    assert (c3d.mean, c3d.std, c3d.size, c3d.resize_short, c3d.clip_len) == ((104, 117, 128), (1, 1, 1), 112, 128, 16)
    s3d = build_config({"data": {"train": "t"}, "model": {"arch": "s3d", "size": 32}})
    pipeline = pipeline_for(s3d, ["a"], test_mode=True)
    assert pipeline.resize_to == (37, 37)
    frames = np.random.default_rng(0).integers(0, 255, (128, 30, 60, 3), dtype=np.uint8)
    (x,), _ = pipeline(frames, 0, np.random.default_rng(1))
    assert x.shape == (1, 3, 128, 32, 32)  # 60x30 squeezed to 37x37, then the centre 32x32
    tsm = pipeline_for(
        build_config({"data": {"train": "t"}, "model": {"arch": "tsm_r50_1x1x16"}}), ["a"], test_mode=True
    )
    assert (tsm.kind, tsm.num_clips, tsm.clip_len) == ("2d", 16, 1)
