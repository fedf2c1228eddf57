"""export/to_onnx.py: one self-describing ONNX file per arch that matches PyTorch, and clear errors (exit 2)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from agent.spec import METADATA_KEY, ModelSpec, load_spec
from export import to_onnx
from export.checkpoints import load_weights, read_checkpoint, save_checkpoint
from export.models import ARCHS, build_model
from tests.conftest import ROOT

SIZE = 64
NUM_CLASSES = 5
MODEL_ARGS = {"num_classes": NUM_CLASSES, "depth": 18, "width": 8}
SMALL_FLAGS = ["--depth", "18", "--width", "8", "--size", str(SIZE), "--num-classes", str(NUM_CLASSES)]
LABELS = ["abseiling", "air drumming", "answering questions", "applauding", "applying cream"]
CKPT_LABELS = ["c0", "c1", "c2", "c3", "c4"]

# arch -> (extra flags, expected [(input name, frames, stride_s)])
CASES = {
    "tsn_r50": (["--segments", "3", "--window-s", "2.4"], [("clip", 3, 2.4 / 3)]),
    "i3d_r50": ([], [("clip", 32, 2 / 30)]),
    "slowonly_r50_4x16": ([], [("clip", 4, 16 / 30)]),
    "slowonly_r50_8x8": (["--fps", "25"], [("clip", 8, 8 / 25)]),
    "slowfast_r50_4x16": ([], [("slow", 4, 16 / 30), ("fast", 32, 2 / 30)]),
    "slowfast_r50_8x8": ([], [("slow", 8, 8 / 30), ("fast", 32, 2 / 30)]),
}


def write_labels(path: Path, labels: list[str]) -> Path:
    path.write_text("\n".join(labels) + "\n\n", encoding="utf-8")  # a trailing blank line is allowed
    return path


def trained_looking(arch: str, seed: int = 0) -> torch.nn.Module:
    """A small model whose BatchNorm statistics are far from their initial values and whose head is scaled so
    that the probabilities differ clearly between classes without saturating (a near-uniform or one-hot
    softmax would hide export errors)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch, **MODEL_ARGS).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean") or (name.endswith("bn.bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var") or name.endswith("bn.weight"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
        kind, sampling = ARCHS[arch].kind, ARCHS[arch].inputs
        frames = [3] if kind == "2d" else [s.frames for s in sampling]
        clips = [torch.randint(0, 256, (4, t, SIZE, SIZE, 3), generator=g, dtype=torch.uint8) for t in frames]
        prepare = to_onnx.ClipsToScores(model, kind)._prepare
        logits = model(*(prepare(c) for c in clips))
        centred = logits - logits.mean(dim=1, keepdim=True)
        model.cls_head.fc_cls.weight.mul_(1.5 / centred.std())
    return model


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = to_onnx.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def uint8_clips(spec: ModelSpec, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random frames; for SlowFast ``slow[:, i] == fast[:, i * alpha]`` as the contract says."""
    rng = np.random.default_rng(seed)
    longest = max(i.frames for i in spec.inputs)
    video = rng.integers(0, 256, (batch, longest, spec.size, spec.size, 3), dtype=np.uint8)
    return {i.name: np.ascontiguousarray(video[:, :: longest // i.frames][:, : i.frames]) for i in spec.inputs}


@dataclass
class Exported:
    arch: str
    onnx_path: Path
    checkpoint: Path
    model: torch.nn.Module
    expected_inputs: list[tuple[str, int, float]]


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory) -> Exported:
    arch = request.param
    extra, expected_inputs = CASES[arch]
    work = tmp_path_factory.mktemp(f"in-{arch}")
    out_dir = tmp_path_factory.mktemp(f"out-{arch}")
    model = trained_looking(arch)
    ckpt = work / "ckpt.pth"
    save_checkpoint(ckpt, model, arch=arch, model_args=MODEL_ARGS, labels=CKPT_LABELS)
    labels = write_labels(work / "labels.txt", LABELS)
    out = out_dir / "model.onnx"
    argv = ["--arch", arch, "--checkpoint", ckpt, "--labels", labels, "--out", out, *SMALL_FLAGS, *extra]
    assert to_onnx.main([str(a) for a in argv]) == 0
    return Exported(arch, out, ckpt, model, expected_inputs)


def test_export_is_one_self_contained_file(exported):
    assert sorted(p.name for p in exported.onnx_path.parent.iterdir()) == ["model.onnx"]
    proto = onnx.load(str(exported.onnx_path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert [p.key for p in proto.metadata_props] == [METADATA_KEY]
    onnx.checker.check_model(proto)
    # no exporter provenance: stack traces would carry the exporting machine's paths into the file
    assert not any(node.metadata_props or node.doc_string for node in proto.graph.node)
    assert str(ROOT).encode() not in exported.onnx_path.read_bytes()


def test_spec_fields(exported):
    spec = load_spec(exported.onnx_path)
    assert spec.format == 1
    assert spec.arch == exported.arch
    assert spec.labels == LABELS  # the labels file wins over the checkpoint's labels
    got = [(i.name, i.frames) for i in spec.inputs]
    assert got == [(name, frames) for name, frames, _ in exported.expected_inputs]
    for inp, (_, _, stride) in zip(spec.inputs, exported.expected_inputs, strict=True):
        assert inp.stride_s == pytest.approx(stride, rel=1e-9)
    assert spec.size == SIZE
    assert spec.resize_short == round(SIZE * 256 / 224)
    assert spec.mean == pytest.approx((123.675, 116.28, 103.53))
    assert spec.std == pytest.approx((58.395, 57.12, 57.375))
    assert (spec.output.name, spec.output.activation) == ("scores", "softmax")
    assert spec.source.checkpoint_sha256 == hashlib.sha256(exported.checkpoint.read_bytes()).hexdigest()
    assert spec.source.exported_by.startswith("actionstream ")


def test_graph_inputs_and_outputs(exported):
    spec = load_spec(exported.onnx_path)
    session = onnxruntime.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    assert [i.name for i in inputs] == [i.name for i in spec.inputs]
    for node, inp in zip(inputs, spec.inputs, strict=True):
        assert node.type == "tensor(uint8)"
        assert not isinstance(node.shape[0], int)  # dynamic batch
        assert node.shape[1:] == [inp.frames, SIZE, SIZE, 3]
    (out,) = session.get_outputs()
    assert out.name == "scores" and out.type == "tensor(float)"
    assert out.shape[1] == NUM_CLASSES


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, batch):
    spec = load_spec(exported.onnx_path)
    session = onnxruntime.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])
    feeds = uint8_clips(spec, batch, seed=batch)
    (scores,) = session.run(["scores"], feeds)
    assert scores.shape == (batch, NUM_CLASSES)
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert (scores >= 0).all()

    # The same weights, read back from the checkpoint the export used.
    model = build_model(exported.arch, **MODEL_ARGS).eval()
    load_weights(model, read_checkpoint(exported.checkpoint))
    graph = to_onnx.ClipsToScores(model, ARCHS[exported.arch].kind).eval()
    with torch.no_grad():
        reference = graph(*(torch.from_numpy(feeds[i.name]) for i in spec.inputs)).numpy()
    assert np.ptp(reference, axis=1).min() > 0.05, "test model too close to uniform to compare anything"
    assert reference.max() < 0.999, "test model saturates its softmax"
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)


def test_clips_to_scores_normalises_inside(exported):
    """The wrapper normalises with MMAction2's mean/std and permutes; check it against a hand-made pipeline."""
    spec = load_spec(exported.onnx_path)
    feeds = uint8_clips(spec, 2, seed=7)
    mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
    model = exported.model
    kind = ARCHS[exported.arch].kind
    by_hand = []
    for i in spec.inputs:
        x = (torch.from_numpy(feeds[i.name]).float() - mean) / std  # N T H W C
        by_hand.append(x.permute(0, 1, 4, 2, 3) if kind == "2d" else x.permute(0, 4, 1, 2, 3))
    with torch.no_grad():
        expected = torch.softmax(model(*by_hand), dim=1)
        got = to_onnx.ClipsToScores(model, kind)(*(torch.from_numpy(feeds[i.name]) for i in spec.inputs))
    torch.testing.assert_close(got, expected)


# --- without a checkpoint, fp16 -----------------------------------------------------------------------------------


def test_fp16_export_with_random_weights(tmp_path, capsys):
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out_dir = tmp_path / "out"
    out = out_dir / "model-fp16.onnx"
    argv = ["--arch", "i3d_r50", "--labels", labels, "--out", out, "--fp16", *SMALL_FLAGS]
    code, stdout, stderr = run(argv, capsys)
    assert code == 0, stderr
    assert "RANDOM" in stdout
    assert sorted(p.name for p in out_dir.iterdir()) == ["model-fp16.onnx"]

    proto = onnx.load(str(out))
    init_types = {t.data_type for t in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in init_types  # the weights really are half precision

    spec = load_spec(out)
    assert spec.source.checkpoint_sha256 is None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].type == "tensor(float)"
    (scores,) = session.run(["scores"], uint8_clips(spec, 2, seed=0))
    assert scores.dtype == np.float32
    assert scores.shape == (2, NUM_CLASSES)
    assert np.isfinite(scores).all()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-3)


