"""Offline recognition of one video: ``actionstream infer`` against MMAction2 1.2.0's ``inference_recognizer``,
same video, same weights (an MMAction2 checkpoint exported with export/to_onnx.py), same number of views.

    python -m bench.offline [--archs slowfast_r50_4x16,tsn_r50] [--views 1] [--repeats 2]

Both sides run as fresh processes, alternately, and are timed two ways: the whole command (start-up, imports,
model load, decode, inference) and the recognition call alone (MMAction2: ``inference_recognizer``; ours: the
windows loop ``infer`` reports). MMAction2 runs in its own venv (built by tests/parity/mmaction2_venv.py).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from agent.spec import IMAGENET_MEAN, IMAGENET_STD
from bench import mmaction2_venv
from bench.common import CACHE, ROOT, Emitter, test_video

MEAN, STD = list(IMAGENET_MEAN), list(IMAGENET_STD)
SLOWFAST_R50_4X16 = {
    "type": "Recognizer3D",
    "backbone": {
        "type": "ResNet3dSlowFast",
        "pretrained": None,
        "resample_rate": 8,
        "speed_ratio": 8,
        "channel_ratio": 8,
        "slow_pathway": {
            "type": "resnet3d",
            "depth": 50,
            "pretrained": None,
            "lateral": True,
            "conv1_kernel": [1, 7, 7],
            "dilations": [1, 1, 1, 1],
            "conv1_stride_t": 1,
            "pool1_stride_t": 1,
            "inflate": [0, 0, 1, 1],
            "norm_eval": False,
            "speed_ratio": 8,
            "channel_ratio": 8,
        },  # fmt: skip
        "fast_pathway": {
            "type": "resnet3d",
            "depth": 50,
            "pretrained": None,
            "lateral": False,
            "base_channels": 8,
            "conv1_kernel": [5, 7, 7],
            "conv1_stride_t": 1,
            "pool1_stride_t": 1,
            "norm_eval": False,
        },  # fmt: skip
    },
    "cls_head": {
        "type": "SlowFastHead",
        "in_channels": 2304,
        "num_classes": 400,
        "spatial_type": "avg",
        "dropout_ratio": 0.5,
        "average_clips": "prob",
    },  # fmt: skip
    "data_preprocessor": {"type": "ActionDataPreprocessor", "mean": MEAN, "std": STD, "format_shape": "NCTHW"},
}
TSN_R50 = {
    "type": "Recognizer2D",
    "backbone": {"type": "ResNet", "pretrained": None, "depth": 50, "norm_eval": False},
    "cls_head": {
        "type": "TSNHead",
        "num_classes": 400,
        "in_channels": 2048,
        "spatial_type": "avg",
        "consensus": {"type": "AvgConsensus", "dim": 1},
        "dropout_ratio": 0.4,
        "init_std": 0.01,
        "average_clips": "prob",
    },  # fmt: skip
    "data_preprocessor": {"type": "ActionDataPreprocessor", "mean": MEAN, "std": STD, "format_shape": "NCHW"},
}
# arch -> (MMAction2 model config, SampleFrames arguments, format, one view's input shape for the BN statistics)
MODELS = {
    "slowfast_r50_4x16": (SLOWFAST_R50_4X16, {"clip_len": 32, "frame_interval": 2}, "NCTHW", [1, 3, 32, 224, 224]),
    "tsn_r50": (TSN_R50, {"clip_len": 1, "frame_interval": 1}, "NCHW", [8, 3, 224, 224]),
}


def pipeline(arch: str, views: int) -> list[dict]:
    _, sampling, fmt, _ = MODELS[arch]
    clips = 8 * views if arch == "tsn_r50" else views  # TSN: 8 segments per view
    return [
        {"type": "DecordInit"},
        {"type": "SampleFrames", **sampling, "num_clips": clips, "test_mode": True},
        {"type": "DecordDecode"},
        {"type": "Resize", "scale": (-1, 256)},
        {"type": "CenterCrop", "crop_size": 224},
        {"type": "FormatShape", "input_format": fmt},
        {"type": "PackActionInputs"},
    ]


def mm_run(python: Path, job: dict, work: Path) -> tuple[dict, float]:
    path = work / "job.json"
    path.write_text(json.dumps(job))
    t0 = time.perf_counter()
    out = subprocess.run(
        [str(python), str(ROOT / "bench" / "mmaction2_side.py"), str(path)], capture_output=True, text=True, timeout=900
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"MMAction2 side failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), wall


def ours_run(video: Path, model: Path, every: float) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "agent", "infer", str(video), "--model", str(model), "--every", f"{every:.6f}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"actionstream infer failed: {out.stderr[-2000:]}")
    m = re.search(r"whole video \((\d+) windows of [\d.]+ s, ([\d.]+) s\)", out.stdout)
    top = re.search(r"1\. (\S+)", out.stdout)
    return wall, float(m.group(2)), top.group(1) if top else "?"


def bench_arch(arch: str, args: argparse.Namespace, python: Path, video: Path, emit: Emitter) -> dict:
    from agent.offline.video import frame_times
    from agent.spec import load_spec
    from export import to_onnx

    work = CACHE / "offline"
    work.mkdir(parents=True, exist_ok=True)
    config, _, _, probe = MODELS[arch]
    ckpt = work / f"{arch}_mmaction2.pth"
    if not ckpt.exists():
        mm_run(python, {"make": True, "config": config, "probe_shape": probe, "checkpoint": str(ckpt)}, work)
    times = frame_times(video)
    duration = float(times.max() - times.min()) + 1 / 30
    model = work / f"{arch}_{video.stem}.onnx"
    if not model.exists():
        labels = work / "labels400.txt"
        labels.write_text("".join(f"class{i}\n" for i in range(400)))
        argv = ["--arch", arch, "--checkpoint", str(ckpt), "--labels", str(labels), "--out", str(model)]
        if arch == "tsn_r50":  # one view = 8 segments over the whole video, as MMAction2's TSN test samples
            argv += ["--segments", "8", "--window-s", f"{duration:.3f}"]
        if to_onnx.main(argv) != 0:
            raise RuntimeError(f"export of {arch} from {ckpt} failed")
    span = load_spec(model).span_s
    usable = float(times.max() - times.min()) - span
    every = usable / (args.views - 1) - 1e-3 if args.views > 1 else 1e6
    job = {"make": False, "config": config, "pipeline": pipeline(arch, args.views), "checkpoint": str(ckpt)}
    job |= {"video": str(video), "threads": args.threads}
    ours_wall, ours_call, mm_wall, mm_call = [], [], [], []
    for _ in range(args.repeats):
        wall, call, top = ours_run(video, model, every)
        ours_wall.append(wall)
        ours_call.append(call)
        result, wall = mm_run(python, job, work)
        mm_wall.append(wall)
        mm_call.append(result["infer_s"])
    record = {"bench": "offline", "arch": arch, "views": args.views, "video": video.name, "repeats": args.repeats}
    record |= {
        "ours_command_s": round(statistics.median(ours_wall), 3),
        "ours_infer_s": round(statistics.median(ours_call), 3),
        "mmaction2_command_s": round(statistics.median(mm_wall), 3),
        "mmaction2_infer_s": round(statistics.median(mm_call), 3),
    }
    record["speedup_command"] = round(record["mmaction2_command_s"] / record["ours_command_s"], 2)
    record["speedup_infer"] = round(record["mmaction2_infer_s"] / record["ours_infer_s"], 2)
    return emit(record)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="slowfast_r50_4x16,tsn_r50")
    p.add_argument("--views", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads on the MMAction2 side (ORT: its default)")
    p.add_argument("--video", type=Path, help="default: a generated 10 s 1280x720 30 fps H.264 clip")
    p.add_argument("--out", type=Path)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = parser().parse_args(argv)
    python = mmaction2_venv.python()
    video = args.video or test_video(10, 1280, 720, 30)
    emit = Emitter(args.out)
    try:
        return [bench_arch(arch, args, python, video, emit) for arch in args.archs.split(",")]
    finally:
        emit.close()


if __name__ == "__main__":
    main()
