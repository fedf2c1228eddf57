"""Markdown tables from a benchmark's JSON lines (for docs/performance.md).

python -m bench.report bench/results/FILE.jsonl
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.plots import load, series_name


def tables(records: list[dict]) -> str:
    out = []
    model = [r for r in records if r["bench"] == "model" and "clips_per_s" in r]
    if model:
        out += ["| arch | runtime | fp16 | batch | batch ms (p50) | clips/s |", "|---|---|---|---|---|---|"]
        out += [
            f"| {r['arch']}{' (tiny)' if r.get('tiny') else ''} | {r['runtime']} | {r['fp16']} | {r['batch']} "
            f"| {r['batch_ms_p50']} | {r['clips_per_s']} |"
            for r in model
        ]
        out.append("")
    e2e = [r for r in records if r["bench"] == "e2e"]
    if e2e:
        out += [
            "| mode × workers | K | clips/s | mean batch | batch ms | p50 / p95 / p99 ms | stale | CPU % (per cam) "
            "| RSS MB/cam | model-only clips/s | efficiency | p99 ÷ batch |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {series_name(r)} | {r['cameras']} | {r['clips_per_s']} | {r['mean_batch']} | {r['batch_ms_mean']} "
            f"| {r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_p99']} | {r['stale_clips_dropped']} "
            f"| {r['cpu_percent']} ({r['cpu_percent_per_camera']}) | {r['rss_mb_per_camera']} "
            f"| {r['model_only_clips_per_s']} | {r['efficiency']} | {r['p99_over_batch']} |"
            for r in e2e
        ]
        out.append("")
    split = [r for r in e2e if "cpu_percent_cameras" in r]  # lines from 0.6.1 on
    if split:
        out += [
            "| mode × workers | K | CPU %: cameras / inference / loop / native | camera µs per frame "
            "| model-only CPU % | inference speed per CPU | efficiency |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {series_name(r)} | {r['cameras']} | {r['cpu_percent_cameras']} / {r['cpu_percent_inference']} "
            f"/ {r['cpu_percent_loop']} / {r['cpu_percent_native']} | {r['camera_cpu_us_per_frame']} "
            f"| {r['model_only_cpu_percent']} | {r['inference_speed_per_cpu']} | {r['efficiency']} |"
            for r in split
        ]
        out.append("")
    backends = [r for r in records if r["bench"] == "cpu_backends"]
    if backends:
        out += [
            "| model | workers | saturated K: ONNX Runtime / OpenVINO | model-only clips/s | × | e2e clips/s "
            "at saturation | × (rounds) | efficiency |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['model']} | {r['workers']} | {r['ort_cameras']} / {r['openvino_cameras']} "
            f"| {r['ort_model_only_clips_per_s']} / {r['openvino_model_only_clips_per_s']} | {r['model_only_speedup']} "
            f"| {r['ort_e2e_clips_per_s']} / {r['openvino_e2e_clips_per_s']} "
            f"| **{r['e2e_speedup']}** ({', '.join(map(str, r['e2e_speedup_rounds']))}) "
            f"| {r['ort_efficiency']} / {r['openvino_efficiency']} |"
            for r in backends
        ]
        out.append("")
    decode = [r for r in records if r["bench"] == "decode"]
    if decode:
        out += ["| decode variant | fps | ratio |", "|---|---|---|"]
        out += [f"| {r['variant']} | {r['fps']} | |" for r in decode if r["variant"] != "summary"]
        out += [
            f"| summary | | sampled/ffmpeg {r['sampled_vs_ffmpeg']}, sampled/all {r['sampled_vs_all']} |"
            for r in decode
            if r["variant"] == "summary"
        ]
        out.append("")
    flow = [r for r in records if r["bench"] == "flow"]
    if flow:
        sizes = list(dict.fromkeys(r["size"] for r in flow))
        cell = {(r["size"], r["stage"], r.get("method"), r.get("threads")): r for r in flow}
        header = [f"{s} ({next(r['flow_size'] for r in flow if r['size'] == s)})" for s in sizes]
        out += ["| ms per frame / per flow field | " + " | ".join(header) + " |", "|---" * (len(sizes) + 1) + "|"]
        for stage in ("decode", "convert"):
            values = [cell.get((s, stage, None, None), {}).get("ms_per_frame", "") for s in sizes]
            out.append(f"| {stage} (per frame) | " + " | ".join(map(str, values)) + " |")
        runs = dict.fromkeys((r["method"], r["threads"]) for r in flow if r["stage"] == "flow")
        for method, threads in runs:
            values = [cell.get((s, "flow", method, threads), {}).get("ms_per_field", "") for s in sizes]
            out.append(f"| flow {method}, {threads} thread(s) | " + " | ".join(map(str, values)) + " |")
    regions = [r for r in records if r["bench"] == "regions"]
    if regions:
        out += ["| regions variant | streams | entries | µs of CPU per stream frame (runs) |", "|---|---|---|---|"]
        out += [
            f"| {r['variant']} | {r['streams']} | {r['entries']} | {r['cpu_us_per_stream_frame']} "
            f"({', '.join(map(str, r['runs']))}) |"
            for r in regions
        ]
        out += [
            f"| summary | | | region/full {r['region_vs_full']}, shared 4/one {r['shared_4_vs_one']}, "
            f"separate 4/one {r['separate_4_vs_one']} |"
            for r in records
            if r["bench"] == "regions_summary"
        ]
        out.append("")
    decoded = [r for r in e2e if r.get("convert", "none") != "none"]
    if decoded:
        out += ["| convert | decode | K | clips/s | p99 ms | CPU cores | GPU util % |", "|---|---|---|---|---|---|---|"]
        out += [
            f"| {r['convert']} | {r['decode']} | {r['cameras']} | {r['clips_per_s']} | {r['latency_ms_p99']} "
            f"| {r.get('cpu_cores')} | {r.get('gpu_util_percent')} |"
            for r in decoded
        ]
        out += [
            f"| {r['convert']}: largest K within p99 {r['p99_target_ms']:g} ms | | {r['max_cameras_within_target']} "
            f"| | | {r['cpu_cores_there']} | {r['gpu_util_percent_there']} |"
            for r in records
            if r["bench"] == "e2e_summary" and r.get("convert", "none") != "none"
        ]
        out.append("")
    convert = [r for r in records if r["bench"] == "convert"]
    if convert:
        out += ["| source | conversion | µs of CPU per frame (runs) | wall µs per frame |", "|---|---|---|---|"]
        out += [
            f"| {r['source']} | {r['variant']} | {r['cpu_us_per_frame']} ({', '.join(map(str, r['runs_cpu_us']))}) "
            f"| {r['wall_us_per_frame']} |"
            for r in convert
        ]
        out += [
            f"| camera thread, {r['video']} | {r['variant']} | {r['cpu_us_per_decoded_frame']} per decoded frame "
            f"({', '.join(map(str, r['runs']))}) | |"
            for r in records
            if r["bench"] == "convert_camera"
        ]
        out.append("")
    interp = [r for r in records if r["bench"] == "interp"]
    if interp:
        out += [
            "| swscale mode | layout | ms/frame | mean abs pixel | max abs Δprob | same top-1 |",
            "|---|---|---|---|---|---|",
        ]
        out += [
            f"| {r['mode']} | {r.get('layout', 'packed')} | {r['ms_per_frame']} | {r['mean_abs_pixel']} "
            f"| {r['max_abs_prob']} | {r['same_top1']} |"
            for r in interp
        ]
        out.append("")
    offline = [r for r in records if r["bench"] == "offline"]
    if offline:
        out += [
            "| arch | views | ours: command / infer s | MMAction2: command / inference_recognizer s | speed-up |",
            "|---|---|---|---|---|",
        ]
        out += [
            f"| {r['arch']} | {r['views']} | {r['ours_command_s']} / {r['ours_infer_s']} "
            f"| {r['mmaction2_command_s']} / {r['mmaction2_infer_s']} "
            f"| {r['speedup_command']}× / {r['speedup_infer']}× |"
            for r in offline
        ]
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(load(Path(sys.argv[1]))))
