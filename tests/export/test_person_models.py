"""Person (AVA-style) models: shapes, MMAction2 1.2.0 AVA key names, RoI routing and MMAction2's RoI numerics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision.ops import roi_align

from export.checkpoints import CheckpointError, load_weights, read_checkpoint, save_checkpoint
from export.models import ARCHS, PERSON_ARCHS, build_model
from export.models.detection import BBoxHeadAVA, SingleRoIExtractor3D

SMALL = {"depth": 18, "width": 8}
# MMAction2 1.2.0 AVA detectors (action part) built in the reference venv: key -> shape, parameter count.
REFERENCE = Path(__file__).parent / "data" / "mmaction2_1.2.0_ava_state_dict_keys.json"
REFERENCE_NAME = {
    "ava_slowonly_r50_4x16": "slowonly_r50_4x16_ava21",
    "ava_slowonly_r50_8x8": "slowonly_r50_8x8_ava_kinetics",
    "ava_slowfast_r50_4x16": "slowfast_r50_4x16_ava21",
    "ava_slowfast_r50_8x8": "slowfast_r50_8x8_ava21",
}


def clips(arch: str, batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Normalised clips; SlowFast's slow clip is every alpha-th fast frame, as the contract says."""
    g = torch.Generator().manual_seed(seed)
    sampling = PERSON_ARCHS[arch].inputs
    fast = torch.randn(batch, 3, sampling[-1].frames, height, width, generator=g)
    return tuple(fast[:, :, :: sampling[-1].frames // s.frames] for s in sampling)


ROIS = torch.tensor([[0, 3.0, 5.0, 60.0, 40.0], [1, 0.0, 0.0, 96.0, 64.0], [1, 40.5, 10.0, 70.0, 63.0]])


def test_person_archs_and_sampling():
    assert set(PERSON_ARCHS).isdisjoint(ARCHS)  # the trainer's clip archs are unchanged
    got = {a: [(s.name, s.frames, s.interval) for s in PERSON_ARCHS[a].inputs] for a in PERSON_ARCHS}
    assert got == {
        "ava_slowonly_r50_4x16": [("clip", 4, 16)],
        "ava_slowonly_r50_8x8": [("clip", 8, 8)],
        "ava_slowfast_r50_4x16": [("slow", 4, 16), ("fast", 32, 2)],
        "ava_slowfast_r50_8x8": [("slow", 8, 8), ("fast", 32, 2)],
    }


@pytest.mark.parametrize("arch", sorted(PERSON_ARCHS))
def test_forward_one_row_per_box(arch):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL).eval()
    with torch.no_grad():
        out = model(*clips(arch, 2, 64, 96), rois=ROIS)
    assert out.shape == (3, 81)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ["ava_slowonly_r50_4x16", "ava_slowfast_r50_4x16"])
def test_backbone_keeps_stride_16(arch):
    model = build_model(arch, **SMALL).eval()
    with torch.no_grad():
        feats = model.backbone(*clips(arch, 1, 64, 96))
    for f in feats if isinstance(feats, tuple) else (feats,):
        assert f.shape[-2:] == (4, 6)


@pytest.mark.parametrize("arch", ["ava_slowonly_r50_4x16", "ava_slowfast_r50_4x16"])
def test_box_batch_routes_each_box_to_its_clip(arch):
    """A box on clip 1 of a batch scores as the same box on clip 0 of that clip alone."""
    torch.manual_seed(0)
    model = build_model(arch, **SMALL).eval()
    both = clips(arch, 2, 64, 96)
    with torch.no_grad():
        batched = model(*both, rois=ROIS)
        alone = model(*(c[1:] for c in both), rois=ROIS[1:] * torch.tensor([0, 1, 1, 1, 1]))
        swapped = model(*(c.flip(0) for c in both), rois=ROIS[:1] + torch.tensor([1, 0, 0, 0, 0]))
    torch.testing.assert_close(batched[1:], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batched[:1], swapped, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched[1], batched[2])


@pytest.mark.parametrize("arch", sorted(PERSON_ARCHS))
def test_state_dict_matches_mmaction2_ava(arch):
    ref = json.loads(REFERENCE.read_text())[REFERENCE_NAME[arch]]
    model = build_model(arch)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = ref["state_dict"]
    assert sorted(set(theirs) - set(ours)) == []  # missing in ours
    assert sorted(set(ours) - set(theirs)) == []  # extra in ours
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert ours["roi_head.bbox_head.fc_cls.weight"] == [81, 2304 if "slowfast" in arch else 2048]


def test_mmaction2_shaped_checkpoint_loads_strictly(tmp_path):
    source = build_model("ava_slowonly_r50_4x16", **SMALL).eval()
    path = tmp_path / "ava.pth"
    torch.save({"meta": {"epoch": 3}, "state_dict": source.state_dict()}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.num_classes == 81
    target = build_model("ava_slowonly_r50_4x16", **SMALL)
    load_weights(target, ckpt)
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_class_count_mismatch_and_reset_head(tmp_path):
    path = tmp_path / "ava.pth"
    save_checkpoint(path, build_model("ava_slowonly_r50_4x16", **SMALL), arch="ava_slowonly_r50_4x16", model_args={})
    model = build_model("ava_slowonly_r50_4x16", num_classes=5, **SMALL)
    with pytest.raises(CheckpointError, match="81 classes") as error:
        load_weights(model, read_checkpoint(path))
    assert "--reset-head" in str(error.value) and str(path) in str(error.value)
    head = model.roi_head.bbox_head.fc_cls.weight.clone()
    load_weights(model, read_checkpoint(path), reset_head=True)
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, head)


def test_missing_head_key_is_named(tmp_path):
    state = build_model("ava_slowonly_r50_4x16", **SMALL).state_dict()
    del state["roi_head.bbox_head.fc_cls.bias"]
    path = tmp_path / "ava.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="missing keys.*roi_head.bbox_head.fc_cls.bias"):
        load_weights(build_model("ava_slowonly_r50_4x16", **SMALL), read_checkpoint(path))


def test_roi_extractor_numerics():
    """MMAction2's SingleRoIExtractor3D: resample pathways to the longest t (nearest), average over t, concatenate
    (slow, fast), RoIAlign 8x8 at 1/16, aligned, adaptive sampling; output [K, C, 1, 8, 8]."""
    g = torch.Generator().manual_seed(0)
    slow, fast = torch.randn(2, 6, 4, 5, 7, generator=g), torch.randn(2, 2, 32, 5, 7, generator=g)
    rois = ROIS * torch.tensor([1, 0.9, 0.9, 0.9, 0.9])
    got = SingleRoIExtractor3D()((slow, fast), rois)
    resampled = [torch.nn.functional.interpolate(x, (32, 5, 7)) for x in (slow, fast)]
    pooled = torch.cat([x.mean(dim=2) for x in resampled], dim=1)
    expected = roi_align(pooled, rois, 8, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)[:, :, None]
    assert got.shape == (3, 8, 1, 8, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_bbox_head_pools_mean_time_max_space():
    head = BBoxHeadAVA(4, 3).eval()
    x = torch.randn(2, 4, 3, 8, 8)
    with torch.no_grad():
        expected = head.fc_cls(x.mean(dim=2).flatten(2).max(dim=2).values)
        torch.testing.assert_close(head(x), expected)
