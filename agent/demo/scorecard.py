"""The demo's scorecard: detected action segments against the scripted stream's schedule.

Segments are matched one to one, same label, by temporal IoU (highest first, at least 0.5); precision, recall, F1
and the mean start delay follow from the matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    label: str
    start: float
    end: float


def tiou(a: Segment, b: Segment) -> float:
    inter = max(0.0, min(a.end, b.end) - max(a.start, b.start))
    union = max(a.end, b.end) - min(a.start, b.start)
    return inter / union if union > 0 else 0.0


def score(truth: list[Segment], found: list[Segment], *, threshold: float = 0.5) -> dict:
    """Greedy one-to-one matching of same-label segments by temporal IoU (highest first)."""
    pairs = sorted(
        ((tiou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found) if t.label == f.label),
        reverse=True,
    )
    used_t, used_f, delays = set(), set(), []
    for iou, i, j in pairs:
        if iou < threshold or i in used_t or j in used_f:
            continue
        used_t.add(i)
        used_f.add(j)
        delays.append(found[j].start - truth[i].start)
    tp = len(used_t)
    precision = tp / len(found) if found else 0.0
    recall = tp / len(truth) if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "segments": len(truth),
        "detected": len(found),
        "matched": tp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_start_delay_s": float(np.mean(delays)) if delays else None,
    }


def segments_from_events(events: Iterable[dict], origin: float, shift_s: float) -> list[Segment]:
    """start→end pairs per label, in stream seconds: wall-clock minus ``origin``, minus ``shift_s``.

    ``shift_s`` (half the model's span) moves each time from the end of the clip that decided it to the clip's
    centre, which is when what the clip saw happened on average.
    """
    open_: dict[str, float] = {}
    out = []
    for e in events:
        t = (e["start_time"] if e["type"] == "start" else (e["end_time"] or 0.0)) - origin - shift_s
        if e["type"] == "start":
            open_[e["label"]] = t
        elif e["type"] == "end" and e["label"] in open_:
            out.append(Segment(e["label"], open_.pop(e["label"]), t))
    return out


def print_scorecard(card: dict) -> None:
    delay = card["mean_start_delay_s"]
    print("\nscorecard (temporal IoU >= 0.5)")
    print(f"  actions {card['segments']}, detected {card['detected']}, matched {card['matched']}")
    print(f"  precision {card['precision']:.3f}  recall {card['recall']:.3f}  F1 {card['f1']:.3f}")
    print(f"  mean start delay {'n/a' if delay is None else f'{delay:+.2f} s'}")
    print(f"  capture→publish latency p50 {card['latency_p50_ms']:.0f} ms, p99 {card['latency_p99_ms']:.0f} ms")
