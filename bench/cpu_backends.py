"""ONNX Runtime's CPU provider against OpenVINO on the CPU: the same models, model-only and end to end, one run.

    python -m bench.cpu_backends [--models demo,slowfast_r50_4x16] [--seconds 10] [--rounds 3] [--out FILE]

For each model, both engines (``models.NAME.device`` cpu, then openvino; fp32; one worker per core, as a many-camera
CPU box is configured) go through the same :mod:`bench.e2e` sweep until saturation: cameras playing the 160x120
15 fps H.264 sub-stream in real time, ``decode_threads`` 1, a clip every 0.25 s (the demo model) or 0.5 s (an arch,
224 px), ``max_batch`` 64 (4 for an arch). Each engine's saturated K (its sweep's highest clips/s) then runs again
``--rounds`` times, the two engines alternating (``cpu_backends_round`` lines, each with the model-only ceiling at
its mean batch size measured right after it): a shared host's load drifts over the minutes a sweep takes, and
neighbouring runs see the same machine. One ``cpu_backends`` line per model holds both sides, each the median of
its rounds, and the speed-ups, OpenVINO ÷ ONNX Runtime, each the median of the rounds' ratios: ``e2e_speedup``
(clips/s at saturation) and ``model_only_speedup``. ``make bench`` prints the demo model's ``e2e_speedup`` as
``cpu backend speedup: X.XX``.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from bench import e2e
from bench.common import Emitter, test_video
from bench.model import model_file, runtime_for

ENGINES = {"ort": "cpu", "openvino": "openvino"}  # record prefix → models.NAME.device
DEMO = {"every": 0.25, "max_batch": 64}
R50 = {"every": 0.5, "max_batch": 4}  # ~0.2-0.9 s a clip on 2 cores: two or three cameras saturate it


def compare(name: str, args: argparse.Namespace, emit: Emitter) -> dict:
    """Both engines' sweeps and alternating rounds for model ``name`` (demo, an arch or an .onnx file); the
    ``cpu_backends`` record."""
    file = name.endswith(".onnx")
    path = Path(name) if file else model_file(name)
    settings = DEMO if file or name == "demo" else R50
    workers = args.workers or len(os.sched_getaffinity(0))
    every, max_batch = args.every or settings["every"], args.max_batch or settings["max_batch"]
    argv = ["--model", str(path), "--workers", str(workers), "--decode-threads", "1", "--every", str(every)]
    argv += ["--max-batch", str(max_batch), "--max-wait-ms", "0", "--seconds", str(args.seconds)]
    argv += ["--warmup", str(args.warmup), "--cameras", args.cameras] + (["--out", str(args.out)] if args.out else [])
    record: dict = {"bench": "cpu_backends", "model": path.name, "workers": workers}
    for prefix, device in ENGINES.items():
        summary = e2e.main([*argv, "--device", device])
        record |= {
            f"{prefix}_cameras": summary["saturated_cameras"],
            f"{prefix}_sweep_max_clips_per_s": summary["max_clips_per_s"],
            f"{prefix}_sweep_ceiling_clips_per_s": summary["ceiling_clips_per_s"],
        }
    video = test_video(30, 160, 120, 15)
    engines = {}
    for prefix, device in ENGINES.items():
        runtime = runtime_for(path, device, max_batch, workers=workers)
        runtime.name = "m"
        runtime.warm_up([1, max_batch])
        engines[prefix] = (e2e.parser().parse_args([*argv, "--device", device]), runtime)
    rounds: dict[str, list[dict]] = {prefix: [] for prefix in ENGINES}
    for i in range(args.rounds):
        for prefix, (e2e_args, runtime) in engines.items():
            k = record[f"{prefix}_cameras"]
            row = e2e.measure(e2e_args, k, video, runtime)
            keys = (
                "clips_per_s",
                "mean_batch",
                "latency_ms_p99",
                "cpu_percent",
                "model_only_clips_per_s",
                "efficiency",
            )
            emit({"bench": "cpu_backends_round", "model": path.name, "provider": runtime.device, "round": i + 1}
                 | {"cameras": k, "workers": workers} | {key: row[key] for key in keys})  # fmt: skip
            rounds[prefix].append(row)
    for prefix in ENGINES:
        for kind in ("clips_per_s", "model_only_clips_per_s", "efficiency"):
            name_of = {"clips_per_s": "e2e_clips_per_s"}.get(kind, kind)
            record[f"{prefix}_{name_of}"] = round(statistics.median(r[kind] for r in rounds[prefix]), 3)
    for kind, key in (("e2e", "clips_per_s"), ("model_only", "model_only_clips_per_s")):
        ratios = [ov[key] / ort[key] for ort, ov in zip(rounds["ort"], rounds["openvino"], strict=True) if ort[key]]
        record[f"{kind}_speedup"] = round(statistics.median(ratios), 2) if ratios else None
        record[f"{kind}_speedup_rounds"] = [round(r, 3) for r in ratios]
    return record


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", default="demo,slowfast_r50_4x16", help="comma-separated: demo, archs (224 px), .onnx files"
    )
    p.add_argument("--cameras", default="auto", help="as bench.e2e --cameras (default: sweep until saturation)")
    p.add_argument("--workers", type=int, help="as models.NAME.workers (default: one per core)")
    p.add_argument("--every", type=float, help="seconds between a camera's clips (default: the model's, above)")
    p.add_argument("--max-batch", type=int, help="as models.NAME.max_batch (default: the model's, above)")
    p.add_argument("--seconds", type=float, default=10.0, help="each K's measured window")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of both engines at their saturated K")
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Returns ``{"models": {name: record}, "speedup": the demo model's e2e_speedup (None without it)}``."""
    args = parser().parse_args(argv)
    records = {}
    emit = Emitter(args.out)
    try:
        for name in args.models.split(","):
            records[name] = emit(compare(name, args, emit))
    finally:
        emit.close()
    demo = records.get("demo")
    return {"models": records, "speedup": demo["e2e_speedup"] if demo else None}


if __name__ == "__main__":
    main()
