"""Parity with MMAction2 1.2.0 for the flow models (``tsn_r50_flow``, ``slowonly_r50_flow``), in two steps.

1. The flow: MMAction2's own ``flow_extraction.py`` functions (``generate_flow`` + ``flow_to_img``, on frames read
   with ``cv2.VideoCapture``) and the agent's (PyAV decoding, the model's resize, :mod:`agent.flow`) on the same
   frame pairs of ``demo.mp4`` (28 fps; the specs say 28 fps too, so no pair is rescaled), each method: the
   quantised images must agree within ±1 grey level on at least 99 % of the pixels the model sees.
2. The models: MMAction2 builds each from its config (random weights, perturbed BatchNorm statistics), scores
   *its* flow; ``export/to_onnx.py`` exports that checkpoint (strict key check), and ONNX Runtime scores the same
   flow: |Δprob| ≤ 1e-4. The agent's flow through the same file is reported beside.

Also: the configs' full-size state-dict keys, shapes and parameter counts equal ours.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import onnxruntime
import pytest

from agent.flow import centre_crop, chain_indices
from agent.offline.video import frame_times, read_clips
from agent.spec import load_spec
from bench import mmaction2_venv
from export import to_onnx
from export.models import build_model

TSN_FLOW = "recognition/tsn/tsn_imagenet-pretrained-r50_8xb32_5x1x3-110e_kinetics400-flow.py"
SLOWONLY_FLOW = "recognition/slowonly/slowonly_r50_8xb16-16x4x1-256e_kinetics400-flow.py"
FPS = 28  # demo.mp4's rate: consecutive frames are the flow pairs, as in MMAction2's extraction
END_S = 6.0
METHODS = ("tvl1", "farneback")

CLASSES = 7
# our arch -> (MMAction2 config, its overrides (7 classes; small where the config allows), our export flags for it,
# the format MMAction2 runs)
FLOW_ARCHS = {
    "tsn_r50_flow": (TSN_FLOW, {"cls_head": {"num_classes": CLASSES}}, [], "NCHW"),
    "slowonly_r50_flow": (
        SLOWONLY_FLOW,
        {"backbone": {"base_channels": 8}, "cls_head": {"in_channels": 256, "num_classes": CLASSES}},
        ["--width", "8"],
        "NCTHW",
    ),
}


@pytest.fixture(scope="module")
def flow_run(shared_data, tmp_path_factory):
    """Per arch and method: the agent's flow and MMAction2's; MMAction2's checkpoints and probabilities; keys."""
    work = tmp_path_factory.mktemp("parity-flow")
    video = shared_data / "mmaction2/demo/demo.mp4"
    labels = work / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(CLASSES)))
    times = frame_times(video)
    ours, flows, jobs = {}, [], []
    for arch in FLOW_ARCHS:
        for method in METHODS:
            spec = to_onnx.clip_spec(arch, [str(i) for i in range(CLASSES)], fps=FPS, flow_method=method)
            inp = spec.flow_input
            chains = chain_indices(inp, times, END_S)
            ours[arch, method] = (spec, read_clips(video, spec, ends=[END_S])[0].inputs["clip"])
            pairs = [[int(a), int(b)] for chain in chains for a, b in zip(chain[:-1], chain[1:], strict=True)]
            out = work / f"{arch}-{method}-mmaction2-flow.npy"
            flows.append({"method": method, "bound": inp.flow.bound, "pairs": pairs, "out": str(out)})
    request = {"video": str(video), "flows": flows}
    (work / "flows.json").write_text(json.dumps(request))
    side = mmaction2_venv.ROOT / "tests/parity/mmaction2_flow_side.py"
    python = str(mmaction2_venv.python())
    subprocess.run([python, str(side), str(work / "flows.json")], check=True, timeout=1800)
    theirs = {}
    for arch in FLOW_ARCHS:
        for method in METHODS:
            spec = ours[arch, method][0]
            full = np.load(work / f"{arch}-{method}-mmaction2-flow.npy")
            theirs[arch, method] = np.stack([centre_crop(f, spec.size) for f in full])  # MMAction2's CenterCrop
    for seed, (arch, (config, overrides, _, shape)) in enumerate(FLOW_ARCHS.items(), start=300):
        np.save(work / f"{arch}-flow.npy", theirs[arch, "tvl1"])
        jobs.append(
            {
                "config": config,
                "overrides": overrides,
                "seed": seed,
                "flow": str(work / f"{arch}-flow.npy"),
                "clip_len": ours[arch, "tvl1"][0].flow_input.flow.pairs,
                "format_shape": shape,
                "checkpoint": str(work / f"{arch}.pth"),
                "probs": str(work / f"{arch}-mmaction2.npy"),
            }
        )
    request = {
        "jobs": jobs,
        "keys": {arch: config for arch, (config, *_) in FLOW_ARCHS.items()},
        "keys_out": str(work / "keys.json"),
    }
    (work / "models.json").write_text(json.dumps(request))
    subprocess.run([python, str(side), str(work / "models.json")], check=True, timeout=1800)
    return work, labels, ours, theirs, json.loads((work / "keys.json").read_text())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", list(FLOW_ARCHS))
