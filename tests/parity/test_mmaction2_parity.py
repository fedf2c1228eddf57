"""Parity with MMAction2 1.2.0 itself: same checkpoint, same frames → same probabilities.

MMAction2 builds each architecture from its own config with random weights and random BatchNorm statistics
and saves a checkpoint; we export that checkpoint with ``export/to_onnx.py`` and run it with ONNX Runtime on
frames decoded from ``demo.mp4``.
"""

from __future__ import annotations

import copy
import json
import subprocess

import numpy as np
import onnxruntime
import pytest

from agent.offline.video import read_clips
from agent.spec import load_spec
from bench import mmaction2_venv
from export import to_onnx

ARCHS = {  # our arch -> (reference config name, overrides of MMAction2's backbone config)
    "tsn_r50": ("tsn_r50", {}),
    "i3d_r50": ("i3d_r50", {}),
    "slowonly_r50_4x16": ("slowonly_r50", {}),
    "slowonly_r50_8x8": ("slowonly_r50", {}),
    "slowfast_r50_4x16": ("slowfast_r50", {}),
    "slowfast_r50_8x8": ("slowfast_r50", {"resample_rate": 4, "speed_ratio": 4, "slow_pathway": {"fusion_kernel": 7}}),
}


def _mm_config(reference: dict, name: str, overrides: dict) -> dict:
    config = copy.deepcopy(reference[name]["config"])
    for key, value in overrides.items():
        if isinstance(value, dict):
            config["backbone"][key].update(value)
        else:
            config["backbone"][key] = value
    return config


@pytest.fixture(scope="module")
def parity_run(shared_data, tmp_path_factory):
    """Export each arch from an MMAction2-made checkpoint; return ours and MMAction2's probabilities."""
    work = tmp_path_factory.mktemp("parity")
    reference = json.loads((shared_data / "reference/mmaction2_1.2.0_state_dict_keys.json").read_text())
    labels = shared_data / "mmaction2/tools/data/kinetics/label_map_k400.txt"
    video = shared_data / "mmaction2/demo/demo.mp4"
    jobs, ours = [], {}
    for seed, (arch, (name, overrides)) in enumerate(ARCHS.items()):
        # A first export with random weights gives the spec, hence which frames this arch samples.
        probe = work / f"{arch}-probe.onnx"
        assert to_onnx.main(["--arch", arch, "--labels", str(labels), "--out", str(probe), "--width", "8"]) == 0
        clip = read_clips(video, load_spec(probe), ends=[6.0])[0]
        main_input = clip.inputs.get("clip", clip.inputs.get("fast"))
        np.save(work / f"{arch}.npy", main_input)
        jobs.append(
            {
                "config": _mm_config(reference, name, overrides),
                "seed": seed,
                "clip": str(work / f"{arch}.npy"),
                "format_shape": "NCHW" if arch.startswith("tsn") else "NCTHW",
                "checkpoint": str(work / f"{arch}.pth"),
                "probs": str(work / f"{arch}-mmaction2.npy"),
            }
        )
        ours[arch] = clip
    (work / "jobs.json").write_text(json.dumps(jobs))
    side = mmaction2_venv.ROOT / "tests/parity/mmaction2_side.py"
    subprocess.run([str(mmaction2_venv.python()), str(side), str(work / "jobs.json")], check=True, timeout=1800)

    results = {}
    for arch in ARCHS:
        out = work / f"{arch}.onnx"
        ckpt = work / f"{arch}.pth"
        argv = ["--arch", arch, "--checkpoint", str(ckpt), "--labels", str(labels), "--out", str(out)]
        assert to_onnx.main(argv) == 0
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        feeds = {name: frames[None] for name, frames in ours[arch].inputs.items()}
        got = session.run(["scores"], feeds)[0][0]
        results[arch] = (got, np.load(work / f"{arch}-mmaction2.npy"), ours[arch])
    return results


@pytest.mark.parametrize("arch", list(ARCHS))
def test_probabilities_match_mmaction2(parity_run, arch):
    ours, theirs, _ = parity_run[arch]
    assert ours.shape == theirs.shape == (400,)
    # A meaningful reference: neither uniform nor one-hot (either would make |Δprob| trivially small).
    assert 2.0 / 400 < theirs.max() < 0.99, f"degenerate reference probabilities (max {theirs.max():.3g})"
    assert np.abs(ours - theirs).max() <= 1e-4
    assert ours.argmax() == theirs.argmax()


@pytest.mark.parametrize("arch", ["slowfast_r50_4x16", "slowfast_r50_8x8"])
def test_slow_frames_are_every_alpha_th_fast_frame(parity_run, arch):
    clip = parity_run[arch][2]
    alpha = clip.inputs["fast"].shape[0] // clip.inputs["slow"].shape[0]
    np.testing.assert_array_equal(clip.inputs["slow"], clip.inputs["fast"][::alpha])
