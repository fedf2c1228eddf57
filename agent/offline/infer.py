"""``actionstream infer``: recognise actions in a video file, offline, through the same runtime as the agent.

Clip models: windows over the whole video (one every ``--every`` s, default the model's span; MMAction2's
multi-clip test, by time), a timeline of each window's top labels and the top-k averaged over the windows. Several
``--model`` (two-stream: RGB and flow) each take their own clips of the same windows, and their scores are fused as
the agent fuses a camera's (:class:`agent.fusion.Fusion`, ``--weights``). Flow models compute their flow as live
(``--flow-method`` another method than the spec's).

Person models: at each key time, the people (from a proposals file or a detector) and each one's actions, as
MMAction2's ``demo_spatiotemporal_det.py`` does. The clip for key time ``k`` is centred on it (its middle frame, the
key frame, is the one at or before ``k``), as MMAction2's AVA sampling centres clips on the annotated timestamp.
People get ids from the same IoU tracker the agent uses, so one person keeps an id across key times.

``--region``, ``--mask`` and ``--zones`` are a camera's ``region``, ``mask`` and ``zones``: the model (and the
detector) sees only the region, with the mask filled; person boxes are reported in the whole frame, each with the
zones their bottom centre is in; ``--annotate`` draws all three.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import yaml
from pydantic import SecretStr, ValidationError

from agent.config import CameraConfig, DetectorConfig, ModelConfig
from agent.errors import ConfigError, VideoError
from agent.frames import Converter
from agent.fusion import Fusion
from agent.geometry import FULL, Box, to_frame, to_region, zones_of
from agent.live.people import Detection, IouTracker, Person, PersonDetector
from agent.live.runtime import ModelRuntime, box_inputs, rows_per_clip
from agent.offline.annotate import Overlays, annotate
from agent.offline.proposals import Proposals, read_proposals
from agent.offline.video import frame_times, iter_clips
from agent.spec import ModelSpec

BATCH = 8  # windows (key times) per model run


def infer(args: argparse.Namespace) -> int:
    """Run ``args.model`` (one or several: fused) over ``args.video``; print the results, write ``--json`` /
    ``--annotate`` if asked."""
    paths = args.model if isinstance(args.model, list) else [args.model]
    args.model = paths[0] if len(paths) == 1 else paths  # (reports name the one model as before)
    try:
        configs = [
            ModelConfig(path=path, max_batch=BATCH, device=args.device, precision=args.precision) for path in paths
        ]
    except ValidationError as e:
        raise ConfigError(f"--precision: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    view = camera_view(args)  # before the model opens: a bad flag is the first thing said
    runtimes = [ModelRuntime(f"infer{i}" if len(paths) > 1 else "infer", c) for i, c in enumerate(configs)]
    if view.zones and any(r.spec.task != "person" for r in runtimes):
        raise ConfigError(f"--zones: zones need a person model (task: person); {args.model} scores whole clips")
    if len(runtimes) == 1 and runtimes[0].spec.task == "person":
        return _people(args, runtimes[0], view)
    if any(r.spec.task == "person" for r in runtimes):
        raise ConfigError("--model: person models are not fused; give one person model alone")
    return _clips(args, runtimes, view)


def camera_view(args: argparse.Namespace) -> CameraConfig:
    """``--region``, ``--mask`` and ``--zones`` checked as a camera's ``region``, ``mask`` and ``zones`` are (YAML or
    JSON text, or a file holding it; ``--region`` also as ``x1,y1,x2,y2``)."""
    given = {}
    for key in ("region", "mask", "zones"):
        text = getattr(args, key, None)
        if text is None:
            continue
        path = Path(text)
        if path.is_file():
            text = path.read_text(encoding="utf-8")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--{key}: not valid YAML or JSON ({str(e).splitlines()[0]})") from None
        if key == "region" and isinstance(value, str) and "," in value:
            try:
                value = [float(v) for v in value.split(",")]
            except ValueError:
                raise ConfigError(f"--region: expected x1,y1,x2,y2 (numbers), got {text!r}") from None
        given[key] = value
    try:
        return CameraConfig(name="video", url=SecretStr(str(args.video)), **given)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"][1:])
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--{err['loc'][0]}{f' ({where})' if where else ''}: {msg}") from None


def _converter(spec: ModelSpec, view: CameraConfig) -> Converter:
    """The camera view's conversion for ``spec`` (a flow model's frames are not cropped: its flow is, after)."""
    return Converter(spec, region=view.region, mask=view.mask, crop=spec.flow_input is None)


def _overlays(view: CameraConfig) -> Overlays:
    return Overlays(region=view.region, mask=view.mask, zones=view.zones)


def _fusion(args: argparse.Namespace, runtimes: list[ModelRuntime]) -> Fusion | None:
    weights = getattr(args, "weights", None)
    if len(runtimes) == 1:
        if weights:
            raise ConfigError("--weights: fusion needs several --model")
        return None
    weights = weights or [1.0] * len(runtimes)
    if len(weights) != len(runtimes):
        raise ConfigError(f"--weights: {len(runtimes)} models need {len(runtimes)} weights, got {len(weights)}")
    names = [str(Path(c.config.path).name) + (f"#{i}" if i else "") for i, c in enumerate(runtimes)]
    return Fusion(
        dict(zip(names, weights, strict=True)), {n: r.spec.labels for n, r in zip(names, runtimes, strict=True)}
    )


def _scores(
    args: argparse.Namespace,
    runtime: ModelRuntime,
    ends: list[float],
    times: np.ndarray,
    view: CameraConfig | None = None,
) -> tuple[list[float], list[np.ndarray]]:
    """One model's scores for the windows ending at ``ends`` (those a damaged file can give): one decoding pass, of
    ``view``'s region and mask (default: the whole frame)."""
    spec = runtime.spec
    names = [i.name for i in spec.inputs]
    got_ends, rows = [], []
    converter = None if view is None else _converter(spec, view)
    windows = iter_clips(args.video, spec, ends, times, converter, flow_method=getattr(args, "flow_method", None))
    while clips := list(itertools.islice(windows, BATCH)):
        scores = runtime.infer({n: np.stack([c.inputs[n] for c in clips]) for n in names})
        got_ends += [c.end for c in clips]
        rows += list(scores)
    return got_ends, rows


