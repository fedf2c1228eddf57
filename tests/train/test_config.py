"""Trainer config: plain dicts and YAML, unknown keys rejected with their path, derived values."""

from __future__ import annotations

import pytest

from train.config import ConfigError, build_config, load_config


def test_minimal_dict_gets_mmaction2_defaults():
    cfg = build_config({"data": {"train": "t.txt"}})
    assert (cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.clip_grad) == (0.9, 1e-4, 40.0)
    assert cfg.augment.flip == 0.5 and cfg.augment.area_range == (0.08, 1.0)
    assert cfg.model.short_side == 256 and cfg.workers == 1
    assert cfg.model.model_args(7) == {"num_classes": 7, "depth": 50, "width": 64}


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {train: a.txt, cache: true}\nmodel: {arch: i3d_r50, depth: 18, size: 96}\n")
    cfg = load_config(path, {"model": {"width": 8}, "optim": {"epochs": 3}})
    assert (cfg.model.arch, cfg.model.depth, cfg.model.width, cfg.optim.epochs) == ("i3d_r50", 18, 8, 3)
    assert cfg.model.short_side == 110 and cfg.workers == 0  # round(96 * 256 / 224); cache loads in-process


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"train": "t"}, "model": {"bogus": 1}}, "model.bogus: Extra inputs are not permitted"),
        ({"data": {"train": "t"}, "model": {"arch": "x3d"}}, "model.arch: .*unknown arch 'x3d'"),
        ({"data": {"train": "t"}, "model": {"size": 96, "resize_short": 90}}, "resize_short \\(90\\) must be >= size"),
        ({"data": {"train": "t"}, "augment": {"area_range": [0.9, 0.1]}}, "augment.area_range: .*low <= high"),
        ({"data": {"train": "t", "cache": True}, "num_workers": 2}, "data.cache keeps frames in the main process"),
        ({"model": {}}, "data: Field required"),
    ],
)
def test_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        build_config(raw, source="my.yaml")


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot read config"):
        load_config(path)
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("arch", "depth", "width", "size", "short", "resize_to", "extra"),
    [
        ("x3d_s_13x6x1", None, 24, 182, 182, None, {}),
        ("c3d_sports1m", None, 64, 112, 128, None, {"size": 112}),  # C3D's fc6 follows the crop
        ("ircsn_r152", 152, 64, 224, 256, None, {}),
        ("tsm_r50_1x1x16", 50, 64, 224, 256, None, {"segments": 16}),  # TSM: built for its segments
        ("tsm_mobilenetv2_1x1x8", None, None, 224, 256, None, {"segments": 8}),
        ("s3d", None, 64, 224, 256, (256, 256), {}),  # torchvision's resize to 256x256, aspect not kept
    ],
)
def test_arch_defaults(arch, depth, width, size, short, resize_to, extra):
    cfg = build_config({"data": {"train": "t"}, "model": {"arch": arch}})
    assert (cfg.model.depth, cfg.model.width, cfg.model.size) == (depth, width, size)
    assert (cfg.model.short_side, cfg.model.resize_to) == (short, resize_to)
    knobs = {k: v for k, v in (("depth", depth), ("width", width)) if v is not None}
    assert cfg.model_args(5) == {"num_classes": 5, **knobs, **extra}


def test_smaller_crops_scale_the_arch_resize_and_segments_override():
    cfg = build_config({"data": {"train": "t"}, "model": {"arch": "s3d", "size": 64}})
    assert (cfg.model.short_side, cfg.model.resize_to) == (73, (73, 73))
    cfg = build_config({"data": {"train": "t"}, "model": {"arch": "tsm_r50_1x1x8"}, "sampling": {"segments": 4}})
    assert cfg.segments == 4 and cfg.model_args(3)["segments"] == 4


def test_knobs_an_arch_does_not_have_are_refused():
    with pytest.raises(ConfigError, match="x3d_s_13x6x1 has no depth"):
        build_config({"data": {"train": "t"}, "model": {"arch": "x3d_s_13x6x1", "depth": 50}})
    with pytest.raises(ConfigError, match="tsm_mobilenetv2_1x1x8 has no width"):
        build_config({"data": {"train": "t"}, "model": {"arch": "tsm_mobilenetv2_1x1x8", "width": 8}})