def test_disagreement_above_tolerance_fails(tmp_path, capsys):
    """The ORT-vs-PyTorch check is real: a negative tolerance can never be met."""
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = tmp_path / "model.onnx"
    argv = ["--arch", "tsn_r50", "--segments", "3", "--labels", labels, "--out", out, "--tolerance", "-1", *SMALL_FLAGS]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert stderr.startswith("error: ")
    assert "disagree" in stderr and str(out) in stderr


# --- errors: exit 2, "error: ..." naming the culprit, no output file ----------------------------------------------


def test_labels_count_mismatch(tmp_path, capsys):
    labels = write_labels(tmp_path / "labels.txt", LABELS[:4])
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "i3d_r50", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2
    assert stderr.startswith("error: ")
    assert str(labels) in stderr
    assert "4" in stderr and "5" in stderr
    assert not out.exists()


def test_duplicate_labels(tmp_path, capsys):
    labels = write_labels(tmp_path / "labels.txt", ["a", "b", "a", "c", "d"])
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "i3d_r50", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2
    assert str(labels) in stderr and "duplicate" in stderr
    assert not out.exists()


def test_missing_labels_file(tmp_path, capsys):
    labels = tmp_path / "nope.txt"
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "i3d_r50", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2
    assert str(labels) in stderr
    assert not out.exists()


