"""``agent.frames``: the sampled-frame conversion against a float bilinear resize (MMAction2's ``Resize``).

The frames are generated here (smooth gradients plus hard-edged blocks in YUV 4:2:0), so the core suite needs no
shared data; rotation and ffmpeg's own scaler are covered in test_sources_files.py.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from av.video.reformatter import VideoReformatter

from agent.frames import resized_rgb, to_model_rgb
from agent.spec import resized_size


def yuv_frame(width: int, height: int, seed: int = 0) -> av.VideoFrame:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
    rgb[..., 1] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
    blocks = np.random.default_rng(seed).integers(0, 4, (height // 16 + 1, width // 16 + 1))
    rgb[..., 2] = (blocks[yy // 16, xx // 16] * 80).astype(np.uint8)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def float_bilinear(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.interpolate(rgb, size=(height, width), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def packed(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """Straight to rgb24 (the conversion before 0.4.2)."""
    out = VideoReformatter().reformat(frame, width=width, height=height, format="rgb24", interpolation="BILINEAR")
    return out.to_ndarray()


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(
    ("source", "short"),
    [((160, 120), 110), ((320, 240), 256), ((640, 360), 110), ((1280, 720), 256), ((1280, 720), 110)],
    ids=["147x110", "341x256", "196x110", "455x256", "196x110-from-720p"],  # odd and even target widths
)
def test_resized_rgb_is_rgb_and_at_least_as_close_to_float_bilinear_as_packed_rgb24(source, short):
    frame = yuv_frame(*source)
    w, h = resized_size(*source, short)
    out = resized_rgb(frame, w, h, reformatter=VideoReformatter(), threads=1)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    ref = float_bilinear(frame, w, h)
    ours, before = mean_abs(out, ref), mean_abs(packed(frame, w, h), ref)
    # channel order: the red gradient runs along x, green along y
    assert np.corrcoef(out[h // 2, :, 0], np.arange(w))[0, 1] > 0.99
    assert np.corrcoef(out[:, w // 2, 1], np.arange(h))[0, 1] > 0.99
    assert ours <= before + 0.05, (ours, before)
    # swscale's bilinear widens its filter when shrinking and the reference point-samples: at 6.5x down (720p to
    # 110 rows) that alone is ~7 levels on these blocks (packed rgb24: ~12); 1.7-3.5 at the other sizes
    assert ours < 8, ours


def test_resized_rgb_at_the_frames_own_size_is_the_plain_rgb24_conversion():
    frame = yuv_frame(340, 256)
    np.testing.assert_array_equal(resized_rgb(frame, 340, 256), frame.to_ndarray(format="rgb24"))


@pytest.mark.parametrize("source", [(160, 120), (120, 160), (320, 180)])
def test_resize_to_ignores_the_aspect_ratio_then_crops_the_centre(source):
    """A spec's ``resize_to`` (torchvision's video transforms): every frame to exactly (width, height), whatever its
    shape, then the centre crop; the same conversion as a short-side resize to that size would use."""
    frame = yuv_frame(*source)
    out = to_model_rgb(frame, resize_short=73, size=64, resize_to=(80, 73), threads=1)
    assert out.shape == (64, 64, 3)
    full = resized_rgb(frame, 80, 73, threads=1)
    np.testing.assert_array_equal(out, full[(73 - 64) // 2 :][:64, (80 - 64) // 2 :][:, :64])
    assert mean_abs(full, float_bilinear(frame, 80, 73)) < 8
