"""``actionstream`` command line: ``run`` (the agent), ``check`` (a config), ``infer`` (one video offline) and
``inspect`` (what a model file holds)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np

from agent.config import AgentConfig, ConfigError, load_config, parse_config
from agent.proposals import ProposalsError
from agent.redact import redact_url
from agent.shard import ShardError, assignment, resolve_shard, select
from agent.spec import SpecError, open_session, read_spec
from agent.video import VideoError, frame_times, iter_clips

BATCH = 8  # windows per model run in ``infer``


def _quick_config(args: argparse.Namespace) -> AgentConfig:
    """``--camera NAME=URL ... --model PATH`` without a file."""
    if not args.camera or not args.model:
        raise ConfigError("run: give -c CONFIG, or at least one --camera NAME=URL and --model PATH")
    cameras = []
    for item in args.camera:
        name, sep, url = item.partition("=")
        if not sep:
            raise ConfigError(f"--camera: expected NAME=URL, got {item.split('@')[-1]!r}")
        cameras.append({"name": name, "url": url, "every_s": args.every})
    data: dict = {"cameras": cameras, "models": {"model": {"path": args.model}}}
    if args.mqtt:
        data["mqtt"] = {"url": args.mqtt}
    if args.metrics_port is not None:
        data["metrics"] = {"port": args.metrics_port}
    if args.threshold is not None:
        data["events"] = {"threshold": args.threshold, "end_threshold": args.threshold * 0.6}
    return parse_config(data, "command line")


def _shard(config: AgentConfig, flag: str | None) -> AgentConfig:
    """Keep this replica's cameras: ``--shard i/N``, else ``ACTIONSTREAM_SHARD`` / ``ACTIONSTREAM_SHARDS`` (+ the
    StatefulSet ordinal); nothing set: all of them. See agent/shard.py."""
    try:
        shard = resolve_shard(flag)
    except ShardError as e:
        raise ConfigError(str(e)) from None
    if shard is None:
        return config
    index, count = shard
    mine = select(config.cameras, index, count)
    log = logging.getLogger("actionstream")
    names = ", ".join(c.name for c in mine) or "none"
    log.info("shard %d/%d: %d of %d camera(s): %s", index, count, len(mine), len(config.cameras), names)
    if not mine:
        log.warning("shard %d/%d: no camera hashes to this shard; idling (metrics and MQTT stay up)", index, count)
    return config.model_copy(update={"cameras": mine})


def _run(args: argparse.Namespace) -> int:
    from agent.app import Agent

    config = load_config(args.config) if args.config else _quick_config(args)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    config = _shard(config, args.shard)
    agent = Agent(config)
    agent.load()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await agent.run(stop)

    asyncio.run(main())
    return 0


def _check(args: argparse.Namespace) -> int:
    from agent.people import open_detector
    from agent.runtime import ModelRuntime

    config = load_config(args.config)
    print(f"{args.config}: {len(config.cameras)} camera(s), {len(config.models)} model(s), OK")
    for name, model in config.models.items():
        runtime = ModelRuntime(name, model)
        spec = runtime.spec
        inputs = ", ".join(f"{i.name} {i.frames}x{i.stride_s * 1000:.0f}ms" for i in spec.inputs)
        print(f"  model {name}: {model.path} — {spec.arch}, {len(spec.labels)} labels, {inputs}, on {runtime.device}")
        detector = open_detector(name, model, spec)
        if detector is not None:
            print(
                f"    person detector: {model.detector.path} ({detector.layout} outputs, class {detector.person_class})"
            )
    for camera in config.cameras:
        url = redact_url(camera.url.get_secret_value())
        print(f"  camera {camera.name}: {url} → model {config.model_of(camera)}, every {camera.every_s:g} s")
    print(f"  events: {'MQTT ' + redact_url(config.mqtt.url) if config.mqtt else 'stdout (JSON lines)'}")
    if args.shards is not None:
        if args.shards < 1:
            raise ConfigError(f"--shards: expected a positive number of shards, got {args.shards}")
        for index, names in assignment([c.name for c in config.cameras], args.shards).items():
            print(f"  shard {index}/{args.shards}: {', '.join(names) or '(no cameras)'}")
    return 0


def _infer(args: argparse.Namespace) -> int:
    """Windows over the whole video (MMAction2's multi-clip test, by time): a timeline and the averaged top-k."""
    session = open_session(args.model)
    spec = read_spec(session, str(args.model))
    if spec.task == "person":
        from agent.infer_people import infer_people

        return infer_people(args, session, spec)
    times = frame_times(args.video)
    every = args.every or spec.span_s
    first, last = float(times.min()), float(times.max())
    ends = [float(e) for e in np.arange(first + spec.span_s, last + 1e-6, every)] or [last]
    names = [i.name for i in spec.inputs]
    timeline, all_scores = [], []
    t0 = time.perf_counter()
    windows = iter_clips(args.video, spec, ends, times)  # one decoding pass for all windows
    while clips := list(itertools.islice(windows, BATCH)):
        batch = {n: np.stack([c.inputs[n] for c in clips]) for n in names}
        scores = session.run([spec.output.name], batch)[0]
        for clip, row in zip(clips, scores, strict=True):
            top = [(spec.labels[k], float(row[k])) for k in np.argsort(-row)[: args.top_k]]
            timeline.append(
                {"start": round(max(first, clip.end - spec.span_s), 3), "end": round(clip.end, 3), "top": top}
            )
            all_scores.append(row)
    mean = np.mean(all_scores, axis=0)
    overall = [(spec.labels[k], float(mean[k])) for k in np.argsort(-mean)[: args.top_k]]
    seconds = time.perf_counter() - t0
    for w in timeline:
        label, score = w["top"][0]
        print(f"{w['start']:8.2f} - {w['end']:8.2f} s  {label:<30} {score:.3f}")
    print(f"whole video ({len(timeline)} windows of {spec.span_s:.2f} s, {seconds:.2f} s):")
    for rank, (label, score) in enumerate(overall, 1):
        print(f"  {rank}. {label:<30} {score:.4f}")
    if args.json:
        report = {"video": str(args.video), "model": str(args.model), "arch": spec.arch, "top": overall}
        args.json.write_text(json.dumps(report | {"timeline": timeline}, indent=1))
        print(f"wrote {args.json}")
    if args.annotate:
        from agent.annotate import annotate

        frames = annotate(Path(args.video), args.annotate, [(w["end"], w["top"]) for w in timeline])
        print(f"wrote {args.annotate} ({frames} frames)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    spec = read_spec(open_session(args.model), str(args.model))
    if args.json:
        print(spec.to_json())
        return 0
    frame = f"{spec.size}px crop" if spec.crop == "centre" else "whole frame"
    print(f"{args.model}: {spec.arch}, {len(spec.labels)} labels, {frame} (short side {spec.resize_short})")
    for i in spec.inputs:
        print(f"  input {i.name!r}: {i.frames} frames every {i.stride_s * 1000:.1f} ms (spans {i.span_s:.2f} s)")
    print(f"  output {spec.output.name!r}: {spec.output.activation}; source: {spec.source.model_dump_json()}")
    if spec.task == "person":
        print("  person model: one row of independent scores per box (inputs boxes, box_batch)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream", description="Real-time action recognition for live cameras.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent: cameras → models → events on MQTT / stdout")
    run.add_argument("-c", "--config", type=Path, help="YAML config (see config.example.yaml)")
    run.add_argument("--camera", action="append", metavar="NAME=URL", help="quick form: a camera (repeatable)")
    run.add_argument("--model", type=Path, help="quick form: the .onnx model for every camera")
    run.add_argument("--mqtt", help="quick form: broker URL (default: events to stdout)")
    run.add_argument("--metrics-port", type=int, help="quick form: /metrics port (default 9108)")
    run.add_argument("--threshold", type=float, help="quick form: start threshold (default 0.5)")
    run.add_argument("--every", type=float, default=1.0, help="quick form: seconds between clips (default 1)")
    run.add_argument(
        "--shard",
        metavar="I/N",
        help="run only the cameras whose stable name hash modulo N is I (0-based); default: ACTIONSTREAM_SHARD, "
        "or ACTIONSTREAM_SHARDS=N with the StatefulSet pod ordinal, else every camera",
    )
    run.set_defaults(func=_run)

    check = sub.add_parser("check", help="validate a config and open its models")
    check.add_argument("-c", "--config", type=Path, required=True)
    check.add_argument("--shards", type=int, metavar="N", help="also print which of N shards runs each camera")
    check.set_defaults(func=_check)

    infer = sub.add_parser("infer", help="recognise actions in a video file")
    infer.add_argument("video", help="video file")
    infer.add_argument("--model", required=True, help="exported .onnx model")
    infer.add_argument("--every", type=float, default=0, help="a window every S seconds (default: the model's span)")
    infer.add_argument("--top-k", type=int, default=5)
    infer.add_argument("--json", type=Path, metavar="OUT.json", help="also write the timeline and top-k as JSON")
    infer.add_argument("--annotate", type=Path, metavar="OUT.mp4", help="write the video with top labels drawn")
    people = infer.add_argument_group("person models (task: person)")
    people.add_argument("--proposals", type=Path, help="person boxes per key time: .json, AVA .csv or MMAction2 .pkl")
    people.add_argument("--video-id", help="the video's id in a proposals file that holds several")
    people.add_argument("--time-offset", type=float, default=0.0, help="subtracted from proposal times (AVA: 900)")
    people.add_argument("--detector", type=Path, help="person detector .onnx, run on each key frame (every S s)")
    infer.set_defaults(func=_infer)

    for name, (_, text) in DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False)
    inspect = sub.add_parser("inspect", help="show what a model file holds (its actionstream.spec)")
    inspect.add_argument("model")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_inspect)
    return p


DELEGATED = {  # subcommands with their own parsers; train's need the `train` extra (torch)
    "demo": ("agent.demo", "play the scripted stream through the agent with the bundled model; print a scorecard"),
    "train": ("train.cli", "train a model from the zoo (needs the `train` extra)"),
    "evaluate": ("train.cli", "evaluate a checkpoint on a list file (needs the `train` extra)"),
    "synth": ("train.cli", "write the synthetic motion dataset / scripted stream"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DELEGATED:
        module = __import__(DELEGATED[argv[0]][0], fromlist=["main"])
        return module.main(argv[1:] if argv[0] == "demo" else argv)
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, SpecError, VideoError, ProposalsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the metrics port is taken, an output file cannot be written
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
