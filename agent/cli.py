"""``actionstream`` command line: ``infer`` (offline, one video) and ``inspect`` (what a model file holds)."""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from agent.spec import SpecError, open_session, read_spec
from agent.video import VideoError, frame_times, read_clips


def _infer(args: argparse.Namespace) -> int:
    session = open_session(args.model)
    spec = read_spec(session, str(args.model))
    if args.every:
        times = frame_times(args.video)
        first_end = float(times.min()) + spec.span_s
        ends = list(np.arange(first_end, float(times.max()) + 1e-9, args.every)) or [float(times.max())]
    else:
        ends = None
    clips = read_clips(args.video, spec, ends)
    names = [i.name for i in spec.inputs]
    for clip in clips:
        t0 = time.perf_counter()
        scores = session.run([spec.output.name], {n: clip.inputs[n][None] for n in names})[0][0]
        ms = (time.perf_counter() - t0) * 1000
        top = np.argsort(-scores)[: args.top_k]
        if args.json:
            print(json.dumps({"end": round(clip.end, 3), "top": [[spec.labels[i], float(scores[i])] for i in top]}))
        else:
            print(f"clip ending at {clip.end:.2f} s ({ms:.0f} ms):")
            for rank, i in enumerate(top, 1):
                print(f"  {rank}. {spec.labels[i]:<30} {scores[i]:.4f}")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    spec = read_spec(open_session(args.model), str(args.model))
    if args.json:
        print(spec.to_json())
        return 0
    print(f"{args.model}: {spec.arch}, {len(spec.labels)} labels, {spec.size}px crop (short side {spec.resize_short})")
    for i in spec.inputs:
        print(f"  input {i.name!r}: {i.frames} frames every {i.stride_s * 1000:.1f} ms (spans {i.span_s:.2f} s)")
    print(f"  output {spec.output.name!r}: {spec.output.activation}; source: {spec.source.model_dump_json()}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream", description="Real-time action recognition for live cameras.")
    sub = p.add_subparsers(dest="command", required=True)

    infer = sub.add_parser("infer", help="recognise actions in a video file")
    infer.add_argument("video", help="video file")
    infer.add_argument("--model", required=True, help="exported .onnx model")
    infer.add_argument("--every", type=float, default=0, help="one clip every S seconds (default: the last clip)")
    infer.add_argument("--top-k", type=int, default=5)
    infer.add_argument("--json", action="store_true", help="JSON lines instead of text")
    infer.set_defaults(func=_infer)

    inspect = sub.add_parser("inspect", help="show what a model file holds (its actionstream.spec)")
    inspect.add_argument("model")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (SpecError, VideoError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
