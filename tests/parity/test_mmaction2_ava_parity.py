"""Parity with MMAction2 1.2.0's AVA detectors (the action part): same checkpoint, frames and boxes → same
per-box probabilities.

MMAction2 builds the backbone, ``SingleRoIExtractor3D`` and ``BBoxHeadAVA`` from its AVA config with random weights
and BatchNorm statistics (``mmaction2_ava_side.py``; RoIAlign there is torchvision's ``roi_align`` with mmcv's
arguments, as mmcv-lite has no ``mmcv.ops``) and saves a checkpoint; we export it with ``export/to_onnx.py`` and run
ONNX Runtime on the same frames of ``demo_spatiotemporal_det.mp4`` and the same person boxes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import onnxruntime
import pytest

from agent.spec import load_spec
from bench import mmaction2_venv
from export import to_onnx
from export.checkpoints import load_weights, read_checkpoint
from export.models import PERSON_ARCHS, build_model

CONFIGS = {  # our arch -> MMAction2 AVA config, relative to mmaction/.mim/configs
    "ava_slowonly_r50_4x16": "detection/slowonly/slowonly_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py",
    "ava_slowfast_r50_4x16": "detection/slowfast/slowfast_kinetics400-pretrained-r50_8xb16-4x16x1-20e_ava21-rgb.py",
}
SHORT_SIDE = 256  # the AVA test pipeline's Resize(scale=(-1, 256))
KEY_FRAME = 32  # of the demo's 57 frames
# Person boxes in pixels of the resized frame (340 x 256): the two arm wrestlers and the person standing behind.
BOXES = np.array([[2.5, 1.0, 205.0, 255.0], [168.0, 28.5, 339.0, 250.0], [81.0, 3.0, 124.5, 97.0]], np.float32)


def decode_resized(path, short_side: int) -> np.ndarray:
    """All frames, RGB, short side resized to ``short_side`` with mmcv's rounding (``int(x * scale + 0.5)``)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            scale = short_side / min(frame.width, frame.height)
            width, height = int(frame.width * scale + 0.5), int(frame.height * scale + 0.5)
            frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
    return np.stack(frames)


def ava_indices(key: int, clip_len: int, interval: int, total: int) -> np.ndarray:
    """MMAction2's ``SampleAVAFrames`` in test mode: ``clip_len`` frames ``interval`` apart around the key frame."""
    start = key - (clip_len // 2) * interval
    return np.clip(np.arange(clip_len) * interval + start, 0, total - 1)


@pytest.fixture(scope="module")
def ava_parity_run(shared_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("ava-parity")
    frames = decode_resized(shared_data / "mmaction2/demo/demo_spatiotemporal_det.mp4", SHORT_SIDE)
    height, width = frames.shape[1:3]
    assert min(height, width) == SHORT_SIDE
    rois = np.concatenate([np.zeros((len(BOXES), 1), np.float32), BOXES], axis=1)  # all boxes on clip 0
    np.save(work / "rois.npy", rois)
    jobs, feeds = [], {}
    for seed, (arch, config) in enumerate(CONFIGS.items()):
        sampling = PERSON_ARCHS[arch].inputs
        longest = sampling[-1]  # MMAction2 takes the fast-rate clip; the slow one is every alpha-th frame
        clip = frames[ava_indices(KEY_FRAME, longest.frames, longest.interval, len(frames))]
        np.save(work / f"{arch}.npy", clip)
        alpha = {s.name: longest.frames // s.frames for s in sampling}
        feeds[arch] = {s.name: np.ascontiguousarray(clip[None, :: alpha[s.name]]) for s in sampling}
        feeds[arch]["boxes"] = BOXES / np.array([width, height, width, height], np.float32)
        feeds[arch]["box_batch"] = np.zeros(len(BOXES), np.int64)
        jobs.append(
            {
                "config": config,
                "seed": seed,
                "clip": str(work / f"{arch}.npy"),
                "rois": str(work / "rois.npy"),
                "checkpoint": str(work / f"{arch}.pth"),
                "probs": str(work / f"{arch}-mmaction2.npy"),
                "torchvision_python": sys.executable,
            }
        )
    (work / "jobs.json").write_text(json.dumps(jobs))
    side = mmaction2_venv.ROOT / "tests/parity/mmaction2_ava_side.py"
    subprocess.run([str(mmaction2_venv.python()), str(side), str(work / "jobs.json")], check=True, timeout=1800)

    labels = shared_data / "mmaction2/tools/data/ava/label_map.txt"
    results = {}
    for arch in CONFIGS:
        out = work / f"{arch}.onnx"
        argv = ["--arch", arch, "--checkpoint", str(work / f"{arch}.pth"), "--labels", str(labels), "--out", str(out)]
        assert to_onnx.main(argv) == 0
        spec = load_spec(out)
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        ours = session.run(["scores"], feeds[arch])[0]
        theirs = np.load(work / f"{arch}-mmaction2.npy")
        results[arch] = (ours, theirs, spec, work / f"{arch}.pth")
    return results


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_per_box_probabilities_match_mmaction2(ava_parity_run, arch):
    ours, theirs, spec, _ = ava_parity_run[arch]
    assert theirs.shape == (len(BOXES), 81)
    assert ours.shape == (len(BOXES), 60) == (len(BOXES), len(spec.labels))
    theirs = theirs[:, spec.label_ids]  # the label map's columns; background 0 and unlisted ids dropped
    # A meaningful reference: spread over (0, 1), and different from box to box.
    assert theirs.min() < 0.1 and theirs.max() > 0.9 and np.ptp(theirs, axis=0).max() > 0.1
    delta = float(np.abs(ours - theirs).max())
    print(f"{arch}: max |Δprob| vs MMAction2 = {delta:.3g}")
    assert delta <= 1e-4


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_mmaction2_checkpoint_loads_with_strict_keys(ava_parity_run, arch):
    *_, checkpoint = ava_parity_run[arch]
    ckpt = read_checkpoint(checkpoint)
    model = build_model(arch)
    assert set(ckpt.state_dict) == set(model.state_dict())
    load_weights(model, ckpt)
