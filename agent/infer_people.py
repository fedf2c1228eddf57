"""``actionstream infer`` for person models: at each key time, the people (from a proposals file or a detector)
and each one's actions, as MMAction2's ``demo_spatiotemporal_det.py`` does offline.

The clip for key time ``k`` is centred on it (its middle frame, the key frame, is the one at or before ``k``), as
MMAction2's AVA sampling centres clips on the annotated timestamp. People get ids from the same IoU tracker the
agent uses, so one person keeps an id across key times.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from agent.config import DetectorConfig
from agent.people import IouTracker, PersonDetector, box_inputs, rows_per_clip
from agent.proposals import read_proposals
from agent.spec import ModelSpec
from agent.video import VideoError, frame_times, iter_clips

BATCH = 8  # key times per model run


def key_times(args: argparse.Namespace, first: float, last: float) -> tuple[list[float], dict | None]:
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


def infer_people(args: argparse.Namespace, session, spec: ModelSpec) -> int:
    if not args.proposals and not args.detector:
        raise VideoError(f"{args.model}: a person model needs people: give --proposals FILE or --detector DET.onnx")
    detector = PersonDetector(DetectorConfig(path=args.detector)) if args.detector and not args.proposals else None
    times = frame_times(args.video)
    first, last = float(times.min()), float(times.max())
    keys, proposals = key_times(args, first, last)
    finest = min(spec.inputs, key=lambda i: i.stride_s)
    lead = (finest.frames - 1 - finest.frames // 2) * finest.stride_s  # key frame → newest frame of the clip
    tracker = IouTracker()
    results = []
    t0 = time.perf_counter()
    windows = iter_clips(args.video, spec, [min(k + lead, last) for k in keys], times)  # one decoding pass
    for i in range(0, len(keys), BATCH):
        clips = list(itertools.islice(windows, BATCH))
        if not clips:  # a damaged file's decodable part ended early (iter_clips said so)
            break
        chunk = keys[i : i + len(clips)]
        found = []
        for k, clip in zip(chunk, clips, strict=True):
            frames = clip.inputs[finest.name]
            found.append(proposals[k] if proposals is not None else detector.detect(frames[len(frames) // 2]))
        people = [tracker.update(f, k)[0] for k, f in zip(chunk, found, strict=True)]
        scores = _score(session, spec, clips, people)
        for k, persons, rows in zip(chunk, people, scores, strict=True):
            described = [_person(spec, p, r, args.top_k) for p, r in zip(persons, rows, strict=True)]
            results.append({"time": round(k, 3), "people": described})
    seconds = time.perf_counter() - t0
    for entry in results:
        for p in entry["people"]:
            tops = ", ".join(f"{label} {score:.2f}" for label, score in p["top"][:3])
            print(f"{entry['time']:8.2f} s  person {p['id']:<3} [{', '.join(f'{v:.2f}' for v in p['box'])}]  {tops}")
    count = sum(len(e["people"]) for e in results)
    print(f"{len(results)} key times, {count} person boxes, {seconds:.2f} s")
    if args.json:
        report = {"video": str(args.video), "model": str(args.model), "arch": spec.arch, "key_times": results}
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.annotate:
        from agent.annotate import annotate

        people = [(e["time"], [(p["box"], p["top"]) for p in e["people"]]) for e in results]
        frames = annotate(Path(args.video), args.annotate, [], people=people)
        print(f"wrote {args.annotate} ({frames} frames)")
    return 0


def _score(session, spec: ModelSpec, clips, people) -> list[np.ndarray]:
    """One model run for a chunk of clips: each clip's rows, one per person (clips without people skip it)."""
    counts = [len(p) for p in people]
    if not sum(counts):
        return [np.zeros((0, len(spec.labels)), np.float32) for _ in clips]
    inputs = {i.name: np.stack([c.inputs[i.name] for c in clips]) for i in spec.inputs}
    inputs |= box_inputs([np.float32([p.box for p in persons]) for persons in people])
    return rows_per_clip(session.run([spec.output.name], inputs)[0], counts)


def _person(spec: ModelSpec, person, row: np.ndarray, top_k: int) -> dict:
    top = [(spec.labels[k], round(float(row[k]), 4)) for k in np.argsort(-row)[:top_k]]
    return {"id": person.id, "box": [round(v, 4) for v in person.box], "top": top}
