"""Online temporal action detection: per camera and label, scores → start / update / end events.

(The tracker lands below; :class:`Event` is the message every sink publishes.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EventType = Literal["start", "update", "end"]
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Event:
    """One action event (DESIGN.md "Event JSON", schema version 1). Times are UNIX seconds."""

    id: str
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

    def payload(self, published_at: float) -> dict:
        """The JSON object, with capture→publish latency measured up to ``published_at``."""
        return {
            "v": SCHEMA_VERSION,
            "id": self.id,
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
                "capture_to_publish": round((published_at - self.received_at) * 1000, 1),
                "inference": round(self.inference_ms, 1),
            },
            "seq": self.seq,
        }
