"""swscale interpolation modes for the sampled-frame conversion: speed, pixels and what the model then says.

    python -m bench.interp [VIDEO] [--model models/motion_demo.onnx]

Reference: the full-resolution RGB frame resized with bilinear interpolation in float (what MMAction2's
``Resize`` does with cv2), then centre-cropped. For each mode and swscale output layout (``planar``: what the agent
converts to, see :mod:`agent.frames`; ``packed``: straight to rgb24, as before 0.4.2): ms per converted frame (one
swscale context and thread, as a camera converts), mean |Δpixel| against the reference, and max |Δprob| of the
model's scores on clips built from those frames (plus whether top-1 agrees).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from agent.frames import centre_crop_origin, to_model_rgb
from agent.live.clips import sample_indices
from agent.spec import resized_size
from bench.common import DEMO_MODEL, ROOT, Emitter, test_video

MODES = ["POINT", "FAST_BILINEAR", "BILINEAR", "AREA", "BICUBIC"]


def reference_rgb(frame: av.VideoFrame, resize_short: int, size: int) -> np.ndarray:
    import torch

    rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float()
    w, h = resized_size(frame.width, frame.height, resize_short)
    out = torch.nn.functional.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    out = out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    x0, y0 = centre_crop_origin(w, h, size)
    return out[y0 : y0 + size, x0 : x0 + size]


def packed_rgb(frame, resize_short: int, size: int, interpolation, reformatter: VideoReformatter) -> np.ndarray:
    w, h = resized_size(frame.width, frame.height, resize_short)
    out = reformatter.reformat(frame, width=w, height=h, format="rgb24", interpolation=interpolation, threads=1)
    x0, y0 = centre_crop_origin(w, h, size)
    return out.to_ndarray()[y0 : y0 + size, x0 : x0 + size]


def planar_rgb(frame, resize_short: int, size: int, interpolation, reformatter: VideoReformatter) -> np.ndarray:
    return to_model_rgb(
        frame, resize_short=resize_short, size=size, interpolation=interpolation, reformatter=reformatter, threads=1
    )


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("video", nargs="?", type=Path)
    p.add_argument("--model", type=Path, default=DEMO_MODEL)
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    from agent.config import ModelConfig
    from agent.live.runtime import ModelRuntime

    runtime = ModelRuntime("m", ModelConfig(path=args.model, device="cpu"))
    spec = runtime.spec
    real = ROOT.parent / "shared" / "data" / "mmaction2" / "demo" / "demo.mp4"  # a real video, when it is here
    video = args.video or (real if real.exists() else test_video(10, 1280, 720, 30))
    with av.open(str(video)) as container:
        frames = list(container.decode(container.streams.video[0]))
    times = np.array([f.time for f in frames])
    ends = np.linspace(spec.span_s + times[0], times[-1], args.clips)
    picks = [sample_indices(spec, times, float(e)) for e in ends]
    used = sorted({int(i) for pick in picks for v in pick.values() for i in v})
    ref = {i: reference_rgb(frames[i], spec.resize_short, spec.size) for i in used}

    def scores(converted: dict[int, np.ndarray]) -> np.ndarray:
        batch = {k: np.stack([np.stack([converted[int(i)] for i in pick[k]]) for pick in picks]) for k in picks[0]}
        return runtime.infer(batch)

    ref_scores = scores(ref)
    emit = Emitter(args.out)
    records = []
    for mode, (layout, convert) in itertools.product(MODES, {"planar": planar_rgb, "packed": packed_rgb}.items()):
        interpolation, reformatter = Interpolation[mode], VideoReformatter()
        runs, converted = [], {}
        for i in used:
            t0 = time.perf_counter()
            rgb = convert(frames[i], spec.resize_short, spec.size, interpolation, reformatter)
            runs.append(time.perf_counter() - t0)
            converted[i] = np.ascontiguousarray(rgb)
        pixel = statistics.mean(float(np.abs(converted[i].astype(int) - ref[i]).mean()) for i in used)
        got = scores(converted)
        record = {"bench": "interp", "mode": mode, "layout": layout, "video": video.name, "model": args.model.name}
        record |= {"frames": len(used), "size": f"{frames[0].width}x{frames[0].height}"}
        record |= {"ms_per_frame": round(1000 * statistics.median(runs), 3), "mean_abs_pixel": round(pixel, 3)}
        record |= {"max_abs_prob": round(float(np.abs(got - ref_scores).max()), 5)}
        record |= {"same_top1": bool((got.argmax(1) == ref_scores.argmax(1)).all())}
        records.append(emit(record))
    emit.close()
    return records


if __name__ == "__main__":
    main()
