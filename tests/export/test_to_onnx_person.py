"""export/to_onnx.py for person (AVA-style) models: clip(s) + boxes → per-box sigmoid scores for the label map."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from agent.spec import BOX_INPUTS, IMAGENET_MEAN, IMAGENET_STD, InputSpec, ModelSpec, SourceSpec, load_spec
from export import to_onnx
from export.checkpoints import load_weights, read_checkpoint, save_checkpoint
from export.models import PERSON_ARCHS, build_model

SIZE = 64
MODEL_ARGS = {"num_classes": 81, "depth": 18, "width": 8}
SMALL_FLAGS = ["--depth", "18", "--width", "8", "--size", str(SIZE)]
LABEL_MAP = {1: "bend/bow (at the waist)", 3: "crouch/kneel", 5: "fall down", 11: "sit", 80: "watch (a person)"}

# arch -> expected [(input name, frames, stride_s)]
CASES = {
    "ava_slowonly_r50_4x16": [("clip", 4, 16 / 30)],
    "ava_slowfast_r50_4x16": [("slow", 4, 16 / 30), ("fast", 32, 2 / 30)],
}


def write_label_map(path: Path, text: str | None = None) -> Path:
    text = "".join(f"{i}: {name}\n" for i, name in LABEL_MAP.items()) + "\n" if text is None else text
    path.write_text(text, encoding="utf-8")
    return path


def trained_looking(arch: str, seed: int = 0) -> torch.nn.Module:
    """Small model with BatchNorm statistics away from their defaults and a head whose sigmoid outputs spread over
    (0, 1) (outputs all near 0.5 would hide export errors)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch, **MODEL_ARGS).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean") or name.endswith("bn.bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var") or name.endswith("bn.weight"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
        inputs = [InputSpec(name=n, frames=f, stride_s=s) for n, f, s in CASES[arch]]
        spec = ModelSpec(
            arch=arch,
            labels=["x"],
            inputs=inputs,
            size=SIZE,
            resize_short=SIZE,
            crop="none",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            source=SourceSpec(exported_by="test"),
        )
        feeds = [*to_onnx.real_looking_clips(spec, 2, width=SIZE * 3 // 2), *to_onnx.example_boxes(2)]
        head = model.roi_head.bbox_head.fc_cls
        logits = torch.logit(to_onnx.ClipsBoxesToScores(model, PERSON_ARCHS[arch].kind, list(range(81)))(*feeds))
        head.weight.mul_(2.0 / logits.std())
        head.bias.copy_((head.bias - logits.mean()) * 2.0 / logits.std())
    return model


def run(argv: list, capsys) -> tuple[int, str, str]:
    code = to_onnx.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def feeds_for(arch: str, batch: int, height: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """uint8 frames (slow = every alpha-th fast frame) and boxes spread over the batch."""
    rng = np.random.default_rng(seed)
    sampling = PERSON_ARCHS[arch].inputs
    video = rng.integers(0, 256, (batch, sampling[-1].frames, height, width, 3), dtype=np.uint8)
    feeds = {s.name: np.ascontiguousarray(video[:, :: sampling[-1].frames // s.frames]) for s in sampling}
    x1y1 = rng.uniform(0, 0.6, (5, 2))
    feeds["boxes"] = np.concatenate([x1y1, x1y1 + rng.uniform(0.1, 0.4, (5, 2))], axis=1).astype(np.float32)
    feeds["box_batch"] = np.arange(5, dtype=np.int64) % batch
    return feeds


@dataclass
class Exported:
    arch: str
    onnx_path: Path
    checkpoint: Path


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory) -> Exported:
    arch = request.param
    work = tmp_path_factory.mktemp(f"person-{arch}")
    ckpt = work / "ckpt.pth"
    save_checkpoint(ckpt, trained_looking(arch), arch=arch, model_args=MODEL_ARGS)
    out = work / "out" / "model.onnx"
    argv = ["--arch", arch, "--checkpoint", ckpt, "--labels", write_label_map(work / "label_map.txt"), "--out", out]
    assert to_onnx.main([str(a) for a in [*argv, *SMALL_FLAGS]]) == 0
    return Exported(arch, out, ckpt)


def test_spec_fields(exported):
    spec = load_spec(exported.onnx_path)  # also checks the graph against the contract
    assert spec.arch == exported.arch
    assert (spec.task, spec.multilabel, spec.crop) == ("person", True, "none")
    assert (spec.output.name, spec.output.activation) == ("scores", "sigmoid")
    assert spec.labels == list(LABEL_MAP.values())
    assert spec.label_ids == list(LABEL_MAP)
    assert spec.size == spec.resize_short == SIZE
    assert [(i.name, i.frames) for i in spec.inputs] == [(n, f) for n, f, _ in CASES[exported.arch]]
    for inp, (_, _, stride) in zip(spec.inputs, CASES[exported.arch], strict=True):
        assert inp.stride_s == pytest.approx(stride, rel=1e-9)
    assert spec.mean == pytest.approx(IMAGENET_MEAN) and spec.std == pytest.approx(IMAGENET_STD)
    assert spec.source.checkpoint_sha256 == hashlib.sha256(exported.checkpoint.read_bytes()).hexdigest()
    proto = onnx.load(str(exported.onnx_path))
    onnx.checker.check_model(proto)
    assert "RoiAlign" in {n.op_type for n in proto.graph.node}
    assert sorted(p.name for p in exported.onnx_path.parent.iterdir()) == ["model.onnx"]


def test_graph_inputs_are_dynamic(exported):
    session = onnxruntime.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == [n for n, _, _ in CASES[exported.arch]] + list(BOX_INPUTS)
    for name, frames, _ in CASES[exported.arch]:
        n, t, h, w, c = inputs[name].shape
        assert inputs[name].type == "tensor(uint8)" and (t, c) == (frames, 3)
        assert not any(isinstance(d, int) for d in (n, h, w))
    assert inputs["boxes"].type == "tensor(float)" and inputs["boxes"].shape[1] == 4
    assert inputs["box_batch"].type == "tensor(int64)"
    assert inputs["boxes"].shape[0] == inputs["box_batch"].shape[0] and not isinstance(inputs["boxes"].shape[0], int)
    (out,) = session.get_outputs()
    assert (out.name, out.type, out.shape[1]) == ("scores", "tensor(float)", len(LABEL_MAP))


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 64, 64), (3, 64, 112), (2, 80, 48)])
def test_onnx_runtime_matches_pytorch_at_any_frame_size(exported, batch, height, width):
    session = onnxruntime.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    feeds = feeds_for(exported.arch, batch, height, width, seed=batch)
    (scores,) = session.run(["scores"], feeds)
    assert scores.shape == (5, len(LABEL_MAP)) and scores.dtype == np.float32

    model = build_model(exported.arch, **MODEL_ARGS).eval()
    load_weights(model, read_checkpoint(exported.checkpoint))
    graph = to_onnx.ClipsBoxesToScores(model, PERSON_ARCHS[exported.arch].kind, list(LABEL_MAP)).eval()
    # By hand: boxes to pixels of the frame, MMAction2's rois (clip index, x1, y1, x2, y2), the label map's columns.
    pixels = feeds["boxes"] * np.array([width, height, width, height], np.float32)
    rois = torch.from_numpy(np.concatenate([feeds["box_batch"][:, None].astype(np.float32), pixels], axis=1))
    clips = [graph._prepare(torch.from_numpy(feeds[name])) for name, _, _ in CASES[exported.arch]]
    with torch.no_grad():
        reference = graph(*(torch.from_numpy(v) for v in feeds.values())).numpy()
        logits = model(*clips, rois=rois)
    torch.testing.assert_close(torch.from_numpy(reference), logits[:, list(LABEL_MAP)].sigmoid(), atol=1e-6, rtol=0)
    assert reference.min() < 0.3 and reference.max() > 0.7, "test model too close to 0.5 to compare anything"
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)


def test_no_boxes_gives_no_rows(exported):
    session = onnxruntime.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    feeds = feeds_for(exported.arch, 1, 64, 96, seed=0)
    feeds["boxes"], feeds["box_batch"] = feeds["boxes"][:0], feeds["box_batch"][:0]
    (scores,) = session.run(["scores"], feeds)
    assert scores.shape == (0, len(LABEL_MAP))


def test_default_size_is_256_whole_frame(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    argv = ["--arch", "ava_slowonly_r50_8x8", "--depth", "18", "--width", "8", "--out", out]
    code, stdout, stderr = run([*argv, "--labels", write_label_map(tmp_path / "map.txt")], capsys)
    assert code == 0, stderr
    assert "RANDOM" in stdout
    spec = load_spec(out)
    assert (spec.size, spec.resize_short, spec.crop) == (256, 256, "none")
    assert [(i.name, i.frames, round(i.stride_s * 30, 9)) for i in spec.inputs] == [("clip", 8, 8)]


# --- errors: exit 2, "error: ..." naming the file (and line), no output file --------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("1: bend/bow\nbend/bow (at the waist)\n", 2, "expected 'id: name'"),
        ("1: bend/bow\n\nx: walk\n", 3, "expected 'id: name'"),
        ("1: bend/bow\n3:\n", 2, "expected 'id: name'"),
        ("0: background\n", 1, "outside 1..80"),
        ("1: bend/bow\n81: fly\n", 2, "outside 1..80"),
        ("1: bend/bow\n1: walk\n", 2, "duplicate id"),
        ("1: walk\n2: walk\n", 2, "duplicate label"),
    ],
)
def test_bad_label_map_names_file_and_line(tmp_path, capsys, text, line, what):
    labels = write_label_map(tmp_path / "label_map.txt", text)
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "ava_slowonly_r50_4x16", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2
    assert stderr.startswith(f"error: {labels}:{line}: ") and what in stderr
    assert stderr.count("\n") == 1
    assert not out.exists()


def test_empty_label_map(tmp_path, capsys):
    labels = write_label_map(tmp_path / "label_map.txt", "\n\n")
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "ava_slowonly_r50_4x16", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2 and str(labels) in stderr and "empty" in stderr
    assert not out.exists()


def test_person_model_needs_a_label_map(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "ava_slowonly_r50_4x16", "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2 and "--labels" in stderr and "id: name" in stderr
    assert not out.exists()


def test_label_map_ids_beyond_a_smaller_head(tmp_path, capsys):
    labels = write_label_map(tmp_path / "label_map.txt")
    out = tmp_path / "model.onnx"
    argv = ["--arch", "ava_slowonly_r50_4x16", "--labels", labels, "--out", out, "--num-classes", "12", *SMALL_FLAGS]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert f"{labels}:5: class id 80 is outside 1..11" in stderr
