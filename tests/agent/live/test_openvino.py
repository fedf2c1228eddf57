"""OpenVINO beside ONNX Runtime's CPU provider (agent/live/backends.py): the same scores for every kind of model the
project exports, the same events from the agent, the same errors, and the choice ``device: auto`` makes.

The exported models here have "trained-looking" weights (BatchNorm statistics away from their defaults, heads
scaled up): with plain random weights every probability sits near 1/K and a tolerance would hide little.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml

from agent.cli import main
from agent.config import ConfigError, DetectorConfig, ModelConfig, parse_config
from agent.demo.run import DEMO_EVENTS, DEMO_MODEL
from agent.demo.synthetic import write_scripted_stream
from agent.errors import SpecError
from agent.live.app import Agent
from agent.live.backends import _PROBE, OpenVinoBackend, choose, openvino_version
from agent.live.batcher import Batcher
from agent.live.clips import Clip
from agent.live.people import PersonDetector
from agent.live.runtime import ModelRuntime, box_inputs
from agent.metrics import Metrics
from export import to_onnx
from export.checkpoints import save_checkpoint
from export.models import ARCHS, PERSON_ARCHS, build_model
from tests.agent.live.test_app import Sink
from tests.export.test_to_onnx_archs import CASES as ARCH_CASES
from tests.person_graphs import box_scorer, constant_detector

ROOT = Path(__file__).resolve().parents[3]
TOLERANCE = 1e-5  # |Δ probability|, OpenVINO fp32 against ONNX Runtime's CPU provider
LABELS = ["a", "b", "c", "d", "e"]
SIX = ["tsn_r50", "i3d_r50", "slowonly_r50_4x16", "slowonly_r50_8x8", "slowfast_r50_4x16", "slowfast_r50_8x8"]
# Every clip arch the tests export (the newer families as tests/export/test_to_onnx_archs.py makes them small);
# person models: the two kinds (SlowOnly, SlowFast), each sampling once.
CLIP_ARCHS = [a for a in ARCHS if a in ARCH_CASES or a in SIX]
PERSON = ["ava_slowonly_r50_4x16", "ava_slowfast_r50_8x8"]
TINY = {"depth": 18, "width": 8}


def small(arch: str) -> tuple[dict, list[str]]:
    """A small model of ``arch``: its model arguments and export flags."""
    if arch in ARCH_CASES:
        return ARCH_CASES[arch].model_args, ARCH_CASES[arch].flags
    size = "48" if arch in PERSON_ARCHS else "32"
    return TINY, ["--depth", "18", "--width", "8", "--size", size]


AVA_LABEL_MAP = "1: bend/bow (at the waist)\n3: crouch/kneel\n5: fall down\n11: sit\n80: watch (a person)\n"
# Run a child Python without OpenVINO, as an install without the extra is.
NO_OPENVINO = "import sys; sys.modules['openvino'] = None; from agent.cli import main; sys.exit(main(sys.argv[1:]))"


def trained_looking(arch: str, num_classes: int, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=num_classes, **small(arch)[0]).eval()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_mean") or name.endswith("bn.bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var") or name.endswith("bn.weight"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):  # the heads: logits spread over several units
                module.weight.mul_(40.0)
    return model


def export(work: Path, arch: str, *extra: str) -> Path:
    person = arch in PERSON_ARCHS
    labels = work / "labels.txt"
    labels.write_text(AVA_LABEL_MAP if person else "\n".join(LABELS) + "\n")
    ckpt = work / "ckpt.pth"
    model = trained_looking(arch, 81 if person else len(LABELS))
    model_args, flags = small(arch)
    save_checkpoint(ckpt, model, arch=arch, model_args={"num_classes": 81 if person else len(LABELS)} | model_args)
    out = work / f"{arch}.onnx"
    argv = ["--arch", arch, "--checkpoint", str(ckpt), "--labels", str(labels), "--out", str(out), *extra]
    assert to_onnx.main([*argv, *flags]) == 0
    return out


@pytest.fixture(scope="module", params=CLIP_ARCHS + PERSON)
def exported(request, tmp_path_factory) -> Path:
    return export(tmp_path_factory.mktemp(request.param), request.param)


def engines(path: Path, **config) -> tuple[ModelRuntime, ModelRuntime]:
    """The same file on ONNX Runtime's CPU provider and on OpenVINO."""
    ort_rt = ModelRuntime("m", ModelConfig(path=path, device="cpu", **config))
    ov_rt = ModelRuntime("m", ModelConfig(path=path, device="openvino", **config))
    assert (ort_rt.device, ov_rt.device) == ("cpu", "openvino") and ov_rt.spec == ort_rt.spec
    return ort_rt, ov_rt


