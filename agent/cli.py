"""``actionstream`` command line: ``run`` (the agent), ``check`` (a config), ``infer`` (one video offline),
``inspect`` (what a model file holds), ``demo`` and ``synth`` (the scripted stream and the synthetic motion set).

More commands come from the ``actionstream.commands`` entry-point group: a callable that takes the command line
(command name first) and returns the exit status, its docstring's first line as help. The trainer's ``train`` and
``evaluate`` arrive this way (they need torch: the ``train`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import get_args

from agent import __version__
from agent.config import AgentConfig, CameraConfig, ModelConfig, load_config, parse_config, stream_key
from agent.errors import ActionstreamError, ConfigError, InferenceError
from agent.flow import cv2_module
from agent.fusion import Fusion
from agent.shard import assignment, resolve_shard, shard_of
from agent.spec import FLOW_METHODS, load_spec
from agent.urls import redact_url

COMMANDS_GROUP = "actionstream.commands"
DEVICES = get_args(ModelConfig.model_fields["device"].annotation)  # models.NAME.device's values
PRECISIONS = get_args(ModelConfig.model_fields["precision"].annotation)
CONVERTS = ("cpu", "graph")  # cameras[].convert's values


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


def _shard(config: AgentConfig, flag: str | None) -> tuple[AgentConfig, tuple[int, int] | None]:
    """Keep this replica's cameras: ``--shard i/N``, else ``ACTIONSTREAM_SHARD`` / ``ACTIONSTREAM_SHARDS`` (+ the
    StatefulSet ordinal); nothing set: all of them. See agent/shard.py. Entries that share a stream go where the
    first of them goes (one decode per stream). Also returns the shard, ``(i, N)``, or None."""
    shard = resolve_shard(flag)
    if shard is None:
        return config, None
    index, count = shard
    first = {c.name: group[0].name for group in config.streams().values() for c in group}
    mine = [c for c in config.cameras if shard_of(first[c.name], count) == index]  # a stream's entries together
    log = logging.getLogger("actionstream")
    names = ", ".join(c.name for c in mine) or "none"
    log.info("shard %d/%d: %d of %d camera(s): %s", index, count, len(mine), len(config.cameras), names)
    if not mine:
        log.warning("shard %d/%d: no camera hashes to this shard; idling (metrics and MQTT stay up)", index, count)
    return config.model_copy(update={"cameras": mine}), shard


def _run(args: argparse.Namespace) -> int:
    from agent.live.app import Agent  # here: the other commands start faster without the runtime

    config = load_config(args.config) if args.config else _quick_config(args)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    config, shard = _shard(config, args.shard)
    agent = Agent(config, shard=shard)  # replicas get an MQTT availability topic and client id each
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
    """Everything ``run`` would refuse, refused here: the config, each model (opened and run at the batch sizes
    ``run`` warms it up with), its person detector; then a summary."""
    from agent.live.app import check_zones, conversion_of, warm_up_sizes
    from agent.live.people import open_detector
    from agent.live.runtime import ModelRuntime

    config = load_config(args.config)
    if args.shards is not None and args.shards < 1:
        raise ConfigError(f"--shards: expected a positive number of shards, got {args.shards}")
    lines, specs, runtimes = [], {}, {}
    for name, model in config.models.items():
        runtime = runtimes[name] = ModelRuntime(name, model)
        runtime.warm_up(warm_up_sizes(config, name))
        spec = specs[name] = runtime.spec
        inputs = ", ".join(f"{i.name} {i.frames}x{i.stride_s * 1000:.0f}ms" for i in spec.inputs)
        flow = spec.flow_input.flow if spec.flow_input is not None else None
        if flow is not None:
            cv2_module()  # as run: flow models need OpenCV's contrib build
            method = model.flow_method or flow.method
            inputs += f" of {method} flow{'' if method == flow.method else f' (trained on {flow.method})'}"
        lines.append(
            f"  model {name}: {model.path} — {spec.arch}, {len(spec.labels)} labels, {inputs}, on {runtime.device}"
        )
        choice, workers = runtime.choice, f"{runtime.workers} worker{'s' if runtime.workers > 1 else ''}"
        lines.append(f"    engine: {choice.engine} ({choice.device}, {model.precision}, {workers}) — {choice.why}")
        detector = open_detector(name, model, spec, runtime.device)
        if detector is not None:
            path, layout, person = detector.config.path, detector.layout, detector.person_class
            lines.append(f"    person detector: {path} ({layout} outputs, class {person})")
    check_zones(config, specs)
    streams = config.streams()
    for camera in config.cameras:
        url = redact_url(camera.stream_url())
        if camera.fusion is not None:
            if person := [m for m in camera.fusion.models if specs[m].task == "person"]:
                raise ConfigError(f"camera {camera.name}: fusion: {', '.join(person)} is a person model")
            try:
                Fusion(camera.fusion.models, {m: specs[m].labels for m in camera.fusion.models})
            except ConfigError as e:
                raise ConfigError(f"camera {camera.name}: {e}") from None
            fused = ", ".join(f"{m} × {w:g}" for m, w in camera.fusion.models.items())
            lines.append(f"  camera {camera.name}: {url} → models {fused} (fused), every {camera.every_s:g} s")
        else:
            lines.append(f"  camera {camera.name}: {url} → model {config.model_of(camera)}, every {camera.every_s:g} s")
        lines += [f"    {line}" for line in _camera_lines(camera, streams)]
        conversion = conversion_of(camera, config, runtimes[config.model_of(camera)])
        lines.append(f"    convert: {conversion.describe()} ({conversion.why})")
        record = camera.record_config()
        if record is not None:
            lines.append(f"    evidence from {redact_url(record.stream_url())}")
    lines.append(f"  events: {'MQTT ' + redact_url(config.mqtt.url) if config.mqtt else 'stdout (JSON lines)'}")
    if config.evidence.enabled:
        ev, st = config.evidence, config.storage
        kept = ", ".join(k for k in ("snapshots", "clips") if getattr(ev, k)) or "rows only"
        lines.append(
            f"  evidence: {kept} (clips {ev.pre_s:g} s before to {ev.post_s:g} s after) in {st.path}, "
            f"kept {st.keep_days:g} days, at most {st.max_gb:g} GB"
        )
    for i, hook in enumerate(config.webhooks):
        lines.append(f"  webhook {config.webhook_name(i)}: {redact_url(hook.url.get_secret_value())}")
    if args.shards is not None:
        by_stream = {group[0].name: [c.name for c in group] for group in streams.values()}
        for index, firsts in assignment(list(by_stream), args.shards).items():
            names = [name for first in firsts for name in by_stream[first]]
            lines.append(f"  shard {index}/{args.shards}: {', '.join(names) or '(no cameras)'}")
    print(f"{args.config}: {len(config.cameras)} camera(s), {len(config.models)} model(s), OK")
    print("\n".join(lines))
    return 0


def _camera_lines(camera: CameraConfig, streams: dict[str, list[CameraConfig]]) -> list[str]:
    """What ``check`` says of a camera entry beyond its URL and model: its region, mask and zones, and the entries
    it shares its stream with."""
    lines = []
    if camera.region is not None:
        lines.append(f"region [{', '.join(f'{v:g}' for v in camera.region)}] of the frame")
    if camera.mask:
        lines.append(f"mask: {len(camera.mask)} polygon{'s' if len(camera.mask) > 1 else ''}, model's mean colour")
    if camera.zones:
        lines.append(f"zones: {', '.join(camera.zones)}")
    group = streams[stream_key(camera)]
    if len(group) > 1:
        others = ", ".join(c.name for c in group if c is not camera)
        lines.append(f"stream shared with {others} (one connection, decoded once)")
    return lines


def _infer(args: argparse.Namespace) -> int:
    from agent.offline.infer import infer

    return infer(args)


def _demo(args: argparse.Namespace) -> int:
    from agent.demo.run import run_demo

    run_demo(args.model, args.mqtt, args.device, args.precision, args.convert)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from agent.demo.synthetic import write_dataset, write_scripted_stream

    paths = write_dataset(
        args.out,
        clips_per_class=args.clips_per_class,
        val_per_class=args.val_per_class,
        seconds=args.seconds,
        fps=args.fps,
        width=args.width,
        height=args.height,
        seed=args.seed,
        classes=tuple(args.classes) if args.classes else None,
        jobs=args.jobs,
    )
    print(f"wrote {paths.train}, {paths.val}, {paths.labels}")
    if args.stream_minutes > 0:
        schedule = write_scripted_stream(
            args.out / "stream.mp4",
            args.out / "stream.json",
            minutes=args.stream_minutes,
            fps=args.fps,
            width=args.width,
            height=args.height,
            seed=args.seed,
        )
        print(f"wrote {args.out / 'stream.mp4'} and stream.json ({len(schedule)} actions)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    spec = load_spec(args.model)
    if args.json:
        print(spec.to_json())
        return 0
    frame = f"{spec.size}px crop" if spec.crop == "centre" else "whole frame"
    resize = f"short side {spec.resize_short}"
    if spec.resize_to:
        resize = f"resized to {spec.resize_to[0]}x{spec.resize_to[1]}"
    print(f"{args.model}: {spec.arch}, {len(spec.labels)} labels, {frame} ({resize})")
    for i in spec.inputs:
        if i.flow is not None:
            f = i.flow
            print(
                f"  input {i.name!r}: optical flow ({f.method}, ±{f.bound:g} px), {i.frames} instants every "
                f"{i.stride_s * 1000:.1f} ms, {f.pairs} field{'s' if f.pairs > 1 else ''} each of frames "
                f"{f.step_s * 1000:.1f} ms apart (spans {i.span_s:.2f} s)"
            )
            continue
        print(f"  input {i.name!r}: {i.frames} frames every {i.stride_s * 1000:.1f} ms (spans {i.span_s:.2f} s)")
    print(f"  output {spec.output.name!r}: {spec.output.activation}; source: {spec.source.model_dump_json()}")
    if spec.task == "person":
        print("  person model: one row of independent scores per box (inputs boxes, box_batch)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream", description="Real-time action recognition for live cameras.")
    p.add_argument("--version", action="version", version=f"actionstream {__version__}")
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
    infer.add_argument(
        "--model",
        required=True,
        action="append",
        help="exported .onnx model; several (an RGB and a flow model, say): their scores fused",
    )
    infer.add_argument(
        "--weights", type=float, nargs="+", help="fusion: one weight per --model, in order (default: all 1)"
    )
    infer.add_argument(
        "--flow-method",
        choices=FLOW_METHODS,
        help="flow models: compute the flow this way instead of the spec's (e.g. dis: faster)",
    )
    infer.add_argument("--every", type=float, default=0, help="a window every S seconds (default: the model's span)")
    infer.add_argument("--top-k", type=int, default=5)
    infer.add_argument("--json", type=Path, metavar="OUT.json", help="also write the timeline and top-k as JSON")
    infer.add_argument(
        "--annotate",
        type=Path,
        metavar="OUT.mp4",
        help="write the video with top labels (and region, mask, zones) drawn",
    )
    infer.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="as models.NAME.device (default auto: CUDA, else OpenVINO when installed, else ONNX Runtime's CPU)",
    )
    infer.add_argument("--precision", choices=PRECISIONS, default="fp32", help="as models.NAME.precision")
    view = infer.add_argument_group("what the model sees, as a camera's keys (YAML or JSON, or a file holding it)")
    view.add_argument("--region", metavar="X1,Y1,X2,Y2", help="as cameras[].region: only this part of the frame")
    view.add_argument("--mask", metavar="POLYGONS", help="as cameras[].mask, e.g. '[[0,0],[0.3,0],[0.3,0.1]]'")
    view.add_argument(
        "--zones",
        metavar="ZONES",
        help="as cameras[].zones (person models), e.g. '{door: [[0,0.5],[0.4,0.5],[0.4,1]]}'",
    )
    people = infer.add_argument_group("person models (task: person)")
    people.add_argument("--proposals", type=Path, help="person boxes per key time: .json, AVA .csv or MMAction2 .pkl")
    people.add_argument("--video-id", help="the video's id in a proposals file that holds several")
    people.add_argument("--time-offset", type=float, default=0.0, help="subtracted from proposal times (AVA: 900)")
    people.add_argument("--detector", type=Path, help="person detector .onnx, run on each key frame (every S s)")
    infer.set_defaults(func=_infer)

    inspect = sub.add_parser("inspect", help="show what a model file holds (its actionstream.spec)")
    inspect.add_argument("model")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_inspect)

    demo = sub.add_parser("demo", help="play the scripted stream through the agent with the bundled model; scorecard")
    demo.add_argument("--model", type=Path, help="default: the bundled models/motion_demo.onnx")
    demo.add_argument(
        "--mqtt", help='broker URL (default: mqtt://127.0.0.1:1883 when reachable, else terminal only; "" = terminal)'
    )
    demo.add_argument("--device", choices=DEVICES, default="auto", help="as models.NAME.device (default auto)")
    demo.add_argument("--precision", choices=PRECISIONS, default="fp32", help="as models.NAME.precision")
    demo.add_argument("--convert", choices=CONVERTS, help="as cameras[].convert (default: its default)")
    demo.set_defaults(func=_demo)

    synth = sub.add_parser("synth", help="render the synthetic motion dataset (and a scripted stream)")
    synth.add_argument("out", type=Path, help="output folder")
    synth.add_argument("--clips-per-class", type=int, default=80, help="training clips per class (default 80)")
    synth.add_argument("--val-per-class", type=int, default=20, help="validation clips per class (default 20)")
    synth.add_argument("--seconds", type=float, default=3.0, help="clip length (default 3)")
    synth.add_argument("--fps", type=int, default=30, help="frame rate (default 30)")
    synth.add_argument("--width", type=int, default=160, help="default 160")
    synth.add_argument("--height", type=int, default=120, help="default 120")
    synth.add_argument("--seed", type=int, default=0, help="default 0")
    synth.add_argument("--classes", nargs="+", help="subset of the motion classes (default: all)")
    synth.add_argument("--jobs", type=int, default=1, help="render processes (default 1; same output either way)")
    synth.add_argument(
        "--stream-minutes", type=float, default=0.0, help="also write OUT/stream.mp4 + stream.json, this long"
    )
    synth.set_defaults(func=_synth)

    for name, entry in _extensions().items():
        sub.add_parser(name, help=_summary(entry), add_help=False)
    return p


def _extensions() -> dict[str, EntryPoint]:
    """Commands of other installed parts (the ``actionstream.commands`` entry points), by name."""
    return {entry.name: entry for entry in entry_points(group=COMMANDS_GROUP)}


def _load(entry: EntryPoint) -> Callable[[list[str]], int]:
    try:
        return entry.load()
    except ImportError as e:
        raise ConfigError(
            f"actionstream {entry.name}: not available in this install ({e}); it needs the `train` extra: "
            "pip install 'actionstream[train]'"
        ) from None


def _summary(entry: EntryPoint) -> str:
    try:
        command = _load(entry)
    except ConfigError:
        return "(not available: needs the `train` extra)"
    return (command.__doc__ or "").strip().splitlines()[0] if command.__doc__ else entry.name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        extension = _extensions().get(argv[0]) if argv else None
        if extension is not None:
            return _load(extension)(argv)
        args = parser().parse_args(argv)
        return args.func(args)
    except InferenceError as e:  # the agent was running: a supervisor should restart it
        print(f"error: {e}", file=sys.stderr)
        return 3
    except ActionstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. the metrics port is taken, an output file cannot be written
        print(f"error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
