"""export/to_onnx.py on the archs beyond the first six: each config's sampling, test crop, mean and std in the spec;
small models exported from a checkpoint agree with PyTorch; the graphs hold only standard ONNX operators that ONNX
Runtime's CPU and CUDA providers both implement (TSM's shift is slices and concatenations, CSN's and X3D's
depthwise convolutions are grouped ``Conv`` nodes, X3D's squeeze-excitation is ``ReduceMean``/``Sigmoid``/``Mul``).

Configs that share a network with another (x3d_m_16x5x1 and x3d_s_13x6x1, r2plus1d_r34_32x2 and _8x8,
tsm_r50_1x1x16 and _1x1x8) differ only in their spec, checked for every arch; their graphs are exported once (an
export costs seconds, mostly tracing). S3D is exported from a torchvision checkpoint, as its published weights are.
"""

from __future__ import annotations

import collections
import functools
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torchvision
import yaml

from agent import cli
from agent.offline.video import frame_times, read_clips
from agent.spec import ModelSpec, load_spec
from export import to_onnx
from export.checkpoints import load_weights, read_checkpoint, save_checkpoint
from export.models import ARCHS, build_model
from tests.export.test_models_archs import randomised_torchvision_s3d
from tests.rtsp_server import free_port
from tests.videos import pattern_video

SIZE = 64
LABELS = ["a", "b", "c", "d", "e"]
KINETICS_MEAN, KINETICS_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
# Operators the exported graphs may use: standard ONNX (default domain) with CPU and CUDA kernels in ONNX Runtime.
PORTABLE_OPS = {
    "Add", "Cast", "Clip", "Concat", "Conv", "Div", "Gemm", "MaxPool", "Mul", "ReduceMean", "Relu", "Reshape",
    "Sigmoid", "Slice", "Softmax", "Sub", "Transpose",
}  # fmt: skip


@dataclass(frozen=True)
class Case:
    model_args: dict  # small model (what the checkpoint says)
    flags: list[str]  # export flags besides --arch/--checkpoint/--labels/--out
    inputs: list[tuple[str, int, float]]  # expected spec inputs (name, frames, stride_s)
    geometry: tuple[int, int, tuple[int, int] | None]  # expected size, resize_short, resize_to


CASES = {
    "c3d_sports1m": Case({"width": 8, "size": SIZE}, ["--size", "64"], [("clip", 16, 1 / 30)], (64, 73, None)),
    "r2plus1d_r34_8x8": Case({"depth": 18, "width": 8}, ["--size", "64"], [("clip", 8, 8 / 30)], (64, 73, None)),
    "ircsn_r152": Case({"depth": 50, "width": 8}, ["--size", "64"], [("clip", 32, 2 / 30)], (64, 73, None)),
    "ipcsn_r152": Case(
        {"depth": 50, "width": 8}, ["--size", "64", "--fps", "25"], [("clip", 32, 2 / 25)], (64, 73, None)
    ),
    "tsm_r50_1x1x8": Case(
        {"depth": 18, "width": 8, "segments": 8},
        ["--size", "64", "--segments", "4", "--window-s", "2"],  # the export's segment count wins
        [("clip", 4, 0.5)],
        (64, 73, None),
    ),
    "tsm_mobilenetv2_1x1x8": Case({"segments": 8}, ["--size", "64"], [("clip", 8, 0.5)], (64, 73, None)),
    "x3d_s_13x6x1": Case({"width": 8}, ["--size", "64"], [("clip", 13, 6 / 30)], (64, 64, None)),
    "s3d": Case({}, ["--size", "32"], [("clip", 128, 2 / 30)], (32, 37, (37, 37))),  # torchvision's, full width
}

