"""Parity with MMAction2 1.2.0 itself for the archs added after the first six (C3D, R(2+1)D, CSN, TSM, X3D):
same weights, same frames → same probabilities; and the configs' full-size state-dict keys, shapes and parameter
counts equal ours.

MMAction2 builds each model from its own config file (``mmaction2_archs_side.py``), small where the config allows
(``base_channels``; C3D and the 2D ResNet/MobileNetV2 have fixed widths and run at full size), randomises weights and
BatchNorm statistics and saves a checkpoint; ours loads it with strict key checks and runs the graph the exporter
wraps (uint8 frames, normalised inside, softmax) on frames of ``demo.mp4`` decoded by the agent. ONNX Runtime
against that graph is tests/export/test_to_onnx_archs.py's part (small exports of every network, without MMAction2).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from agent.offline.video import read_clips
from bench import mmaction2_venv
from export import to_onnx
from export.checkpoints import load_weights, read_checkpoint
from export.models import ARCHS, build_model

R2PLUS1D = "recognition/r2plus1d/r2plus1d_r34_8xb8-{}-180e_kinetics400-rgb.py"
IRCSN = "recognition/csn/ircsn_ig65m-pretrained-r152_8xb12-32x2x1-58e_kinetics400-rgb.py"
IPCSN = "recognition/csn/ipcsn_ig65m-pretrained-r152-bnfrozen_32x2x1-58e_kinetics400-rgb.py"
TSM_R50 = "recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x{}-50e_kinetics400-rgb.py"
TSM_MOBILENET = "recognition/tsm/tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x8-100e_kinetics400-rgb.py"
X3D = "recognition/x3d/x3d_{}_facebook-kinetics400-rgb.py"


def small(width: int, head_in: int) -> dict:
    return {"backbone": {"base_channels": width}, "cls_head": {"in_channels": head_in}}


# X3D: gamma_w 1/3 gives base channels round_width(24 / 3) = 8; the head takes int(8 * 8 * 2.25)
SMALL_X3D = {"backbone": {"gamma_w": 1 / 3}, "cls_head": {"in_channels": 144}}


# our arch -> (MMAction2 config, its overrides for the small model, our model arguments, crop size of the run)
ARCHS_UNDER_TEST = {
    "c3d_sports1m": ("recognition/c3d/c3d_sports1m-pretrained_8xb30-16x1x1-45e_ucf101-rgb.py", {}, {}, 112),
    "r2plus1d_r34_8x8": (R2PLUS1D.format("8x8x1"), small(8, 64), {"width": 8}, 112),
    "r2plus1d_r34_32x2": (R2PLUS1D.format("32x2x1"), small(8, 64), {"width": 8}, 96),
    "ircsn_r152": (IRCSN, small(8, 256), {"width": 8}, 96),
    "ipcsn_r152": (IPCSN, small(8, 256), {"width": 8}, 96),
    "tsm_r50_1x1x8": (TSM_R50.format(8), {}, {}, 96),
    "tsm_r50_1x1x16": (TSM_R50.format(16), {}, {}, 64),
    "tsm_mobilenetv2_1x1x8": (TSM_MOBILENET, {}, {}, 112),
    "x3d_s_13x6x1": (X3D.format("s_13x6x1"), SMALL_X3D, {"width": 8}, 112),
    "x3d_m_16x5x1": (X3D.format("m_16x5x1"), SMALL_X3D, {"width": 8}, 96),
}  # fmt: skip


@pytest.fixture(scope="module")
def mmaction2_run(shared_data, tmp_path_factory):
    """MMAction2's checkpoints and probabilities for every arch, and its full-size key sets; our frames."""
    work = tmp_path_factory.mktemp("parity-archs")
    video = shared_data / "mmaction2/demo/demo.mp4"
    jobs, frames = [], {}
    for seed, (arch, (config, overrides, _, size)) in enumerate(ARCHS_UNDER_TEST.items(), start=100):
        spec = to_onnx.clip_spec(arch, [str(i) for i in range(5)], size=size)
        clip = read_clips(video, spec, ends=[6.0])[0].inputs["clip"]
        frames[arch] = (spec, clip)
        np.save(work / f"{arch}.npy", clip)
        jobs.append(
            {
                "config": config,
                "overrides": overrides,
                "seed": seed,
                "clip": str(work / f"{arch}.npy"),
                "format_shape": "NCHW" if ARCHS[arch].kind == "2d" else "NCTHW",
                "checkpoint": str(work / f"{arch}.pth"),
                "probs": str(work / f"{arch}-mmaction2.npy"),
            }
        )
    request = {
        "jobs": jobs,
        "keys": {arch: config for arch, (config, *_) in ARCHS_UNDER_TEST.items()},
        "keys_out": str(work / "keys.json"),
    }
    (work / "request.json").write_text(json.dumps(request))
    side = mmaction2_venv.ROOT / "tests/parity/mmaction2_archs_side.py"
    subprocess.run([str(mmaction2_venv.python()), str(side), str(work / "request.json")], check=True, timeout=1800)
    return work, frames, json.loads((work / "keys.json").read_text())


@pytest.mark.parametrize("arch", list(ARCHS_UNDER_TEST))
def test_probabilities_match_mmaction2(mmaction2_run, arch):
    work, frames, _ = mmaction2_run
    spec, clip = frames[arch]
    ckpt = read_checkpoint(work / f"{arch}.pth")
    args = {"num_classes": ckpt.num_classes, **ARCHS_UNDER_TEST[arch][2]}
    a = ARCHS[arch]
    args |= {"size": spec.size} if a.takes("size") else {}
    model = build_model(arch, **args).eval()
    load_weights(model, ckpt)  # strict: every key of MMAction2's checkpoint, with its shape
    graph = to_onnx.ClipsToScores(model, a.kind, mean=spec.mean, std=spec.std).eval()
    with torch.no_grad():
        ours = graph(torch.from_numpy(clip[None])).numpy()[0]
    theirs = np.load(work / f"{arch}-mmaction2.npy")
    assert ours.shape == theirs.shape == (ckpt.num_classes,)
    # a meaningful reference: neither uniform nor one-hot (either would make |Δprob| trivially small)
    assert 2.0 / len(theirs) < theirs.max() < 0.99, f"degenerate reference probabilities (max {theirs.max():.3g})"
    delta = float(np.abs(ours - theirs).max())
    print(f"{arch}: max |Δprob| vs MMAction2 = {delta:.3g}")
    assert delta <= 1e-4
    assert ours.argmax() == theirs.argmax()


@pytest.mark.parametrize("arch", list(ARCHS_UNDER_TEST))
def test_full_size_keys_shapes_and_parameter_count_match_mmaction2(mmaction2_run, arch):
    theirs = mmaction2_run[2][arch]
    model = build_model(arch)  # the builder's defaults: the config's depth, width and classes
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(theirs["state_dict"]) - set(ours)) == []  # missing in ours
    assert sorted(set(ours) - set(theirs["state_dict"])) == []  # extra in ours
    assert {k: v for k, v in ours.items() if theirs["state_dict"][k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == theirs["num_params"]
