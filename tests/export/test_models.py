"""Model zoo: forward shapes, exact parameter counts and MMAction2 1.2.0 state-dict compatibility.

The key names and parameter counts of the archs added after the first six are checked against MMAction2 itself in
tests/parity/test_mmaction2_archs.py (S3D: against torchvision, below)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from export.models import ARCHS, build_model, slowfast_r50_4x16, slowfast_r50_8x8

SMALL = {"depth": 18, "width": 8}
SIZE = 64
TSN_SEGMENTS = 3
NUM_CLASSES = 5

# Our arch -> entry in ../shared/data/reference/mmaction2_1.2.0_state_dict_keys.json
REFERENCE_NAME = {
    "tsn_r50": "tsn_r50",
    "i3d_r50": "i3d_r50",
    "slowonly_r50_4x16": "slowonly_r50",
    "slowonly_r50_8x8": "slowonly_r50",
    "slowfast_r50_4x16": "slowfast_r50",
}

# MMAction2 1.2.0, its configs' classes (400; C3D's UCF101 config: 101), depths and widths; S3D: torchvision's.
NUM_PARAMS = {
    "tsn_r50": 24_327_632,
    "i3d_r50": 28_043_472,
    "slowonly_r50_4x16": 32_454_096,
    "slowonly_r50_8x8": 32_454_096,
    "slowfast_r50_4x16": 34_479_288,
    # 4x16 plus the wider lateral kernels (7 instead of 5) on 8->16, 32->64, 64->128, 128->256 channels.
    "slowfast_r50_8x8": 34_479_288 + 2 * (16 * 8 + 64 * 32 + 128 * 64 + 256 * 128),
    "c3d_sports1m": 78_409_573,
    "r2plus1d_r34_8x8": 63_759_281,
    "r2plus1d_r34_32x2": 63_759_281,
    "ircsn_r152": 29_703_568,
    "ipcsn_r152": 33_016_592,
    "tsm_r50_1x1x8": 24_327_632,
    "tsm_r50_1x1x16": 24_327_632,
    "tsm_mobilenetv2_1x1x8": 2_736_272,
    "x3d_s_13x6x1": 3_794_322,
    "x3d_m_16x5x1": 3_794_322,
    "s3d": 8_320_048,  # torchvision.models.video.s3d's meta["num_params"]
    # the flow configs: conv1 takes 10 channels (TSN, 5 stacked fields) or 2 (SlowOnly) instead of 3
    "tsn_r50_flow": 24_327_632 + 64 * 7 * 7 * (10 - 3),
    "slowonly_r50_flow": 32_454_096 + 64 * 1 * 7 * 7 * (2 - 3),
}


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small_args(arch: str, **overrides) -> dict:
    """Small-model arguments for the knobs ``arch`` has (C3D: ``size``; TSM: ``segments``)."""
    a = ARCHS[arch]
    args = {"num_classes": NUM_CLASSES, "depth": 50 if "csn" in arch or "tsm" in arch else 18, "width": 8}
    args |= {"size": SIZE, "segments": TSN_SEGMENTS} | overrides
    return {k: v for k, v in args.items() if k == "num_classes" or a.takes(k)}


def example_inputs(arch: str, batch: int, *, size: int = SIZE) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    a = ARCHS[arch]
    channels = 2 * a.pairs if a.modality == "flow" else 3  # flow: x, y per stacked field
    if a.kind == "2d":
        return (torch.randn(batch, TSN_SEGMENTS, channels, size, size, generator=g),)
    return tuple(torch.randn(batch, channels, s.frames, size, size, generator=g) for s in a.inputs)


@pytest.fixture(scope="module")
def reference(shared_data) -> dict:
    return json.loads((shared_data / "reference/mmaction2_1.2.0_state_dict_keys.json").read_text())


def test_archs_lists_the_models():
    assert set(ARCHS) == {
        "tsn_r50",
        "i3d_r50",
        "slowonly_r50_4x16",
        "slowonly_r50_8x8",
        "slowfast_r50_4x16",
        "slowfast_r50_8x8",
        "c3d_sports1m",
        "r2plus1d_r34_8x8",
        "r2plus1d_r34_32x2",
        "ircsn_r152",
        "ipcsn_r152",
        "tsm_r50_1x1x8",
        "tsm_r50_1x1x16",
        "tsm_mobilenetv2_1x1x8",
        "x3d_s_13x6x1",
        "x3d_m_16x5x1",
        "s3d",
        "tsn_r50_flow",
        "slowonly_r50_flow",
    }
    assert ARCHS["tsn_r50"].kind == "2d"
    assert [s.name for s in ARCHS["i3d_r50"].inputs] == ["clip"]
    assert [(s.name, s.frames, s.interval) for s in ARCHS["slowfast_r50_4x16"].inputs] == [
        ("slow", 4, 16),
        ("fast", 32, 2),
    ]
    assert [(s.name, s.frames, s.interval) for s in ARCHS["slowfast_r50_8x8"].inputs] == [
        ("slow", 8, 8),
        ("fast", 32, 2),
    ]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_forward_shape(arch):
    torch.manual_seed(0)
    model = build_model(arch, **small_args(arch)).eval()
    with torch.no_grad():
        out = model(*example_inputs(arch, batch=2))
    assert out.shape == (2, NUM_CLASSES)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_forward_batch_items_are_independent(arch):
    """In eval mode each clip's logits depend only on that clip (no batch mixing, e.g. TSN's segment fold)."""
    torch.manual_seed(0)
    model = build_model(arch, **small_args(arch)).eval()
    inputs = example_inputs(arch, batch=2)
    with torch.no_grad():
        both = model(*inputs)
        second = model(*(x[1:] for x in inputs))
    torch.testing.assert_close(both[1:], second, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_num_params_full_size(arch):
    model = build_model(arch)  # the builders' defaults are the configs'
    assert num_params(model) == NUM_PARAMS[arch]


@pytest.mark.parametrize("arch", sorted(REFERENCE_NAME))
def test_state_dict_matches_mmaction2(arch, reference):
    ref = reference[REFERENCE_NAME[arch]]
    model = build_model(arch, num_classes=400, depth=50, width=64)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: list(v) for k, v in ref["state_dict"].items()}
    assert sorted(set(theirs) - set(ours)) == []  # missing in ours
    assert sorted(set(ours) - set(theirs)) == []  # extra in ours
    assert {k: v for k, v in ours.items() if theirs[k] != v} == {}
    assert num_params(model) == ref["num_params"]


def test_slowfast_8x8_state_dict_differs_from_reference_only_in_lateral_kernels(reference):
    theirs = {k: list(v) for k, v in reference["slowfast_r50"]["state_dict"].items()}
    ours = {k: list(v.shape) for k, v in slowfast_r50_8x8().state_dict().items()}
    assert set(ours) == set(theirs)
    different = {k for k in ours if ours[k] != theirs[k]}
    assert different == {
        "backbone.slow_path.conv1_lateral.conv.weight",
        "backbone.slow_path.layer1_lateral.conv.weight",
        "backbone.slow_path.layer2_lateral.conv.weight",
        "backbone.slow_path.layer3_lateral.conv.weight",
    }
    for k in different:
        assert theirs[k][2] == 5 and ours[k][2] == 7
        assert ours[k][:2] + ours[k][3:] == theirs[k][:2] + theirs[k][3:]


def test_slowfast_lateral_kernel_and_stride():
    fast = slowfast_r50_8x8().backbone.slow_path.conv1_lateral.conv
    assert list(fast.weight.shape) == [16, 8, 7, 1, 1]
    assert fast.stride == (4, 1, 1)
    assert fast.padding == (3, 0, 0)
    slow = slowfast_r50_4x16().backbone.slow_path.conv1_lateral.conv
    assert list(slow.weight.shape) == [16, 8, 5, 1, 1]
    assert slow.stride == (8, 1, 1)
    assert slow.padding == (2, 0, 0)


BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _blocks_per_stage(state: dict, prefix: str) -> tuple[int, ...]:
    counts = []
    for stage in range(1, 5):
        head = f"{prefix}layer{stage}."
        counts.append(len({k[len(head) :].split(".")[0] for k in state if k.startswith(head)}))
    return tuple(counts)


@pytest.mark.parametrize("depth", [18, 34])
@pytest.mark.parametrize("arch", ["tsn_r50", "i3d_r50", "slowonly_r50_8x8", "slowfast_r50_4x16"])
def test_shallow_depths_build_and_run(arch, depth):
    """ResNet-18/34: basic blocks (two convolutions, no expansion), 2-2-2-2 / 3-4-6-3 blocks per stage."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=NUM_CLASSES, depth=depth, width=8).eval()
    state = model.state_dict()
    prefix = "backbone.slow_path." if ARCHS[arch].kind == "slowfast" else "backbone."
    assert _blocks_per_stage(state, prefix) == BLOCKS[depth]
    assert f"{prefix}layer1.0.conv2.conv.weight" in state
    assert not any(".conv3." in k for k in state)
    head_in = state["cls_head.fc_cls.weight"].shape[1]
    expected_in = 8 * 8 + (8 // 8) * 8 if ARCHS[arch].kind == "slowfast" else 8 * 8  # width * 8, no expansion
    assert head_in == expected_in
    with torch.no_grad():
        out = model(*example_inputs(arch, batch=1, size=32))
    assert out.shape == (1, NUM_CLASSES)
    assert torch.isfinite(out).all()


def test_depth_50_uses_bottlenecks():
    state = build_model("i3d_r50", num_classes=NUM_CLASSES, depth=50, width=8).state_dict()
    assert _blocks_per_stage(state, "backbone.") == (3, 4, 6, 3)
    assert "backbone.layer1.0.conv3.conv.weight" in state
    assert state["cls_head.fc_cls.weight"].shape[1] == 8 * 8 * 4


def test_num_classes_sets_head_size():
    model = build_model("tsn_r50", num_classes=7, **SMALL)
    assert model.state_dict()["cls_head.fc_cls.weight"].shape[0] == 7


def test_unknown_arch_lists_known_archs():
    with pytest.raises(ValueError) as err:
        build_model("resnet_nope")
    message = str(err.value)
    assert "resnet_nope" in message
    for name in ARCHS:
        assert name in message


def test_builders_are_keyword_only():
    with pytest.raises(TypeError):
        ARCHS["i3d_r50"].build(400)
