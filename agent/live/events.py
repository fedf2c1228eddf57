"""Online temporal action detection: per camera and label, scores → start / update / end events.

:class:`EventTracker` runs one small state machine per tracked label (``include`` minus ``exclude``), fed the
model's scores once per clip. It is pure: no I/O and no clock of its own; every time is passed in.

Per label (a "hit" is a score >= the label's start threshold)::

    IDLE   ── hit ─────────────────────────────────────────────────▶ STREAK
    STREAK ── no hit ──────────────────────────────────────────────▶ IDLE
    STREAK ── min_hits-th consecutive hit ─────────────────────────▶ ACTIVE   "start"  (min_hits=1: from IDLE)
    ACTIVE ── top_score rose update_margin, or update_s passed ────▶ ACTIVE   "update" (since the last event)
    ACTIVE ── below end_threshold for end_after_s, or stream down ─▶ IDLE     "end"

- The start threshold is ``thresholds[label]``, else ``threshold``. ``start_time`` is the ``received_at`` of the
  streak's first hit, ``top_score`` the best score of the streak.
- While active, a score between ``end_threshold`` and the threshold keeps the action alive and resets the "below"
  timer (hysteresis). Only scores below ``end_threshold`` for ``end_after_s`` (from the first low update to the
  current one) end it; with ``end_after_s = 0`` the first low score does. ``end_time`` is that update's time.
- ``stream_down(now)`` / ``close(now)`` end every active action at ``now`` and forget partial streaks.

The times events report come from ``received_at``: the wall-clock time at which the clip's newest frame was
received. That clock never runs backwards here: a ``received_at`` earlier than one already seen counts as the latest
seen, so a wall-clock step back cannot end an action before it started. Durations (``end_after_s``, ``update_s``)
run on the monotonic clock passed beside it, so a wall-clock step neither freezes nor rushes them. A clip's
stream-time span becomes wall-clock time by anchoring its end at ``received_at``.

Events carry a per-camera ``seq`` (from 1) and ``id = "{camera}-{run}-{seq:06d}"``, ``run`` telling the agent's
runs apart (without one, ``"{camera}-{seq:06d}"``); ``action_id`` is the ``id`` of the action's ``start``. The
events of one update come in label order. :class:`Event` is the message every sink publishes.

Person models: :class:`PersonEvents` keeps one such tracker per (person id, label) with the same hysteresis; a
person's events carry ``person``, ``box`` (normalised to the camera's whole upright frame) and ``zones``: the
camera's zones (``cameras[].zones``) that the bottom centre of the box is inside. With ``events.zones`` only people
inside one of the named zones count: a person elsewhere scores 0 for every label, so nobody starts an action outside
them, and an action whose person leaves them ends like any other whose scores fell, after ``end_after_s`` below
``end_threshold`` (unless they come back first). A person the IoU tracker has lost ends their actions, as a stream
going down ends a camera's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from agent.config import EventsConfig
from agent.geometry import Polygon, zones_of

if TYPE_CHECKING:
    from agent.live.people import Box, Person

EventType = Literal["start", "update", "end"]
SCHEMA_VERSION = 1

# Scores and times are floats: "rose by at least update_margin" and "below for at least end_after_s" tolerate the
# rounding of decimal inputs (0.85 - 0.8 < 0.05 in binary floating point).
EPS = 1e-9


@dataclass(frozen=True)
class Event:
    """One action event (the event JSON of docs/contracts.md, schema version 1). Times are UNIX seconds."""

    id: str  # unique, also across restarts: "{camera}-{run}-{seq:06d}"
    action_id: str  # the id of the action's start event
    seq: int
    type: EventType
    camera: str
    label: str
    score: float  # the label's score in the clip that caused this event
    top_score: float  # highest score of this label since the action started
    start_time: float
    end_time: float | None
    clip_start: float
    clip_end: float
    model: str
    received_at: float  # wall-clock receive time of the clip's newest frame
    inference_ms: float
    person: int | None = None  # person models: the tracked person's id
    box: Box | None = None  # their latest box, normalised x1, y1, x2, y2 in the whole frame
    zones: tuple[str, ...] | None = None  # person models: the camera's zones they stand in
    from_clip: bool = True  # False: an end that no clip caused (the stream went down, the agent stopped)
    evidence: dict[str, str | None] | None = None  # evidence on: URL paths of the snapshot and the clip (or None)

    def payload(self, published_at: float) -> dict:
        """The JSON object, with capture→publish latency measured up to ``published_at`` (null for an end that no
        clip caused)."""
        person = {} if self.person is None else {"person": self.person, "box": [round(v, 4) for v in self.box or ()]}
        return (
            {
                "v": SCHEMA_VERSION,
                "id": self.id,
                "action_id": self.action_id,
                "type": self.type,
                "camera": self.camera,
                "label": self.label,
                "score": round(self.score, 4),
                "top_score": round(self.top_score, 4),
                "start_time": round(self.start_time, 3),
                "end_time": None if self.end_time is None else round(self.end_time, 3),
                "clip": {"start": round(self.clip_start, 3), "end": round(self.clip_end, 3)},
                "model": self.model,
                "latency_ms": {
                    "capture_to_publish": round((published_at - self.received_at) * 1000, 1)
                    if self.from_clip
                    else None,
                    "inference": round(self.inference_ms, 1),
                },
                "seq": self.seq,
            }
            | person
            | ({} if self.zones is None else {"zones": list(self.zones)})
            | ({} if self.evidence is None else {"evidence": dict(self.evidence)})
        )


def tracked_labels(config: EventsConfig, labels: Sequence[str]) -> list[str]:
    """The labels a tracker follows: ``include`` (default: all) minus ``exclude``, in model order."""
    include = None if config.include is None else set(config.include)
    exclude = set(config.exclude)
    return [lb for lb in labels if (include is None or lb in include) and lb not in exclude]


def unknown_labels(config: EventsConfig, labels: Sequence[str]) -> list[str]:
    """Names in ``include``, ``exclude`` or ``thresholds`` that are not model labels (once each, first seen first).

    The tracker ignores them; the caller warns, since they are most likely typos.
    """
    known = set(labels)
    named = [*(config.include or []), *config.exclude, *config.thresholds]
    return list(dict.fromkeys(n for n in named if n not in known))


@dataclass
class _Label:
    """One label's state. ``active`` False with ``hits`` > 0 is a streak of hits not yet long enough to start."""

    name: str
    threshold: float
    hits: int = 0
    first_hit: float = 0.0  # event-clock time of the streak's first hit
    active: bool = False
    action_id: str = ""  # the id of the active action's start event
    start_time: float = 0.0
    top_score: float = 0.0  # best score of the streak, then of the action
    reported_top: float = 0.0  # top_score carried by the action's last event
    last_event: float = 0.0  # monotonic time of the action's last event
    below_since: float | None = None  # monotonic time of the first of the current run of scores below end_threshold
    score: float = 0.0  # latest score


