"""List files (VideoDataset, RawframeDataset), folder-per-class layout, frame reading, the clip dataset."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torchvision.io import encode_jpeg

from agent.demo.synthetic import write_motion_clip
from agent.frames import to_model_rgb
from train.datasets import (
    ClipDataset,
    DatasetError,
    Sample,
    count_frames,
    load_samples,
    read_folder,
    read_labels,
    read_rawframe_list,
    read_rawframes,
    read_video_frames,
    read_video_list,
)
from train.pipelines import ClipPipeline


def test_video_list(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("# comment\nvideos/a 1.mp4 0\n\n  videos/b.mp4 12  \n")
    assert read_video_list(lst) == [Sample(tmp_path / "videos/a 1.mp4", 0), Sample(tmp_path / "videos/b.mp4", 12)]
    assert read_video_list(lst, data_root="/data")[1].path == Path("/data/videos/b.mp4")


def test_rawframe_list(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("frames/v1 30 2\nframes/v2 125 0\n")
    assert read_rawframe_list(lst) == [Sample(tmp_path / "frames/v1", 2, 30), Sample(tmp_path / "frames/v2", 0, 125)]


@pytest.mark.parametrize(
    ("reader", "text", "line", "what"),
    [
        (read_video_list, "a.mp4 0\nb.mp4 x\n", 2, "label must be a non-negative integer"),
        (read_video_list, "a.mp4 0\n\nb.mp4\n", 3, "expected '<path> <label>'"),
        (read_video_list, "a.mp4 -1\n", 1, "label must be"),
        (read_rawframe_list, "d 30 1\nd 1\n", 2, "expected '<path> <num_frames> <label>'"),
        (read_rawframe_list, "d 30 1\nd 3.5 1\n", 2, "num_frames must be"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, reader, text, line, what):
    lst = tmp_path / "list.txt"
    lst.write_text(text)
    with pytest.raises(DatasetError, match=rf"list\.txt:{line}: {what}"):
        reader(lst)


def test_missing_and_empty_lists(tmp_path):
    with pytest.raises(DatasetError, match="nope.txt: no such list file"):
        load_samples(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(DatasetError, match="empty.txt: no samples"):
        read_video_list(tmp_path / "empty.txt")


def test_folder_per_class(tmp_path):
    for cls, names in {"walk": ["b.mp4", "a.MP4", "notes.txt"], "jump": ["c.avi"]}.items():
        (tmp_path / cls).mkdir()
        for n in names:
            (tmp_path / cls / n).write_bytes(b"")
    samples, classes = read_folder(tmp_path)
    assert classes == ["jump", "walk"]
    assert [(s.path.name, s.label) for s in samples] == [("c.avi", 0), ("a.MP4", 1), ("b.mp4", 1)]
    assert load_samples(tmp_path) == (samples, classes)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty: no videos"):
        read_folder(tmp_path)


def test_labels_file(tmp_path):
    (tmp_path / "l.txt").write_text("a\n\nb\n")
    assert read_labels(tmp_path / "l.txt") == ["a", "b"]
    (tmp_path / "d.txt").write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match="duplicate labels: a"):
        read_labels(tmp_path / "d.txt")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_motion_clip(tmp_path_factory.mktemp("v") / "c.mp4", "move_right", seconds=1, width=64, height=48)


def test_read_video_frames(clip):
    assert count_frames(clip) == 30
    every = read_video_frames(clip, np.arange(30))
    picked = read_video_frames(clip, np.array([7, 3, 3, 29]))
    assert picked.shape == (4, 48, 64, 3) and picked.dtype == np.uint8
    np.testing.assert_array_equal(picked, every[[7, 3, 3, 29]])
    past_end = read_video_frames(clip, np.array([28, 40]))  # a header that over-counts: last frame repeats
    np.testing.assert_array_equal(past_end, every[[28, 29]])
    assert read_video_frames(clip, np.array([0]), short_side=24).shape == (1, 24, 32, 3)


def test_training_frames_are_the_agents_frames(clip):
    """No train/serve skew: resized training frames are exactly what the agent converts (crop aside)."""
    for short in (24, 37, 48):  # 32x24, 49x37 (odd width), 64x48 (no scaling)
        with av.open(str(clip)) as container:
            frames = [to_model_rgb(f, resize_short=short, size=None) for f in container.decode(video=0)]
        got = read_video_frames(clip, np.array([0, 17]), short_side=short)
        np.testing.assert_array_equal(got, [frames[0], frames[17]])
    # a fixed resize (the spec's resize_to: S3D), aspect ratio not kept
    with av.open(str(clip)) as container:
        frames = [to_model_rgb(f, resize_short=40, size=None, resize_to=(40, 40)) for f in container.decode(video=0)]
    got = read_video_frames(clip, np.array([0, 17]), short_side=40, resize_to=(40, 40))
    assert got.shape == (2, 40, 40, 3)
    np.testing.assert_array_equal(got, [frames[0], frames[17]])


def test_unreadable_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="bad.mp4: not a readable video"):
        read_video_frames(bad, np.array([0]))
    with pytest.raises(DatasetError, match="missing.mp4: video file not found"):
        count_frames(tmp_path / "missing.mp4")


def test_rawframes_are_one_based(tmp_path):
    for i in range(1, 4):
        image = torch.full((3, 8, 8), i * 50, dtype=torch.uint8)
        (tmp_path / f"img_{i:05d}.jpg").write_bytes(encode_jpeg(image).numpy().tobytes())
    frames = read_rawframes(tmp_path, np.array([2, 0]))
    assert frames.shape == (2, 8, 8, 3)
    assert abs(int(frames[0].mean()) - 150) <= 2 and abs(int(frames[1].mean()) - 50) <= 2
    with pytest.raises(DatasetError, match="img_00010.jpg: cannot read frame"):
        read_rawframes(tmp_path, np.array([9]))


def test_clip_dataset_is_reproducible(clip):
    pipeline = ClipPipeline(
        kind="slowfast", clip_len=8, frame_interval=2, num_clips=1, size=32, resize_short=36, test_mode=False, alpha=4
    )
    dataset = ClipDataset([Sample(clip, 1)], pipeline, seed=3)
    (slow, fast), labels = dataset[0]
    assert labels.tolist() == [1] and fast.shape == (1, 3, 8, 32, 32) and slow.shape == (1, 3, 2, 32, 32)
    torch.testing.assert_close(slow, fast[:, :, ::4])
    torch.testing.assert_close(dataset[0][0][1], fast)  # same (seed, epoch, index): same clip
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0][0][1], fast)


def test_repeats_and_cache(clip):
    pipeline = ClipPipeline(
        kind="3d",
        clip_len=4,
        frame_interval=3,
        num_clips=1,
        size=32,
        resize_short=36,
        test_mode=False,
        flip_ratio=1.0,
        flip_label_map={1: 0},
    )
    (x,), labels = ClipDataset([Sample(clip, 1)], pipeline, repeats=3)[0]
    assert x.shape == (3, 3, 4, 32, 32) and labels.tolist() == [0, 0, 0]  # three clips, each flipped
    assert not torch.equal(x[0], x[1])
    cached = ClipDataset([Sample(clip, 1)], pipeline, repeats=3, cache=True)
    torch.testing.assert_close(cached[0][0][0], x)  # same frames, whether cached or decoded per sample
    assert cached.cache_bytes() == 30 * 36 * 48 * 3  # every frame, resized to the short side once
