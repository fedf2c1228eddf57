"""ONNX Runtime's CPU provider against OpenVINO on the CPU: the same models, model-only and end to end, one run.

    python -m bench.cpu_backends [--models demo,slowfast_r50_4x16] [--seconds 10] [--warmup 3] [--out FILE]

For each model, both engines (``models.NAME.device`` cpu, then openvino; fp32; one worker per core, as a many-camera
CPU box is configured), each through the same :mod:`bench.e2e` sweep until saturation: cameras playing the 160x120
15 fps H.264 sub-stream in real time, ``decode_threads`` 1, a clip every 0.25 s (the demo model) or 1 s (an arch,
224 px), ``max_batch`` 64 (4 for an arch). Before its sweep each engine's model-only ceiling is measured with the
same workers and batch sizes (``e2e_model_only`` lines). One ``cpu_backends`` line per model then holds both sides
and the speed-ups, OpenVINO ÷ ONNX Runtime: ``e2e_speedup`` from the saturated clips/s (each sweep's highest),
``model_only_speedup`` from the model-only ceilings (each engine's best batch size). ``make bench`` prints the demo
model's ``e2e_speedup`` as ``cpu backend speedup: X.XX``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench import e2e
from bench.common import Emitter
from bench.model import model_file

ENGINES = {"ort": "cpu", "openvino": "openvino"}  # record prefix → models.NAME.device
DEMO = {"every": 0.25, "max_batch": 64}
R50 = {"every": 1.0, "max_batch": 4}  # ~0.2-0.7 s a clip on 2 cores: a handful of cameras saturate it


def compare(name: str, args: argparse.Namespace) -> dict:
    """Both engines' sweeps for model ``name`` (``demo`` or an arch); the ``cpu_backends`` record's fields."""
    file = name.endswith(".onnx")
    path = Path(name) if file else model_file(name)
    settings = DEMO if file or name == "demo" else R50
    workers = str(args.workers or len(os.sched_getaffinity(0)))
    record: dict = {"bench": "cpu_backends", "model": path.name, "workers": int(workers)}
    for prefix, device in ENGINES.items():
        argv = ["--model", str(path), "--device", device, "--workers", workers, "--decode-threads", "1"]
        every, max_batch = args.every or settings["every"], args.max_batch or settings["max_batch"]
        argv += ["--every", str(every), "--max-batch", str(max_batch), "--max-wait-ms", "0"]
        argv += ["--seconds", str(args.seconds), "--warmup", str(args.warmup), "--cameras", args.cameras]
        summary = e2e.main(argv + (["--out", str(args.out)] if args.out else []))
        record |= {
            f"{prefix}_e2e_clips_per_s": summary["max_clips_per_s"],
            f"{prefix}_model_only_clips_per_s": summary["ceiling_clips_per_s"],
            f"{prefix}_efficiency": summary["efficiency"],
            f"{prefix}_cameras": summary["cameras"],
        }
    for kind in ("e2e", "model_only"):
        ort, ov = record[f"ort_{kind}_clips_per_s"], record[f"openvino_{kind}_clips_per_s"]
        record[f"{kind}_speedup"] = round(ov / ort, 2) if ort else None
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
    p.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Returns ``{"models": {name: record}, "speedup": the demo model's e2e_speedup (None without it)}``."""
    args = parser().parse_args(argv)
    records = {}
    for name in args.models.split(","):
        record = compare(name, args)
        emit = Emitter(args.out)
        try:
            records[name] = emit(record)
        finally:
            emit.close()
    demo = records.get("demo")
    return {"models": records, "speedup": demo["e2e_speedup"] if demo else None}


if __name__ == "__main__":
    main()