def feeds(spec, n: int, seed: int, hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Random clips: ``n`` of them, the spec's crop size (or ``hw`` for whole-frame models); person models: a few
    boxes per clip, one clip without any."""
    rng = np.random.default_rng(seed)
    h, w = hw or (spec.size, spec.size)
    out = {i.name: rng.integers(0, 256, (n, i.frames, h, w, 3), dtype=np.uint8) for i in spec.inputs}
    if spec.task == "person":
        boxes = []
        for i in range(n):
            x1y1 = rng.uniform(0, 0.6, (i % 3 + 1 if i != 1 else 0, 2))
            boxes.append(np.concatenate([x1y1, x1y1 + rng.uniform(0.1, 0.4, x1y1.shape)], axis=1))
        out |= box_inputs(boxes)
    return out


def test_every_exported_kind_scores_the_same_on_openvino_fp32(exported):
    ort_rt, ov_rt = engines(exported)
    spec = ort_rt.spec
    hw = (48, 64) if spec.crop == "none" else None  # person models take the whole frame, any size
    for n, seed in ((1, 0), (3, 1), (5, 2)):  # dynamic batch: each size on the same compiled model
        inputs = feeds(spec, n, seed, hw)
        want, got = ort_rt.infer(inputs), ov_rt.infer(inputs)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)
        if spec.task == "clip":  # the comparison means something: probabilities far from uniform
            assert (want.max(axis=1) - want.min(axis=1)).min() > 0.1, want
        else:
            assert want.std() > 0.05, want


def test_fp16_export_on_openvino_stays_within_the_fp16_export_tolerance(tmp_path):
    """An fp16 file (export --fp16, for GPUs): OpenVINO computes its fp16 weights in fp32, ONNX Runtime in fp16,
    so the two differ by fp16 rounding, within what the exporter accepts against PyTorch (1e-2)."""
    path = export(tmp_path, "i3d_r50", "--fp16")
    ort_rt, ov_rt = engines(path)
    inputs = feeds(ort_rt.spec, 3, 0)
    np.testing.assert_allclose(ov_rt.infer(inputs), ort_rt.infer(inputs), atol=1e-2, rtol=0)


def test_bf16_is_asked_for_and_moves_scores_a_little(tmp_path):
    """``precision: bf16`` is OpenVINO's bf16 (on this CPU: different numbers from fp32, close to them); fp32 is
    never bf16, even where OpenVINO would pick bf16 by itself (CPUs with AMX or AVX512-BF16)."""
    path = export(tmp_path, "slowonly_r50_8x8")
    ort_rt, fp32 = engines(path)
    bf16 = ModelRuntime("m", ModelConfig(path=path, device="openvino", precision="bf16"))
    assert isinstance(fp32.backend, OpenVinoBackend) and fp32.backend.precision == "f32"
    inputs = feeds(ort_rt.spec, 4, 0)
    want, got = ort_rt.infer(inputs), bf16.infer(inputs)
    np.testing.assert_allclose(fp32.infer(inputs), want, atol=TOLERANCE, rtol=0)
    assert np.abs(got - want).max() < 0.1
    if bf16.backend.precision == "bf16":  # this CPU computes bf16 (else OpenVINO falls back to fp32)
        assert np.abs(got - want).max() > 1e-5


def test_a_box_scorer_and_detectors_give_the_same_on_both(tmp_path):
    """The person-model graph of tests/person_graphs.py and detectors of both output layouts and both image
    inputs, through :class:`PersonDetector`: same boxes, same scores, same layout found."""
    w = np.array([[-20.0, 20.0, 0.0], [0, 0, 0], [-20.0, 20.0, 0.0], [0, 0, 0]])
    path = box_scorer(tmp_path / "people.onnx", ["left", "right", "tall"], w, np.array([14.0, -10.0, -5.0]))
    ort_rt, ov_rt = engines(path)
    inputs = feeds(ort_rt.spec, 4, 0, hw=(24, 40))
    np.testing.assert_allclose(ov_rt.infer(inputs), ort_rt.infer(inputs), atol=TOLERANCE, rtol=0)
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes, scores, classes = [[16, 24, 112, 116], [100, 20, 150, 110], [5, 5, 20, 20]], [0.9, 0.8, 0.3], [1, 1, 1]
    for layout, image, size in [
        ("torchvision", "float_nchw", (120, 160)),
        ("torchvision", "uint8_nhwc", None),
        ("yolo", "uint8_nhwc", (96, 128)),
        ("yolo", "float_nchw", None),
    ]:
        det = tmp_path / f"det-{layout}-{image}-{size}.onnx"
        cls = [c - 1 for c in classes] if layout == "yolo" else classes
        constant_detector(det, boxes, scores, cls, layout=layout, image=image, size=size)
        on_ort = PersonDetector(DetectorConfig(path=det), "cpu")
        on_ov = PersonDetector(DetectorConfig(path=det), "openvino")
        assert (on_ov.layout, on_ov.fixed_hw, on_ov.float_input) == (on_ort.layout, on_ort.fixed_hw, on_ort.float_input)
        found, also = ([(*box, score) for box, score in d.detect(frame)] for d in (on_ort, on_ov))
        assert len(found) == 2
        np.testing.assert_allclose(also, found, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_batcher_runs_openvino_as_it_runs_onnx_runtime(workers):
    """Four cameras' clips in one batch on OpenVINO (``workers: 2``: in pieces, two infer requests at once): the
    scores of each clip alone on ONNX Runtime, the same metrics."""
    ort_rt, ov_rt = engines(DEMO_MODEL, max_batch=8, max_wait_ms=200, workers=workers)
    assert ov_rt.workers == workers and ov_rt.buckets == []
    metrics = Metrics()
    batcher = Batcher(ov_rt, metrics)
    spec = ov_rt.spec
    clips = []
    for i, one in enumerate(feeds(spec, 4, 7)["clip"]):
        clips.append(Clip(camera=f"cam{i}", seq=1, inputs={"clip": one}, start=0.0, end=2.0, received_at=1000.0))

    async def scenario():
        worker = asyncio.create_task(batcher.run())
        results = await asyncio.gather(*(batcher.infer(c) for c in clips))
        worker.cancel()
        return results

    for clip, (scores, ms) in zip(clips, asyncio.run(scenario()), strict=True):
        alone = ort_rt.infer({"clip": clip.inputs["clip"][None]})[0]
        np.testing.assert_allclose(scores, alone, atol=TOLERANCE, rtol=0)
        assert ms > 0
    assert metrics.value("actionstream_batch_size_count", model="m") == 1
    assert metrics.value("actionstream_batch_size_sum", model="m") == 4
    assert metrics.value("actionstream_clips_inferred_total", model="m") == 4


def events_of(video: Path, device: str) -> list:
    """The agent's events for the scripted stream, played as fast as the model takes its clips (so the demo's
    events, but ending at the first clip below ``end_threshold``: no wall-clock time in what happens)."""
    config = parse_config(
        {
            "cameras": [{"name": "demo", "url": str(video), "realtime": False, "every_s": 0.5}],
            "models": {"motion": {"path": str(DEMO_MODEL), "device": device, "max_batch": 2}},
            "events": DEMO_EVENTS | {"end_after_s": 0.0},
            "metrics": {"enabled": False},
        }
    )
    sink = Sink()
    agent = Agent(config, sink=sink)
    agent.load()
    assert agent.runtimes["motion"].device == device
    asyncio.run(asyncio.wait_for(agent.run(asyncio.Event()), 120))
    return sink.events


def test_the_agent_publishes_the_same_events_on_openvino(tmp_path):
    """The demo model on a 30 s scripted stream (5 actions) through the whole agent, once per engine: the same
    events, in the same order, with the same scores (so from the same clips)."""
    video = tmp_path / "stream.mp4"
    schedule = write_scripted_stream(video, tmp_path / "stream.json", minutes=0.5, seed=3)
    on_ort, on_ov = events_of(video, "cpu"), events_of(video, "openvino")
    starts = [e.label for e in on_ort if e.type == "start"]
    assert len(starts) >= len(schedule) and {s["label"] for s in schedule} <= set(starts)  # it sees the actions
    assert [(e.type, e.label) for e in on_ov] == [(e.type, e.label) for e in on_ort]
    for attr in ("score", "top_score"):
        ort_scores, ov_scores = ([getattr(e, attr) for e in events] for events in (on_ort, on_ov))
        np.testing.assert_allclose(ov_scores, ort_scores, atol=TOLERANCE, rtol=0)


def test_infer_runs_on_openvino_with_the_same_timeline(tmp_path):
    """``actionstream infer --device``: the offline path through the same runtime, both engines, same numbers."""
    video = tmp_path / "stream.mp4"
    write_scripted_stream(video, tmp_path / "stream.json", minutes=0.25, seed=5)
    reports = {}
    for device in ("cpu", "openvino"):
        out = tmp_path / f"{device}.json"
        argv = ["infer", str(video), "--model", str(DEMO_MODEL), "--every", "0.5", "--device", device]
        assert main([*argv, "--json", str(out)]) == 0
        reports[device] = json.loads(out.read_text())
    ort_windows, ov_windows = reports["cpu"]["timeline"], reports["openvino"]["timeline"]
    assert len(ov_windows) == len(ort_windows) > 2 * 8  # several batches of 8 windows, the last one partial
    assert len({w["top"][0][0] for w in ort_windows}) >= 3  # the actions of the stream
    for a, b in zip(ort_windows, ov_windows, strict=True):
        assert [label for label, _ in a["top"]] == [label for label, _ in b["top"]]
        np.testing.assert_allclose([s for _, s in b["top"]], [s for _, s in a["top"]], atol=TOLERANCE, rtol=0)


def test_auto_picks_openvino_here_and_check_says_why(tmp_path, capsys):
    """No CUDA here, OpenVINO installed: auto chooses it, and ``check`` prints the choice and the reason, one line
    per model; without OpenVINO (an install without the extra) auto falls back to ONNX Runtime's CPU provider."""
    if choose("m", ModelConfig(path=DEMO_MODEL)).device == "cuda":
        pytest.skip("CUDA loads here: auto takes it")
    config = tmp_path / "config.yaml"
    models = {"fast": {"path": str(DEMO_MODEL)}, "ref": {"path": str(DEMO_MODEL), "device": "cpu", "workers": 2}}
    cameras = [{"name": "a", "url": "a.mp4", "model": "fast"}, {"name": "b", "url": "b.mp4", "model": "ref"}]
    config.write_text(yaml.safe_dump({"cameras": cameras, "models": models}))
    assert main(["check", "-c", str(config)]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if "engine:" in line]
    version = openvino_version()
    assert lines == [
        f"engine: OpenVINO (openvino, fp32, 1 worker) — auto: {choose('m', ModelConfig(path=DEMO_MODEL)).why[6:]}",
        "engine: ONNX Runtime (cpu, fp32, 2 workers) — device cpu: ONNX Runtime's CPU provider",
    ]
    assert lines[0].endswith(f"; OpenVINO {version} is installed")
    child = subprocess.run(
        [sys.executable, "-c", NO_OPENVINO, "check", "-c", str(config)], capture_output=True, text=True, cwd=ROOT
    )
    assert child.returncode == 0, child.stderr
    assert "engine: ONNX Runtime (cpu, fp32, 1 worker) — auto: " in child.stdout
    assert "; OpenVINO is not installed: ONNX Runtime's CPU provider" in child.stdout


