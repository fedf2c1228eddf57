"""The archs beyond the first six, block by block: what makes each family what it is, checked on small tensors.

MMAction2 1.2.0 itself checks their key names, parameter counts and numerics (tests/parity/test_mmaction2_archs.py);
S3D is checked here against torchvision's, which this venv has.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from export.checkpoints import Checkpoint, load_weights
from export.models import ARCHS, Geometry, build_model
from export.models.layers import Conv2plus1d
from export.models.s3d import torchvision_key
from export.models.tsm import TemporalShift
from export.models.x3d import round_width


def test_temporal_shift_moves_an_eighth_of_the_channels_each_way():
    segments, channels = 3, 16
    x = torch.arange(2 * segments * channels, dtype=torch.float32).reshape(2 * segments, channels, 1, 1) + 1
    out = TemporalShift(nn.Identity(), segments, shift_div=8)(x).reshape(2, segments, channels)
    x = x.reshape(2, segments, channels)
    fold = channels // 8
    # channels [0, 2): segment t gets segment t + 1's, zeros at the end of each clip (never the next clip's)
    torch.testing.assert_close(out[:, :-1, :fold], x[:, 1:, :fold])
    assert (out[:, -1, :fold] == 0).all()
    # channels [2, 4): segment t gets segment t - 1's, zeros at the start
    torch.testing.assert_close(out[:, 1:, fold : 2 * fold], x[:, :-1, fold : 2 * fold])
    assert (out[:, 0, fold : 2 * fold] == 0).all()
    torch.testing.assert_close(out[:, :, 2 * fold :], x[:, :, 2 * fold :])


def test_tsm_shifts_the_first_convolution_of_residual_branches_only():
    model = build_model("tsm_r50_1x1x8", num_classes=5, depth=50, width=8)
    shifts = [name for name, m in model.named_modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == 3 + 4 + 6 + 3 and all(s.endswith(".conv1.conv") for s in shifts)
    assert all(m.segments == 8 for m in model.modules() if isinstance(m, TemporalShift))
    deep = build_model("tsm_r50_1x1x8", num_classes=5, depth=101, width=8)  # ResNet-101 on: every other block
    assert sum(isinstance(m, TemporalShift) for m in deep.modules()) == 2 + 2 + 12 + 2
    mobile = build_model("tsm_mobilenetv2_1x1x8", num_classes=5)  # blocks with an expansion and a shortcut
    shifted = [n for n, m in mobile.named_modules() if isinstance(m, TemporalShift)]
    assert len(shifted) == 0 + 1 + 2 + 3 + 2 + 2 + 0 and all(n.endswith(".conv.0") for n in shifted)  # not firsts


def test_tsm_is_built_for_its_segment_count():
    assert build_model("tsm_r50_1x1x16", num_classes=5, depth=18, width=8).backbone.segments == 16
    model = build_model("tsm_r50_1x1x8", num_classes=5, depth=18, width=8, segments=4).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 4, 3, 32, 32)).shape == (2, 5)
        with pytest.raises(ValueError, match="built for 4 segments, got 8"):
            model(torch.randn(1, 8, 3, 32, 32))


def test_tsm_head_averages_per_segment_logits():
    model = build_model("tsm_r50_1x1x8", num_classes=5, depth=18, width=8, segments=3).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        features = model.backbone(x.flatten(0, 1)).mean(dim=(2, 3))
        expected = model.cls_head.fc_cls(features).reshape(2, 3, 5).mean(dim=1)
        torch.testing.assert_close(model(x), expected)


def test_c3d_fc6_takes_the_flattened_last_pool():
    assert build_model("c3d_sports1m").backbone.fc6.in_features == 8192  # MMAction2's out_dim: 512 x 1 x 4 x 4
    assert build_model("c3d_sports1m", width=8, size=64).backbone.fc6.in_features == 64 * 1 * 3 * 3
    state = build_model("c3d_sports1m", width=8, size=64).state_dict()
    assert "backbone.conv1a.conv.bias" in state and not any(".bn." in k for k in state)  # biases, no BatchNorm


def test_r2plus1d_factorises_every_convolution():
    model = build_model("r2plus1d_r34_8x8")
    stem = model.backbone.conv1.conv
    assert isinstance(stem, Conv2plus1d)
    # MMAction2's middle width: int(3 * 3 * 64 * 49 / (3 * 49 + 3 * 64)) = 83
    assert stem.conv_s.weight.shape == (83, 3, 1, 7, 7) and stem.conv_t.weight.shape == (64, 83, 3, 1, 1)
    assert (stem.bn_s.eps, model.backbone.conv1.bn.eps) == (1e-5, 1e-3)  # MMAction2's: the inner BN keeps 1e-5
    shortcut = model.backbone.layer2[0].downsample.conv  # 1x1x1, temporal and spatial stride 2
    assert (shortcut.conv_s.stride, shortcut.conv_t.stride) == ((1, 2, 2), (2, 1, 1))
    x = torch.randn(1, 3, 8, 64, 64)
    assert build_model("r2plus1d_r34_8x8", depth=18, width=8).backbone(x).shape == (1, 64, 1, 2, 2)


@pytest.mark.parametrize(("arch", "depthwise"), [("ircsn_r152", "conv2.0"), ("ipcsn_r152", "conv2.1")])
def test_csn_middle_convolution_is_depthwise(arch, depthwise):
    block = build_model(arch, num_classes=5, depth=50, width=8).backbone.layer2[0]
    conv = block.get_submodule(depthwise).conv
    assert conv.groups == conv.in_channels == conv.out_channels == 16
    assert conv.kernel_size == (3, 3, 3) and conv.stride == (2, 2, 2)
    assert len(block.conv2) == (2 if arch == "ipcsn_r152" else 1)
    assert block.conv1.bn.eps == 1e-3


def test_x3d_blocks_widths_and_squeeze_excitation():
    backbone = build_model("x3d_s_13x6x1").backbone
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [3, 5, 11, 7]  # ceil(2.2 x 1, 2, 5, 3)
    block = backbone.layer2[0]
    assert block.conv2.conv.groups == block.conv2.conv.in_channels == int(48 * 2.25)
    assert [b.se_module is not None for b in backbone.layer2] == [True, False, True, False, True]
    assert block.se_module.fc1.out_channels == round_width(108, 1 / 16) == 8
    assert backbone.conv1_t.conv.groups == 24 and backbone.conv5.conv.out_channels == 432


def test_geometry_scales_the_resize_with_the_crop():
    assert ARCHS["c3d_sports1m"].geometry() == Geometry(112, 128)
    assert ARCHS["x3d_s_13x6x1"].geometry(64) == Geometry(64, 64)
    assert ARCHS["i3d_r50"].geometry(64) == Geometry(64, 73)  # round(64 * 256 / 224), as before
    assert ARCHS["s3d"].geometry(64) == Geometry(64, 73, (73, 73))


def randomised_torchvision_s3d(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.video.s3d(num_classes=num_classes).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        model.classifier[1].weight.mul_(20)  # probabilities away from uniform
    return model


def test_s3d_key_map_covers_torchvision_s3d_one_to_one():
    ours = build_model("s3d").state_dict()
    theirs = torchvision.models.video.s3d().state_dict()
    mapped = {torchvision_key(k): k for k in ours}
    assert set(mapped) == set(theirs)
    for tv, k in mapped.items():
        assert theirs[tv].numel() == ours[k].numel(), k
    assert torchvision_key("backbone.mixed_3b.branch1.1.spatial.bn.weight") == "features.5.branch1.1.0.1.weight"
    assert torchvision_key("backbone.conv_2b.conv.weight") == "features.2.0.weight"


def test_s3d_matches_torchvision_with_its_weights():
    """torchvision's state dict loads as it is (renamed by the model) and gives the same probabilities."""
    reference = randomised_torchvision_s3d(7)
    ckpt = Checkpoint(path="torchvision-s3d.pth", state_dict=reference.state_dict())
    model = build_model("s3d", num_classes=7).eval()
    load_weights(model, ckpt)
    x = torch.randn(2, 3, 16, 224, 224, generator=torch.Generator().manual_seed(2))  # its min_size, 2 time steps
    with torch.no_grad():
        theirs, ours = reference(x).softmax(1), model(x).softmax(1)
    assert theirs.max() > 0.3  # not uniform
    assert (ours - theirs).abs().max() < 1e-5