# The configs' own: sampling, test geometry (size, resize_short, resize_to), mean, std.
DEFAULTS = {
    "c3d_sports1m": ([(16, 1)], (112, 128, None), (104, 117, 128), (1, 1, 1)),
    "r2plus1d_r34_8x8": ([(8, 8)], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "r2plus1d_r34_32x2": ([(32, 2)], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "ircsn_r152": ([(32, 2)], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "ipcsn_r152": ([(32, 2)], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "tsm_r50_1x1x8": ([8], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "tsm_r50_1x1x16": ([16], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "tsm_mobilenetv2_1x1x8": ([8], (224, 256, None), KINETICS_MEAN, KINETICS_STD),
    "x3d_s_13x6x1": ([(13, 6)], (182, 182, None), (114.75,) * 3, (57.38,) * 3),
    "x3d_m_16x5x1": ([(16, 5)], (256, 256, None), (114.75,) * 3, (57.38,) * 3),
    "s3d": ([(128, 2)], (224, 256, (256, 256)), (110.2008, 100.63983, 95.99475), (58.14765, 56.46975, 55.332195)),
}


def classifier(model: torch.nn.Module) -> torch.nn.Linear:
    return model.cls_head.fc2 if hasattr(model.cls_head, "fc2") else model.cls_head.fc_cls


def trained_looking(arch: str, model_args: dict, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics far from their initial values, and a classifier scaled so that probabilities
    differ clearly between classes without saturating."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=len(LABELS), **model_args).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "bn.bias", "bn_s.bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(("running_var", "bn.weight", "bn_s.weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
        spec = to_onnx.clip_spec(arch, LABELS, size=SIZE, segments=getattr(model.backbone, "segments", None))
        clips = [torch.from_numpy(c) for c in uint8_clips(spec, 4, seed=seed).values()]
        graph = to_onnx.ClipsToScores(model, ARCHS[arch].kind, mean=spec.mean, std=spec.std)
        logits = graph.model(*(graph._prepare(c) for c in clips))
        classifier(model).weight.mul_(1.5 / (logits - logits.mean(dim=1, keepdim=True)).std())
    return model


def uint8_clips(spec: ModelSpec, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {i.name: rng.integers(0, 256, (batch, i.frames, spec.size, spec.size, 3), np.uint8) for i in spec.inputs}


@pytest.mark.parametrize("arch", sorted(DEFAULTS))
def test_spec_has_the_configs_sampling_crop_mean_and_std(arch):
    sampling, (size, short, resize_to), mean, std = DEFAULTS[arch]
    spec = to_onnx.clip_spec(arch, LABELS)
    a = ARCHS[arch]
    if a.kind == "2d":  # segments spread over --window-s (default 4 s), as TSN's
        assert [i.frames for i in spec.inputs] == sampling and spec.inputs[0].span_s == pytest.approx(4.0)
    else:
        assert [(i.frames, round(i.stride_s * 30, 9)) for i in spec.inputs] == sampling
    assert (spec.size, spec.resize_short, spec.resize_to) == (size, short, resize_to)
    assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)


@dataclass
class Exported:
    arch: str
    path: Path
    checkpoint: Path
    case: Case


def torchvision_s3d_checkpoint(path: Path) -> Path:
    """A torchvision S3D state dict (torchvision's keys) with random BatchNorm statistics, its classifier scaled
    as :func:`trained_looking` scales ours."""
    reference = randomised_torchvision_s3d(len(LABELS))
    ours = build_model("s3d", num_classes=len(LABELS)).eval()
    ours.load_state_dict(ours.adapt_state_dict(reference.state_dict()))
    spec = to_onnx.clip_spec("s3d", LABELS, size=32)
    graph = to_onnx.ClipsToScores(ours, "3d", mean=spec.mean, std=spec.std)
    with torch.no_grad():
        logits = ours(graph._prepare(torch.from_numpy(uint8_clips(spec, 4, seed=0)["clip"])))
        reference.classifier[1].weight.mul_(1.5 / (logits - logits.mean(dim=1, keepdim=True)).std())
    torch.save(reference.state_dict(), path)
    return path


def export(arch: str, work: Path) -> Exported:
    case = CASES[arch]
    ckpt = work / "ckpt.pth"
    flags = case.flags
    if arch == "s3d":
        torchvision_s3d_checkpoint(ckpt)
        (work / "labels.txt").write_text("\n".join(LABELS) + "\n")
        flags = [*flags, "--labels", str(work / "labels.txt")]
    else:
        model_args = {"num_classes": len(LABELS), **case.model_args}
        model = trained_looking(arch, case.model_args)
        save_checkpoint(ckpt, model, arch=arch, model_args=model_args, labels=LABELS)
    out = work / "model.onnx"
    assert to_onnx.main(["--arch", arch, "--checkpoint", str(ckpt), "--out", str(out), *flags]) == 0
    return Exported(arch, out, ckpt, case)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """``exports(arch)``: the arch's small export, made once per module."""
    return functools.cache(lambda arch: export(arch, tmp_path_factory.mktemp(arch)))


@pytest.fixture(params=sorted(CASES))
def exported(request, exports) -> Exported:
    return exports(request.param)


def test_spec_of_a_small_export(exported):
    spec = load_spec(exported.path)
    assert spec.arch == exported.arch and spec.labels == LABELS  # the checkpoint's labels
    assert [(i.name, i.frames) for i in spec.inputs] == [(n, f) for n, f, _ in exported.case.inputs]
    for inp, (_, _, stride) in zip(spec.inputs, exported.case.inputs, strict=True):
        assert inp.stride_s == pytest.approx(stride, rel=1e-9)
    assert (spec.size, spec.resize_short, spec.resize_to) == exported.case.geometry
    assert spec.mean == pytest.approx(DEFAULTS[exported.arch][2]) and spec.std == pytest.approx(
        DEFAULTS[exported.arch][3]
    )


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, batch):
    spec = load_spec(exported.path)
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    feeds = uint8_clips(spec, batch, seed=batch)
    (scores,) = session.run(["scores"], feeds)
    ckpt = read_checkpoint(exported.checkpoint)
    model_args = dict(ckpt.model_args) or {"num_classes": len(LABELS)}  # torchvision's checkpoint: no arguments
    if ARCHS[exported.arch].takes("segments"):
        model_args["segments"] = spec.inputs[0].frames
    model = build_model(exported.arch, **model_args).eval()
    load_weights(model, ckpt)
    graph = to_onnx.ClipsToScores(model, ARCHS[exported.arch].kind, mean=spec.mean, std=spec.std).eval()
    with torch.no_grad():
        reference = graph(*(torch.from_numpy(feeds[i.name]) for i in spec.inputs)).numpy()
    assert np.ptp(reference, axis=1).min() > 0.05, "test model too close to uniform to compare anything"
    assert reference.max() < 0.999, "test model saturates its softmax"
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)


def test_graph_uses_portable_standard_operators_only(exported):
    proto = onnx.load(str(exported.path))
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"} and not proto.functions
    assert set(ops) <= PORTABLE_OPS, set(ops) - PORTABLE_OPS
    groups = [a.i for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"]
    depthwise = any(g > 1 for g in groups)
    assert depthwise == exported.arch.startswith(("ircsn", "ipcsn", "x3d", "tsm_mobilenetv2"))
    if exported.arch.startswith("tsm"):  # the shift: slices and concatenations, no shape-dependent ops
        assert ops["Slice"] and ops["Concat"] and "Shape" not in ops
    if exported.arch.startswith("x3d"):  # squeeze-excitation and swish
        assert ops["Sigmoid"] >= 2 and ops["ReduceMean"] >= 2


def test_export_refuses_knobs_the_arch_does_not_have(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    assert to_onnx.main(["--arch", "x3d_s_13x6x1", "--depth", "50", "--labels", str(labels), "--out", str(out)]) == 2
    assert "--depth: x3d_s_13x6x1 has no depth" in capsys.readouterr().err
    assert (
        to_onnx.main(["--arch", "tsm_mobilenetv2_1x1x8", "--width", "8", "--labels", str(labels), "--out", str(out)])
        == 2
    )
    assert "--width" in capsys.readouterr().err and not out.exists()


def test_a_c3d_checkpoint_for_another_crop_names_fc6(tmp_path, capsys):
    """C3D's fc6 follows the crop: a checkpoint made for 112 does not fit a 64 export, and the error says where."""
    ckpt = tmp_path / "c3d.pth"
    args = {"num_classes": len(LABELS), "width": 8, "size": 112}
    save_checkpoint(ckpt, build_model("c3d_sports1m", **args), arch="c3d_sports1m", model_args=args, labels=LABELS)
    out = tmp_path / "m.onnx"
    assert to_onnx.main(["--arch", "c3d_sports1m", "--checkpoint", str(ckpt), "--size", "64", "--out", str(out)]) == 2
    assert "backbone.fc6.weight" in capsys.readouterr().err and not out.exists()


def test_torchvision_s3d_checkpoint_exports_as_it_is(exports):
    """torchvision's S3D state dict (its own key names) is a valid --checkpoint; the export agrees with torchvision
    run on the frames the spec describes (its resize to 256x256 is the spec's resize_to)."""
    done = exports("s3d")
    spec = load_spec(done.path)
    assert spec.resize_to == (37, 37) and spec.inputs[0].frames == 128
    reference = torchvision.models.video.s3d(num_classes=len(LABELS)).eval()
    reference.load_state_dict(torch.load(done.checkpoint, weights_only=True))
    clip = uint8_clips(spec, 2, seed=3)["clip"]
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(["scores"], {"clip": clip})
    x = torch.from_numpy(clip).permute(0, 4, 1, 2, 3).float() / 255  # torchvision's preset: 0-1, then normalise
    mean = torch.tensor((0.43216, 0.394666, 0.37645)).view(3, 1, 1, 1)
    std = torch.tensor((0.22803, 0.22145, 0.216989)).view(3, 1, 1, 1)
    with torch.no_grad():
        features = reference.features((x - mean) / std)  # 32x32 features are 1x1: its 7x7 pool is our spatial mean
        logits = reference.classifier(features.mean(dim=(3, 4), keepdim=True)).flatten(2)
        theirs = torch.softmax(((logits[:, :, 1:] + logits[:, :, :-1]) / 2).mean(dim=2), dim=1).numpy()
    assert np.ptp(theirs, axis=1).min() > 0.05
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


# --- live: the agent runs the exports -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return pattern_video(tmp_path_factory.mktemp("video") / "testsrc.mp4", 6, "160x120", 15, "testsrc")


@pytest.mark.parametrize("arch", ["tsm_r50_1x1x8", "x3d_s_13x6x1"])
def test_actionstream_infer_runs_the_export_with_its_sampling(exports, video, tmp_path, arch):
    """``actionstream infer`` on a generated video: windows of the spec's span every 0.5 s, each scored as the model
    scores the clip the agent assembles for it (TSM: 4 segments over 2 s; X3D-S: 13 frames 6/30 s apart)."""
    done = exports(arch)
    out = tmp_path / "timeline.json"
    assert cli.main(["infer", str(video), "--model", str(done.path), "--every", "0.5", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    spec = load_spec(done.path)
    assert report["arch"] == arch and spec.span_s == pytest.approx({"tsm_r50_1x1x8": 2.0, "x3d_s_13x6x1": 2.6}[arch])
    times = frame_times(video)
    first, last = float(times.min()), float(times.max())
    ends = list(np.arange(first + spec.span_s, last + 1e-6, 0.5))
    assert [w["end"] for w in report["timeline"]] == [round(float(e), 3) for e in ends] and len(ends) >= 6
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    clips = read_clips(video, spec, [float(e) for e in ends])
    for clip, window in zip(clips, report["timeline"], strict=True):
        frames = clip.inputs["clip"]
        assert frames.shape == (spec.inputs[0].frames, spec.size, spec.size, 3)
        scores = session.run(["scores"], {"clip": frames[None]})[0][0]
        label, score = window["top"][0]
        assert label == spec.labels[int(np.argmax(scores))] and score == pytest.approx(float(scores.max()), abs=1e-5)


def test_actionstream_run_gives_events_from_a_tsm_and_an_x3d_export_on_a_file_camera(exports, video, tmp_path):
    """``actionstream run`` with both exports on one file camera (an entry per model, one decode): each model's
    clips give events named after it, and the agent ends with the file."""
    archs = ["tsm_r50_1x1x8", "x3d_s_13x6x1"]
    config = {
        "cameras": [{"name": a.split("_")[0], "url": str(video), "realtime": False, "model": a} for a in archs],
        "models": {a: {"path": str(exports(a).path)} for a in archs},
        "events": {"threshold": 0.05, "end_threshold": 0.01, "min_hits": 1},  # 5 labels: the top is above 0.2
        "metrics": {"host": "127.0.0.1", "port": free_port()},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "-c", str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for arch in archs:
        mine = [e for e in events if e["model"] == arch]
        assert {e["camera"] for e in mine} == {arch.split("_")[0]}
        assert any(e["type"] == "start" and e["label"] in LABELS for e in mine), arch
        assert {e["clip"]["end"] for e in mine if e["type"] != "end"}  # scored clips of the file's time