@dataclass
class _Clip:
    """What the latest update() was about, for events emitted without a new clip (stream_down, close)."""

    start: float = 0.0  # wall clock
    end: float = 0.0
    received_at: float = 0.0
    inference_ms: float = 0.0


class EventTracker:
    """One camera's action state machines (see the module docstring). Not thread-safe: one owner feeds it."""

    def __init__(
        self,
        *,
        camera: str,
        model: str,
        labels: Sequence[str],
        config: EventsConfig,
        person: int | None = None,
        next_seq: Callable[[], int] | None = None,
        run: str | None = None,
    ) -> None:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ValueError(f"camera {camera!r}: model {model!r} has duplicate labels")
        self.camera, self.model, self.labels, self.config = camera, model, labels, config
        index = {lb: i for i, lb in enumerate(labels)}
        self._states = [
            (index[lb], _Label(lb, config.thresholds.get(lb, config.threshold)))
            for lb in tracked_labels(config, labels)
        ]
        self.person: int | None = person
        self.box: Box | None = None
        self.zones: tuple[str, ...] | None = None
        self._next_seq = next_seq or itertools.count(1).__next__  # shared by a camera's person trackers
        self._id_prefix = f"{camera}-{run}" if run else camera
        self._clock = -math.inf  # latest event-clock (wall) time seen
        self._mono = -math.inf  # latest monotonic time seen
        self._clip = _Clip()

    def update(
        self,
        scores: Sequence[float] | np.ndarray,
        *,
        clip_start: float,
        clip_end: float,
        received_at: float,
        inference_ms: float = 0.0,
        monotonic: float | None = None,
    ) -> list[Event]:
        """Feed one clip's scores (model label order); return the events they cause, in label order.

        ``clip_start`` / ``clip_end`` are the stream times of the clip's oldest / newest frames; ``received_at`` is
        the wall-clock time at which the newest frame was received, ``monotonic`` the same instant on a monotonic
        clock (default: ``received_at``): durations (``end_after_s``, ``update_s``) run on it, so a wall-clock step
        neither freezes nor rushes them. A NaN score counts as 0 (no evidence); an infinite one as 0 or 1.
        ValueError when there is not one score per model label or a time is not finite.
        """
        values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        if values.shape != (len(self.labels),):
            raise ValueError(f"camera {self.camera!r}: scores of shape {values.shape} for {len(self.labels)} labels")
        mono = received_at if monotonic is None else monotonic
        if not all(map(math.isfinite, (clip_start, clip_end, received_at, mono))):
            raise ValueError(f"camera {self.camera!r}: non-finite clip times {clip_start}, {clip_end}, {received_at}")
        now, mono = self._tick(received_at, mono)
        self._clip = _Clip(received_at - (clip_end - clip_start), received_at, received_at, inference_ms)
        events = []
        for i, st in self._states:
            kind = self._step(st, float(values[i]), now, mono)
            if kind is not None:
                events.append(self._emit(st, kind, end_time=now if kind == "end" else None))
        return events

    def stream_down(self, now: float, monotonic: float | None = None, *, from_clip: bool = False) -> list[Event]:
        """The stream stopped delivering frames: end every active action at ``now``; forget partial streaks.
        ``from_clip``: a clip caused it (a person model's tracker lost the person), not the stream."""
        mono = now if monotonic is None else monotonic
        if not (math.isfinite(now) and math.isfinite(mono)):
            raise ValueError(f"camera {self.camera!r}: non-finite time {now}")
        now, mono = self._tick(now, mono)
        events = []
        for _, st in self._states:
            if st.active:
                events.append(self._emit(st, "end", end_time=now, from_clip=from_clip))
            st.active, st.hits, st.below_since = False, 0, None
        return events

    def close(self, now: float, monotonic: float | None = None) -> list[Event]:
        """Shutdown: end every active action at ``now`` (as :meth:`stream_down`)."""
        return self.stream_down(now, monotonic)

    def active(self) -> dict[str, bool]:
        """Tracked label → whether its action is active (the ``{camera}/{label}`` ON/OFF state)."""
        return {st.name: st.active for _, st in self._states}

    def _tick(self, t: float, mono: float) -> tuple[float, float]:
        self._clock, self._mono = max(self._clock, t), max(self._mono, mono)
        return self._clock, self._mono

    def _step(self, st: _Label, score: float, now: float, mono: float) -> EventType | None:
        """Advance one label by one score (``now``: event clock, ``mono``: monotonic); the kind of event it causes,
        if any."""
        cfg = self.config
        st.score = score
        if not st.active:
            if score < st.threshold:
                st.hits = 0
                return None
            st.hits += 1
            if st.hits == 1:
                st.first_hit, st.top_score = now, score
            else:
                st.top_score = max(st.top_score, score)
            if st.hits < cfg.min_hits:
                return None
            st.active, st.hits, st.start_time, st.below_since = True, 0, st.first_hit, None
            return "start"
        st.top_score = max(st.top_score, score)
        if score < cfg.end_threshold:
            if st.below_since is None:
                st.below_since = mono
            if mono - st.below_since >= cfg.end_after_s - EPS:
                st.active, st.below_since = False, None
                return "end"
        else:
            st.below_since = None
        if st.top_score >= st.reported_top + cfg.update_margin - EPS or mono - st.last_event >= cfg.update_s - EPS:
            return "update"
        return None

    def _emit(self, st: _Label, kind: EventType, *, end_time: float | None, from_clip: bool = True) -> Event:
        seq = self._next_seq()
        st.reported_top, st.last_event = st.top_score, self._mono
        event_id = f"{self._id_prefix}-{seq:06d}"
        if kind == "start":
            st.action_id = event_id
        clip = self._clip
        return Event(
            id=event_id,
            action_id=st.action_id,
            seq=seq,
            type=kind,
            camera=self.camera,
            label=st.name,
            score=st.score,
            top_score=st.top_score,
            start_time=st.start_time,
            end_time=end_time,
            clip_start=clip.start,
            clip_end=clip.end,
            model=self.model,
            received_at=clip.received_at,
            inference_ms=clip.inference_ms,
            person=self.person,
            box=self.box,
            zones=self.zones,
            from_clip=from_clip,
        )