def test_openvino_asked_for_without_it_installed_is_one_clear_error(tmp_path):
    config = tmp_path / "config.yaml"
    data = {"cameras": [{"name": "a", "url": "a.mp4"}], "models": {"m": {"path": str(DEMO_MODEL)}}}
    for model, expected in [
        ({"device": "openvino"}, f"error: {DEMO_MODEL}: device 'openvino' requested but OpenVINO is not installed"),
        ({"precision": "bf16"}, "error: models.m.precision: bf16 runs on OpenVINO only, and device auto chose cpu"),
    ]:
        data["models"]["m"] |= model
        config.write_text(yaml.safe_dump(data))
        child = subprocess.run(
            [sys.executable, "-c", NO_OPENVINO, "check", "-c", str(config)], capture_output=True, text=True, cwd=ROOT
        )
        assert child.returncode == 2 and child.stderr.startswith(expected), child.stderr
        assert len(child.stderr.strip().splitlines()) == 1
        data["models"]["m"] = {"path": str(DEMO_MODEL)}


def test_bf16_on_an_onnx_runtime_device_is_refused_by_the_config():
    for device in ("cpu", "cuda", "openvino:GPU"):
        data = {"cameras": [{"name": "a", "url": "a.mp4"}], "models": {"m": {"path": "m.onnx", "device": device}}}
        data["models"]["m"]["precision"] = "bf16"
        with pytest.raises(ConfigError) as e:
            parse_config(data, "site.yaml")
        assert str(e.value) == (
            f"site.yaml: models.m: precision bf16 runs on OpenVINO's CPU only (device openvino, or auto where it "
            f"picks OpenVINO), not on device {device}"
        )
    parse_config(data | {"models": {"m": {"path": "m.onnx", "device": "openvino", "precision": "bf16"}}})