def _clips(args: argparse.Namespace, runtimes: list[ModelRuntime], view: CameraConfig) -> int:
    fusion = _fusion(args, runtimes)
    spec = runtimes[0].spec
    span = max(r.spec.span_s for r in runtimes)
    labels = fusion.labels if fusion is not None else spec.labels
    times = frame_times(args.video)
    every = args.every or span
    first, last = float(times.min()), float(times.max())
    ends = [float(e) for e in np.arange(first + span, last + 1e-6, every)] or [last]
    timeline: list[dict[str, Any]] = []
    all_scores = []
    t0 = time.perf_counter()
    each = [_scores(args, r, ends, times, view) for r in runtimes]
    count = min(len(rows) for _, rows in each)  # a damaged file: the windows every model got
    for i in range(count):
        end = each[0][0][i]
        if fusion is None:
            row = each[0][1][i]
        else:
            row = fusion({m: rows[i] for m, (_, rows) in zip(fusion.models, each, strict=True)})
        top = [(labels[k], float(row[k])) for k in np.argsort(-row)[: args.top_k]]
        timeline.append({"start": round(max(first, end - span), 3), "end": round(end, 3), "top": top})
        all_scores.append(row)
    if not all_scores:  # a damaged file whose readable part is shorter than one clip
        _refuse(args, f"{args.video}: the frames that decode do not fill one clip of this model ({span:.2f} s)")
    mean = np.mean(all_scores, axis=0)
    overall = [(labels[k], float(mean[k])) for k in np.argsort(-mean)[: args.top_k]]
    seconds = time.perf_counter() - t0
    for w in timeline:
        label, score = w["top"][0]
        print(f"{w['start']:8.2f} - {w['end']:8.2f} s  {label:<30} {score:.3f}")
    fused = (
        f", fused: {' + '.join(f'{w:g} x {m}' for m, w in zip(fusion.models, fusion.weights, strict=True))}"
        if fusion
        else ""
    )
    print(f"whole video ({len(timeline)} windows of {span:.2f} s{fused}, {seconds:.2f} s):")
    for rank, (label, score) in enumerate(overall, 1):
        print(f"  {rank}. {label:<30} {score:.4f}")
    if args.json:
        models = [str(r.config.path) for r in runtimes]
        arch = "+".join(r.spec.arch for r in runtimes)
        report: dict[str, Any] = {"video": str(args.video), "model": models[0] if fusion is None else models}
        report["arch"] = arch
        if fusion is not None:
            report["weights"] = [float(w) for w in fusion.weights]
        args.json.write_text(json.dumps(report | {"top": overall, "timeline": timeline}, indent=1))
        print(f"wrote {args.json}")
    if args.annotate:
        frames = annotate(
            Path(args.video), args.annotate, [(w["end"], w["top"]) for w in timeline], overlays=_overlays(view)
        )
        print(f"wrote {args.annotate} ({frames} frames)")
    return 0


def _refuse(args: argparse.Namespace, reason: str) -> NoReturn:
    """Stop with one clear error (exit 2); the ``--json`` report, if asked for, says the same."""
    if args.json:
        args.json.write_text(
            json.dumps({"video": str(args.video), "model": _named(args.model), "error": reason}, indent=1)
        )
    raise VideoError(reason)


def _named(model: Any) -> Any:
    return [str(m) for m in model] if isinstance(model, list) else str(model)