class PersonEvents:
    """One camera's per-person action state: an :class:`EventTracker` per tracked person, sharing the camera's
    ``seq``. Same interface as a tracker, except that :meth:`update` takes one score row per person. ``zones``: the
    camera's zones (see the module docstring)."""

    def __init__(
        self,
        *,
        camera: str,
        model: str,
        labels: Sequence[str],
        config: EventsConfig,
        run: str | None = None,
        zones: Mapping[str, Polygon] | None = None,
    ) -> None:
        self.camera, self.model, self.labels, self.config, self.run = camera, model, list(labels), config, run
        self.zones = dict(zones or {})
        self.only = None if config.zones is None else set(config.zones)  # events.zones
        self._next_seq = itertools.count(1).__next__
        self.people: dict[int, EventTracker] = {}

    def update(
        self,
        people: Sequence[Person],
        scores: np.ndarray,
        *,
        lost: Sequence[int] = (),
        clip_start: float,
        clip_end: float,
        received_at: float,
        inference_ms: float = 0.0,
        monotonic: float | None = None,
    ) -> list[Event]:
        """Feed one clip: ``scores[i]`` belongs to ``people[i]`` (boxes normalised to the whole frame); ``lost``
        people end their actions. People not in this clip but not lost keep their state (a missed detection does not
        end an action). With ``events.zones``, a person outside them scores 0 (see the module docstring)."""
        if len(scores) != len(people):
            raise ValueError(f"camera {self.camera!r}: {len(scores)} score rows for {len(people)} people")
        events = []
        for person, row in zip(people, scores, strict=True):
            tracker = self.people.get(person.id)
            if tracker is None:
                tracker = self.people[person.id] = EventTracker(
                    camera=self.camera,
                    model=self.model,
                    labels=self.labels,
                    config=self.config,
                    person=person.id,
                    next_seq=self._next_seq,
                    run=self.run,
                )
            tracker.box = person.box
            tracker.zones = tuple(zones_of(person.box, self.zones))
            if self.only is not None and self.only.isdisjoint(tracker.zones):
                row = np.zeros_like(row)  # not where events are watched for: no evidence of anything
            events += tracker.update(
                row,
                clip_start=clip_start,
                clip_end=clip_end,
                received_at=received_at,
                inference_ms=inference_ms,
                monotonic=monotonic,
            )
        for pid in lost:
            tracker = self.people.pop(pid, None)
            if tracker is not None:
                events += tracker.stream_down(received_at, monotonic, from_clip=True)
        return events

    def stream_down(self, now: float, monotonic: float | None = None) -> list[Event]:
        events = [e for tracker in self.people.values() for e in tracker.stream_down(now, monotonic)]
        self.people.clear()
        return events

    def close(self, now: float, monotonic: float | None = None) -> list[Event]:
        return self.stream_down(now, monotonic)

    def active(self) -> dict[str, bool]:
        """Tracked label → whether anyone is doing it."""
        state = dict.fromkeys(tracked_labels(self.config, self.labels), False)
        for tracker in self.people.values():
            for label, on in tracker.active().items():
                state[label] = state[label] or on
        return state


Tracker = EventTracker | PersonEvents  # one camera's action state, clip or person model