def test_bad_files_are_a_spec_error_naming_the_file_on_openvino(tmp_path, tiny_model):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model at all" * 10)
    with pytest.raises(SpecError, match=rf"^{garbage}: not a loadable ONNX model \(.+\)$"):
        ModelRuntime("m", ModelConfig(path=garbage, device="openvino"))
    with pytest.raises(SpecError, match=rf"^{tmp_path / 'absent.onnx'}: model file not found$"):
        ModelRuntime("m", ModelConfig(path=tmp_path / "absent.onnx", device="openvino"))
    detector = constant_detector(tmp_path / "det.onnx", [[0, 0, 10, 10]], [0.9], [1])  # a graph without a spec
    for device in ("cpu", "openvino"):
        with pytest.raises(SpecError, match=rf"^{detector}: no 'actionstream.spec' metadata; export the model"):
            ModelRuntime("m", ModelConfig(path=detector, device=device))
    # The spec's checks against the graph, on OpenVINO's view of it: a spec naming more labels than the graph has.
    proto = onnx.load(str(tiny_model))
    (entry,) = [e for e in proto.metadata_props if e.key == "actionstream.spec"]
    spec = json.loads(entry.value)
    entry.value = json.dumps(spec | {"labels": [*spec["labels"], "extra"]})
    wrong = tmp_path / "wrong.onnx"
    onnx.save(proto, str(wrong))
    for device in ("cpu", "openvino"):
        with pytest.raises(SpecError, match=rf"^{wrong}: output 'scores' has shape .* but the spec lists 6 labels$"):
            ModelRuntime("m", ModelConfig(path=wrong, device=device))


def test_openvino_gpu_without_an_intel_gpu_is_a_spec_error(tmp_path):
    from agent.live.backends import _core

    if "GPU" in _core().available_devices:
        pytest.skip("OpenVINO sees a GPU here")
    with pytest.raises(SpecError, match=rf"^{DEMO_MODEL}: device 'openvino:GPU' requested but OpenVINO sees no GPU"):
        ModelRuntime("m", ModelConfig(path=DEMO_MODEL, device="openvino:GPU"))


def test_the_cuda_probe_is_a_graph_onnx_runtime_runs():
    """``device: auto`` asks whether the CUDA provider loads by opening this graph on it: one Identity."""
    session = onnxruntime.InferenceSession(_PROBE, providers=["CPUExecutionProvider"])
    x = np.array([1.5], np.float32)
    assert session.run(None, {"x": x})[0].tolist() == [1.5]
