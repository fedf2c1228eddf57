"""Training flow models: each video's flow computed once (the agent's own code) and cached, MMAction2's flow
frames read as they are, flow pipelines (stacking, flips), --modality flow end to end, and two-stream evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from agent.errors import ConfigError
from agent.flow import FlowEstimator, grey
from export.checkpoints import read_checkpoint
from train import flows
from train.cli import main
from train.config import build_config
from train.datasets import read_video_frames
from train.evaluate import evaluate, evaluate_fused
from train.flows import FlowCache, FlowSettings, prepare, read_flow_frames, video_flow
from train.pipelines import pipeline_for
from train.trainer import export_command, train

pytest.importorskip("cv2")

SETTINGS = FlowSettings("farneback", 20.0, resize_short=40)


def flow_config(root, out, **model):
    return build_config(
        {
            "data": {
                "train": str(root / "train.txt"),
                "val": str(root / "val.txt"),
                "labels": str(root / "labels.txt"),
                "cache": True,
                "flow_method": "farneback",
                "flow_cache": str(out / "flow"),
            },
            "model": {"arch": "tsn_r50", "modality": "flow", "depth": 18, "width": 8, "size": 64, **model},
            "optim": {"epochs": 1, "batch_size": 2, "lr": 0.01},
            "out_dir": str(out),
            "progress": False,
        }
    )


def test_a_videos_flow_is_the_agents_flow_of_consecutive_resized_frames(tiny_set):
    video = tiny_set / "videos/train/move_right/move_right_0000.mp4"
    flow = video_flow(video, SETTINGS)
    frames = read_video_frames(video, np.arange(3), 40)
    assert flow.dtype == np.uint8 and flow.shape == (71, 40, 53, 2)  # 72 frames at 96x72 → short side 40
    estimator = FlowEstimator("farneback", 20.0)
    np.testing.assert_array_equal(flow[1], estimator(grey(frames[1]), grey(frames[2])))
    right, left = (flow[..., 0] >= 129).sum(), (flow[..., 0] <= 125).sum()
    assert right > 1.5 * left  # the actor moves right (the rest: camera shake, noise)


def test_the_cache_computes_each_video_once(tiny_set, tmp_path, monkeypatch):
    cache = FlowCache(tmp_path / "flow", tiny_set, SETTINGS)
    videos = [tiny_set / "videos/train/grow/grow_0000.mp4", tiny_set / "videos/val/still/still_0001.mp4"]
    path = cache.path(videos[0])
    assert path == tmp_path / "flow/farneback-b20-s40/videos/train/grow/grow_0000.mp4.npz"
    assert prepare(cache, videos, jobs=1, progress=False) == 2
    assert path.is_file() and cache.missing(videos) == []
    monkeypatch.setattr(flows, "video_flow", lambda *a: pytest.fail("computed again"))
    assert prepare(cache, videos, jobs=1, progress=False) == 0
    assert cache.load(videos[0]).shape == (71, 40, 53, 2)
    assert not list(path.parent.glob("*.part*"))


def test_mmaction2_flow_frames_are_read_as_they_are(tmp_path):
    rng = np.random.default_rng(0)
    fields = rng.integers(0, 256, (3, 12, 16, 2), dtype=np.uint8)
    for i, field in enumerate(fields, start=1):  # MMAction2's flow_tmpl: x_00001.jpg, y_00001.jpg
        Image.fromarray(field[..., 0]).save(tmp_path / f"x_{i:05d}.png")
        (tmp_path / f"x_{i:05d}.png").rename(tmp_path / f"x_{i:05d}.jpg")  # lossless content, the expected name
        Image.fromarray(field[..., 1]).save(tmp_path / f"y_{i:05d}.png")
        (tmp_path / f"y_{i:05d}.png").rename(tmp_path / f"y_{i:05d}.jpg")
    got = read_flow_frames(tmp_path, np.array([2, 0, 2]))
    np.testing.assert_array_equal(got, fields[[2, 0, 2]])


def test_modality_flow_trains_the_archs_flow_variant(tiny_set, tmp_path):
    cfg = flow_config(tiny_set, tmp_path)
    assert (cfg.model.arch, cfg.model.modality) == ("tsn_r50_flow", "flow")
    assert build_config({"data": {"train": "t.txt"}, "model": {"arch": "slowonly_r50_flow"}}).model.modality == "flow"
    with pytest.raises(ConfigError, match="i3d_r50 has no flow variant"):
        build_config({"data": {"train": "t.txt"}, "model": {"arch": "i3d_r50", "modality": "flow"}})
    with pytest.raises(ConfigError, match="takes optical flow, not RGB"):
        build_config({"data": {"train": "t.txt"}, "model": {"arch": "tsn_r50_flow", "modality": "rgb"}})


def test_tsn_flow_pipeline_stacks_five_fields_per_segment_and_flips_x(tiny_set, tmp_path):
    cfg = flow_config(tiny_set, tmp_path)
    labels = ["move_right", "grow", "still"]
    test = pipeline_for(cfg, labels, test_mode=True)
    assert (test.clip_len, test.num_clips, test.pairs, test.channels) == (5, 3, 5, 2)
    indices = test.frame_indices(71, np.random.default_rng(0))
    assert indices.reshape(3, 5).tolist()[0] == [0, 1, 2, 3, 4] and (np.diff(indices.reshape(3, 5)) == 1).all()
    fields = np.random.default_rng(1).integers(0, 256, (15, 40, 53, 2), dtype=np.uint8)
    (x,), label = test(fields, 0, np.random.default_rng(0))
    assert x.shape == (1, 3, 10, 64, 64) and label == 0  # [views, segments, 2·pairs, H, W]
    whole = {"flip": 1.0, "area_range": (1, 1), "aspect_ratio_range": (1, 1)}  # every clip flipped, no crop
    flip = build_config(cfg.model_dump() | {"augment": whole})
    train_pipe = pipeline_for(flip, labels, test_mode=False)
    still = np.full((15, 64, 64, 2), 128, np.uint8)
    still[..., 0] = 200  # moving right everywhere
    (y,), _ = train_pipe(still, 0, np.random.default_rng(0))
    x_channels = y[0, :, 0::2] * 128 + 128
    y_channels = y[0, :, 1::2] * 128 + 128
    torch.testing.assert_close(x_channels, torch.full_like(x_channels, 55.0))  # 255 - 200: now moving left
    torch.testing.assert_close(y_channels, torch.full_like(y_channels, 128.0))


@pytest.fixture(scope="module")
def flow_run(tiny_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow-run")
    cfg = flow_config(tiny_set, out)
    return cfg, train(cfg)


def test_flow_training_end_to_end(flow_run):
    cfg, result = flow_run
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    ckpt = read_checkpoint(result.checkpoint)
    assert ckpt.arch == "tsn_r50_flow" and ckpt.extra["config"]["data"]["flow_method"] == "farneback"
    assert ckpt.model_args == {"num_classes": 3, "depth": 18, "width": 8}
    assert "--flow-method farneback --flow-bound 20" in export_command(cfg, result.checkpoint)
    cached = list((cfg.data.flow_cache / "farneback-b20-s73").rglob("*.npz"))
    assert len(cached) == 18  # every train and val video, once


def test_evaluate_reproduces_validation_and_takes_another_flow_method(flow_run, tiny_set):
    cfg, result = flow_run
    metrics, _ = evaluate(result.checkpoint, tiny_set / "val.txt")
    assert metrics.top1 == pytest.approx(result.final.top1)
    dis, _ = evaluate(result.checkpoint, tiny_set / "val.txt", flow_method="dis")
    assert dis.count == 6
    assert (cfg.data.flow_cache / "dis-b20-s73").is_dir()


def test_two_streams_fuse_as_a_weighted_average(flow_run, tiny_set, tmp_path, capsys):
    _, flow = flow_run
    rgb_cfg = build_config(
        {
            "data": {"train": str(tiny_set / "train.txt"), "labels": str(tiny_set / "labels.txt"), "cache": True},
            "model": {"arch": "tsn_r50", "depth": 18, "width": 8, "size": 64},
            "optim": {"epochs": 1, "batch_size": 2},
            "out_dir": str(tmp_path),
            "progress": False,
        }
    )
    rgb = train(rgb_cfg).checkpoint
    val = tiny_set / "val.txt"
    fused, labels, (alone_rgb, alone_flow) = evaluate_fused([rgb, flow.checkpoint], [1.0, 1.5], val)
    assert labels == ["move_right", "grow", "still"] and fused.count == alone_rgb.count == 6
    assert alone_flow.top1 == pytest.approx(flow.final.top1)
    assert main(["evaluate", str(rgb), str(val), "--fuse", str(flow.checkpoint), "--weights", "1", "1.5"]) == 0
    out = capsys.readouterr().out
    assert f"fused (1 x {rgb} + 1.5 x {flow.checkpoint}):" in out and f"top-1 {fused.top1:.4f}" in out
    assert main(["evaluate", str(rgb), str(val), "--fuse", str(flow.checkpoint), "--weights", "1"]) == 2
