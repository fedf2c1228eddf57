"""PNG plots from the benchmarks' JSON lines (small files: low dpi, few points).

python -m bench.plots bench/results/FILE.jsonl [--outdir bench/results]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw(records: list[dict], outdir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    model = [r for r in records if r["bench"] == "model" and "clips_per_s" in r]
    if model:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        series = defaultdict(list)
        for r in model:
            series[(r["arch"], r["runtime"])].append((r["batch"], r["clips_per_s"]))
        for (arch, runtime), points in sorted(series.items()):
            points.sort()
            ax.plot(*zip(*points, strict=True), marker="o", label=f"{arch} {runtime}")
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="clips/s", title="model-only throughput")
        ax.legend(fontsize=6)
        written.append(_save(fig, outdir / f"{stem}-model.png"))
    e2e = [r for r in records if r["bench"] == "e2e"]
    if e2e:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
        for mode in sorted({series_name(r) for r in e2e}):
            rows = sorted((r for r in e2e if series_name(r) == mode), key=lambda r: r["cameras"])
            ks = [r["cameras"] for r in rows]
            ax1.plot(ks, [r["clips_per_s"] for r in rows], marker="o", label=f"{mode} end-to-end")
            ax1.plot(ks, [r["model_only_clips_per_s"] for r in rows], ls="--", label=f"{mode} model-only")
            for q in ("p50", "p99"):
                ax2.plot(ks, [r[f"latency_ms_{q}"] for r in rows], marker=".", label=f"{mode} {q}")
            ax2.plot(ks, [2 * r["batch_ms_mean"] if r["batch_ms_mean"] else None for r in rows], ls=":",
                     label=f"{mode} 2x batch time")  # fmt: skip
        ax1.set(xscale="log", xlabel="cameras", ylabel="clips/s", title="throughput")
        ax2.set(xscale="log", yscale="log", xlabel="cameras", ylabel="ms", title="capture -> publish")
        ax1.legend(fontsize=6)
        ax2.legend(fontsize=6)
        written.append(_save(fig, outdir / f"{stem}-e2e.png"))
    return written


def series_name(row: dict) -> str:
    """An end-to-end sweep's name: its mode, its workers per model (since 0.3.0), its model unless the demo's, and
    its engine when OpenVINO (since 0.8.0; ONNX Runtime otherwise), and its conversion when the graph's."""
    name = f"{row['mode']} x{row['workers']}" if "workers" in row else row["mode"]
    name = name if row.get("model", "motion_demo.onnx") == "motion_demo.onnx" else f"{name} {row['model']}"
    name = f"{name} {row['provider']}" if str(row.get("provider", "")).startswith("openvino") else name
    return f"{name} convert {row['convert']}" if str(row.get("convert", "")).startswith("graph") else name


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path)
    p.add_argument("--outdir", type=Path)
    args = p.parse_args(argv)
    paths = draw(load(args.results), args.outdir or args.results.parent, args.results.stem)
    for path in paths:
        print(f"wrote {path}")
    return paths


if __name__ == "__main__":
    main()