def test_labels_required_without_checkpoint_labels(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "i3d_r50", "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2
    assert "--labels" in stderr
    assert not out.exists()


def test_unknown_arch(tmp_path, capsys):
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = tmp_path / "model.onnx"
    code, _, stderr = run(["--arch", "resnet_nope", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys)
    assert code == 2
    assert stderr.startswith("error: ")
    assert "resnet_nope" in stderr
    for name in ARCHS:
        assert name in stderr
    assert not out.exists()


def test_unreadable_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "garbage.pth"
    ckpt.write_bytes(b"\x00\x01 this is not a checkpoint " * 50)
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = tmp_path / "model.onnx"
    argv = ["--arch", "i3d_r50", "--checkpoint", ckpt, "--labels", labels, "--out", out, *SMALL_FLAGS]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert stderr.startswith("error: ")
    assert str(ckpt) in stderr
    assert not out.exists()


def test_missing_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "nope.pth"
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = tmp_path / "model.onnx"
    argv = ["--arch", "i3d_r50", "--checkpoint", ckpt, "--labels", labels, "--out", out, *SMALL_FLAGS]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert str(ckpt) in stderr and "not found" in stderr
    assert not out.exists()


def test_class_count_mismatch_asks_for_reset_head(tmp_path, capsys):
    ckpt = tmp_path / "k400.pth"
    torch.manual_seed(0)
    args = {**MODEL_ARGS, "num_classes": 400}
    save_checkpoint(ckpt, build_model("i3d_r50", **args), arch="i3d_r50", model_args=args)
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = tmp_path / "model.onnx"
    argv = ["--arch", "i3d_r50", "--checkpoint", ckpt, "--labels", labels, "--out", out, *SMALL_FLAGS]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert "--reset-head" in stderr and str(ckpt) in stderr
    assert not out.exists()


def test_zero_segments(tmp_path, capsys):
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = tmp_path / "model.onnx"
    code, _, stderr = run(
        ["--arch", "tsn_r50", "--segments", "0", "--labels", labels, "--out", out, *SMALL_FLAGS], capsys
    )
    assert code == 2
    assert stderr.startswith("error: ") and "--segments" in stderr


def test_out_path_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    labels = write_labels(tmp_path / "labels.txt", LABELS)
    out = blocker / "model.onnx"
    argv = ["--arch", "tsn_r50", "--segments", "3", "--labels", labels, "--out", out, *SMALL_FLAGS]
    code, _, stderr = run(argv, capsys)
    assert code == 2
    assert stderr.startswith("error: ") and str(blocker) in stderr
