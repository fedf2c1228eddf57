"""export/to_onnx.py for flow models (``tsn_r50_flow``, ``slowonly_r50_flow``): the spec says how the flow is made,
the graph takes uint8 flow ``[N, T, H, W, 2]`` and stacks it as MMAction2 does, ONNX Runtime matches PyTorch.
(Against MMAction2 itself: tests/parity/test_mmaction2_flow.py.)"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from agent.spec import FLOW_MEAN, FLOW_STD, load_spec
from export import to_onnx
from export.checkpoints import load_weights, read_checkpoint, save_checkpoint
from export.models import ARCHS, build_model
from tests.export.test_to_onnx_archs import PORTABLE_OPS

LABELS = ["left", "right", "up", "down"]
SMALL = {"depth": 18, "width": 8}


def trained_looking(arch: str, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics, a classifier scaled so that the probabilities differ without saturating."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=len(LABELS), **SMALL).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_mean", "bn.bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(("running_var", "bn.weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
        spec = to_onnx.clip_spec(arch, LABELS, size=64)
        graph = to_onnx.ClipsToScores(model, ARCHS[arch].kind, mean=spec.mean, std=spec.std, pairs=ARCHS[arch].pairs)
        logits = graph.model(graph._prepare(to_onnx.real_looking_flow(spec, 4, seed)))
        model.cls_head.fc_cls.weight.mul_(1.5 / (logits - logits.mean(dim=1, keepdim=True)).std())
    return model


@pytest.fixture(scope="module", params=["tsn_r50_flow", "slowonly_r50_flow"])
def exported(request, tmp_path_factory):
    arch = request.param
    work = tmp_path_factory.mktemp(arch)
    ckpt = work / "ckpt.pth"
    config = {"data": {"flow_method": "farneback", "flow_bound": 15.0}}  # as the trainer stores its settings
    save_checkpoint(
        ckpt,
        trained_looking(arch),
        arch=arch,
        model_args={"num_classes": len(LABELS), **SMALL},
        labels=LABELS,
        config=config,
    )
    out = work / "model.onnx"
    assert to_onnx.main(["--arch", arch, "--checkpoint", str(ckpt), "--size", "64", "--out", str(out)]) == 0
    return arch, out, ckpt


def test_the_spec_says_how_the_flow_is_made(exported):
    arch, path, _ = exported
    spec = load_spec(path)
    (inp,) = spec.inputs
    assert spec.modality == "flow" and inp.modality == "flow"
    assert (inp.flow.method, inp.flow.bound) == ("farneback", 15.0)  # the trainer checkpoint's settings
    assert inp.flow.step_s == pytest.approx(1 / 30)
    assert spec.mean == FLOW_MEAN and spec.std == FLOW_STD
    if arch == "tsn_r50_flow":  # 5x1x3: 3 segments over the window, 5 fields each
        assert (inp.frames, inp.flow.pairs, inp.stride_s) == (3, 5, pytest.approx(4 / 3))
    else:  # 16x4x1
        assert (inp.frames, inp.flow.pairs, inp.stride_s) == (16, 1, pytest.approx(4 / 30))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (graph_input,) = session.get_inputs()
    assert graph_input.type == "tensor(uint8)" and graph_input.shape[1:] == [inp.images, 64, 64, 2]


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_runtime_matches_pytorch(exported, batch):
    arch, path, ckpt = exported
    spec = load_spec(path)
    flow = to_onnx.real_looking_flow(spec, batch, seed=batch)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"clip": flow.numpy()})
    checkpoint = read_checkpoint(ckpt)
    model = build_model(arch, **checkpoint.model_args).eval()
    load_weights(model, checkpoint)
    graph = to_onnx.ClipsToScores(model, ARCHS[arch].kind, mean=spec.mean, std=spec.std, pairs=ARCHS[arch].pairs)
    with torch.no_grad():
        reference = graph(flow).numpy()
    assert np.ptp(reference, axis=1).min() > 0.05, "test model too close to uniform to compare anything"
    np.testing.assert_allclose(scores, reference, atol=1e-4, rtol=0)


def test_graph_uses_portable_standard_operators_only(exported):
    proto = onnx.load(str(exported[1]))
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert set(ops) <= PORTABLE_OPS, set(ops) - PORTABLE_OPS


def test_tsn_stacks_each_segments_fields_as_mmaction2s_format_shape():
    """[N, S·P, H, W, 2] → [N, S, 2·P, H, W] with channels x0, y0, x1, y1, … (MMAction2's NCHW FormatShape for
    flow: ``imgs.transpose(0, 3, 1, 2).reshape(-1, clip_len * 2, H, W)``)."""
    segments, pairs = 3, 5
    flow = torch.arange(2 * segments * pairs * 4, dtype=torch.float32).reshape(1, segments * pairs, 2, 2, 2)
    graph = to_onnx.ClipsToScores(torch.nn.Identity(), "2d", mean=(0.0, 0.0), std=(1.0, 1.0), pairs=pairs)
    got = graph._prepare(flow)
    mmaction2 = flow[0].numpy().transpose(0, 3, 1, 2).reshape(-1, pairs * 2, 2, 2)
    assert got.shape == (1, segments, 2 * pairs, 2, 2)
    np.testing.assert_array_equal(got[0].numpy(), mmaction2)


def test_flow_flags_are_checked(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out = tmp_path / "m.onnx"
    base = ["--labels", str(labels), "--out", str(out), "--depth", "18", "--width", "8", "--size", "64"]
    assert to_onnx.main(["--arch", "tsn_r50", *base, "--flow-method", "dis"]) == 2
    assert "takes RGB frames, not flow" in capsys.readouterr().err
    assert to_onnx.main(["--arch", "tsn_r50_flow", *base, "--flow-bound", "-1"]) == 2
    assert "--flow-bound: must be positive" in capsys.readouterr().err
    assert to_onnx.main(["--arch", "slowonly_r50_flow", *base, "--flow-method", "dis", "--fps", "25"]) == 0
    flow = load_spec(out).inputs[0].flow
    assert (flow.method, flow.bound, flow.step_s) == ("dis", 20.0, pytest.approx(1 / 25))  # MMAction2's bound


def test_openvino_scores_a_flow_model_as_onnx_runtime(exported):
    pytest.importorskip("openvino")
    from agent.config import ModelConfig
    from agent.live.runtime import ModelRuntime

    path = exported[1]
    ort_rt = ModelRuntime("m", ModelConfig(path=path, device="cpu"))
    ov_rt = ModelRuntime("m", ModelConfig(path=path, device="openvino"))
    assert ov_rt.device == "openvino"
    flow = to_onnx.real_looking_flow(ort_rt.spec, 3, seed=5).numpy()
    want, got = ort_rt.infer({"clip": flow}), ov_rt.infer({"clip": flow})
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