def key_times(args: argparse.Namespace, first: float, last: float) -> tuple[list[float], Proposals | None]:
    """Key times inside the video and, from a proposals file, their boxes."""
    if args.proposals:
        proposals = read_proposals(args.proposals, args.video_id)
        shifted = {t - args.time_offset: boxes for t, boxes in proposals.items()}
        inside = {t: b for t, b in shifted.items() if first - 1e-6 <= t <= last + 1e-6}
        if not inside:
            raise VideoError(
                f"{args.video}: no proposal time falls within the video ({first:.2f} - {last:.2f} s); "
                f"proposals span {min(shifted):.2f} - {max(shifted):.2f} s (see --time-offset)"
            )
        return sorted(inside), inside
    every = args.every or 1.0
    return [float(t) for t in np.arange(first, last + 1e-6, every)], None


def _people(args: argparse.Namespace, runtime: ModelRuntime, view: CameraConfig) -> int:
    spec = runtime.spec
    if not args.proposals and not args.detector:
        raise VideoError(f"{args.model}: a person model needs people: give --proposals FILE or --detector DET.onnx")
    detector = None
    if args.detector and not args.proposals:
        detector = PersonDetector(DetectorConfig(path=args.detector), runtime.device)
    times = frame_times(args.video)
    first, last = float(times.min()), float(times.max())
    keys, proposals = key_times(args, first, last)
    finest = min(spec.inputs, key=lambda i: i.stride_s)
    lead = (finest.frames - 1 - finest.frames // 2) * finest.stride_s  # key frame → newest frame of the clip
    tracker = IouTracker()
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    ends = [min(k + lead, last) for k in keys]
    windows = iter_clips(args.video, spec, ends, times, _converter(spec, view))  # one decoding pass
    for i in range(0, len(keys), BATCH):
        clips = list(itertools.islice(windows, BATCH))
        if not clips:  # a damaged file's decodable part ended early (iter_clips said so)
            break
        chunk = keys[i : i + len(clips)]
        found: list[list[Detection]] = []
        for k, clip in zip(chunk, clips, strict=True):
            if proposals is not None:  # boxes of the whole frame → of the region the model sees (those inside it)
                found.append(_in_region(proposals[k], clip.region))
            else:
                assert detector is not None
                frames = clip.inputs[finest.name]
                found.append(detector.detect(frames[len(frames) // 2]))
        people = [tracker.update(f, k)[0] for k, f in zip(chunk, found, strict=True)]
        scores = _score(runtime, clips, people)
        for k, clip, persons, rows in zip(chunk, clips, people, scores, strict=True):
            described = [_person(spec, p, r, args.top_k, clip.region, view) for p, r in zip(persons, rows, strict=True)]
            results.append({"time": round(k, 3), "people": described})
    seconds = time.perf_counter() - t0
    for entry in results:
        for p in entry["people"]:
            tops = ", ".join(f"{label} {score:.2f}" for label, score in p["top"][:3])
            where = f"  in {', '.join(p['zones']) or 'no zone'}" if "zones" in p else ""
            box = ", ".join(f"{v:.2f}" for v in p["box"])
            print(f"{entry['time']:8.2f} s  person {p['id']:<3} [{box}]{where}  {tops}")
    count = sum(len(e["people"]) for e in results)
    print(f"{len(results)} key times, {count} person boxes, {seconds:.2f} s")
    if args.json:
        report = {"video": str(args.video), "model": str(args.model), "arch": spec.arch, "key_times": results}
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.annotate:
        boxes = [(e["time"], [(p["box"], p["top"]) for p in e["people"]]) for e in results]
        written = annotate(Path(args.video), args.annotate, [], people=boxes, overlays=_overlays(view))
        print(f"wrote {args.annotate} ({written} frames)")
    return 0


def _score(runtime: ModelRuntime, clips, people) -> list[np.ndarray]:
    """One model run for a chunk of clips: each clip's rows, one per person (clips without people skip it)."""
    spec = runtime.spec
    counts = [len(p) for p in people]
    if not sum(counts):
        return [np.zeros((0, len(spec.labels)), np.float32) for _ in clips]
    inputs = {i.name: np.stack([c.inputs[i.name] for c in clips]) for i in spec.inputs}
    inputs |= box_inputs([np.asarray([p.box for p in persons], dtype=np.float32).reshape(-1, 4) for persons in people])
    return rows_per_clip(runtime.infer(inputs), counts)


def _in_region(found: list[Detection], region: Box) -> list[Detection]:
    if region == FULL:
        return found
    inside = [(to_region(box, region), score) for box, score in found]
    return [(box, score) for box, score in inside if box is not None]


def _person(spec: ModelSpec, person: Person, row: np.ndarray, top_k: int, region: Box, view: CameraConfig) -> dict:
    """A person at a key time: id, box in the whole frame, the zones they stand in (with ``--zones``), top labels."""
    top = [(spec.labels[k], round(float(row[k]), 4)) for k in np.argsort(-row)[:top_k]]
    box = to_frame(person.box, region)
    zones = {"zones": zones_of(box, view.zones)} if view.zones else {}
    return {"id": person.id, "box": [round(v, 4) for v in box], **zones, "top": top}