def test_flow_images_match_mmaction2s_flow_extraction(flow_run, arch, method):
    _, _, ours, theirs, _ = flow_run
    mine, reference = ours[arch, method][1].astype(int), theirs[arch, method].astype(int)
    assert mine.shape == reference.shape
    assert 5 < reference.std() < 60, f"degenerate reference flow (std {reference.std():.3g})"  # motion, not still
    within = float((np.abs(mine - reference) <= 1).mean())
    print(f"{arch} {method}: {within:.4%} of flow pixels within ±1 grey level of MMAction2's (largest Δ "
          f"{np.abs(mine - reference).max()}, exact {float((mine == reference).mean()):.2%})")  # fmt: skip
    assert within >= 0.99


@pytest.mark.parametrize("arch", list(FLOW_ARCHS))
def test_probabilities_match_mmaction2_through_onnx(flow_run, arch):
    work, labels, ours, theirs, _ = flow_run
    out = work / f"{arch}.onnx"
    flags = FLOW_ARCHS[arch][2]
    argv = ["--arch", arch, "--checkpoint", str(work / f"{arch}.pth"), "--labels", str(labels), "--out", str(out)]
    assert to_onnx.main([*argv, *flags, "--fps", str(FPS), "--flow-method", "tvl1"]) == 0
    spec = load_spec(out)
    assert spec.flow_input.flow.method == "tvl1" and spec.flow_input.flow.step_s == pytest.approx(1 / FPS)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["scores"], {"clip": theirs[arch, "tvl1"][None]})[0][0]
    reference = np.load(work / f"{arch}-mmaction2.npy")
    assert got.shape == reference.shape == (CLASSES,)
    assert 2.0 / CLASSES < reference.max() < 0.99, f"degenerate reference probabilities (max {reference.max():.3g})"
    delta = float(np.abs(got - reference).max())
    agent = session.run(["scores"], {"clip": ours[arch, "tvl1"][1][None]})[0][0]
    print(f"{arch}: max |Δprob| vs MMAction2 = {delta:.3g} on MMAction2's flow; "
          f"{float(np.abs(agent - reference).max()):.3g} on the agent's")  # fmt: skip
    assert delta <= 1e-4
    assert got.argmax() == reference.argmax()


@pytest.mark.parametrize("arch", list(FLOW_ARCHS))
def test_full_size_keys_shapes_and_parameter_count_match_mmaction2(flow_run, arch):
    theirs = flow_run[4][arch]
    model = build_model(arch)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(theirs["state_dict"]) ^ set(ours)) == []
    assert {k: v for k, v in ours.items() if theirs["state_dict"][k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == theirs["num_params"]
