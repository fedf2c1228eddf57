"""People for person models (``task: person``): a detector ONNX finds them on the key frame, an IoU tracker keeps
their ids stable from one inference to the next.

Detector contract (any ONNX file; the user brings it):

- one image input: uint8 ``[1, H, W, 3]`` / ``[H, W, 3]`` RGB, or float ``[1, 3, H, W]`` / ``[3, H, W]`` RGB in
  [0, 1] (torchvision's detection models). Fixed H and W: the frame is resized to them; dynamic: fed as it is.
- outputs, either torchvision-style ``boxes [K, 4]``, ``labels [K]``, ``scores [K]`` (told apart by name, else by
  shape and type), or YOLO-style one ``[K, 6]`` / ``[1, K, 6]`` of ``x1, y1, x2, y2, score, class`` (after NMS).
  Boxes are in pixels of the detector's input.
- the person class is 1 for torchvision layouts (COCO with background) and 0 for YOLO ones unless configured.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import av
import numpy as np
from numpy.typing import ArrayLike

from agent.config import DetectorConfig, ModelConfig
from agent.errors import ConfigError, SpecError
from agent.live.backends import open_backend
from agent.spec import ModelSpec, Port

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to [0, 1] in the model's frame
Detection = tuple[Box, float]  # a box and the detector's confidence


@dataclass(frozen=True)
class Person:
    id: int
    box: Box
    score: float  # detector confidence


class PersonDetector:
    """Runs the detector on one RGB frame and returns normalised person boxes, best first. ``device``: where its
    model runs (its action model's, a :class:`agent.live.backends.Choice`'s device), always in fp32."""

    def __init__(self, config: DetectorConfig, device: str = "cpu") -> None:
        self.config = config
        self.backend = open_backend(config.path, device)
        origin = str(config.path)
        inputs = self.backend.inputs
        if len(inputs) != 1:
            raise SpecError(f"{origin}: a person detector takes one image input, this one takes {len(inputs)}")
        node = inputs[0]
        self.input_name, shape = node.name, list(node.shape)
        self.float_input = node.type in ("tensor(float)", "tensor(float16)")
        self.input_dtype: type[np.floating] = np.float16 if node.type == "tensor(float16)" else np.float32
        if not self.float_input and node.type != "tensor(uint8)":
            raise SpecError(f"{origin}: detector input {node.name!r} is {node.type}, expected uint8 or float")
        self.batched = len(shape) == 4
        if len(shape) not in (3, 4):
            raise SpecError(f"{origin}: detector input {node.name!r} has shape {shape}, expected an image")
        hw = shape[-2:] if self.float_input else shape[-3:-1]
        channels = shape[-3] if self.float_input else shape[-1]
        if channels not in (3, "3") and isinstance(channels, int):
            raise SpecError(f"{origin}: detector input {node.name!r} has {channels} channels, expected 3 (RGB)")
        self.fixed_hw = tuple(hw) if all(isinstance(d, int) and d > 0 for d in hw) else None
        self.layout, self.outputs = _output_layout(self.backend.outputs, origin)
        default_class = 1 if self.layout == "torchvision" else 0
        self.person_class = default_class if config.person_class is None else config.person_class

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """``rgb``: uint8 ``[H, W, 3]``. Returns up to ``max_people`` (normalised box, score), best first."""
        image: np.ndarray = rgb
        if self.fixed_hw is not None and tuple(rgb.shape[:2]) != self.fixed_hw:
            h, w = self.fixed_hw
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            image = frame.to_ndarray(width=w, height=h, format="rgb24")
        height, width = image.shape[:2]
        x: np.ndarray = image
        if self.float_input:
            x = image.transpose(2, 0, 1).astype(self.input_dtype) / 255
        if self.batched:
            x = x[None]
        results = self.backend.run(self.outputs, {self.input_name: np.ascontiguousarray(x)})
        if self.layout == "torchvision":
            boxes, labels, scores = (np.asarray(r) for r in results)
        else:
            rows = np.asarray(results[0]).reshape(-1, 6)
            boxes, scores, labels = rows[:, :4], rows[:, 4], rows[:, 5]
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        keep = (np.round(labels).astype(np.int64) == self.person_class) & (scores >= self.config.score_threshold)
        boxes, scores = boxes[keep] / (width, height, width, height), scores[keep]
        boxes = np.clip(boxes, 0.0, 1.0)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores = boxes[valid], scores[valid]
        order = np.argsort(-scores, kind="stable")[: self.config.max_people]
        return [(_box(boxes[i]), float(scores[i])) for i in order]


def open_detector(name: str, model: ModelConfig, spec: ModelSpec, device: str = "cpu"):
    """The detector of model ``name`` on ``device``: required for a person model, refused for a clip model
    (ConfigError)."""
    if spec.task == "person" and model.detector is None:
        raise ConfigError(
            f"models.{name}.detector: {model.path} is a person model (task: person); "
            "configure the person detector that finds who to classify"
        )
    if spec.task != "person" and model.detector is not None:
        raise ConfigError(f"models.{name}.detector: {model.path} is not a person model; remove the detector")
    return None if model.detector is None else PersonDetector(model.detector, device)


def _output_layout(outputs: list[Port], origin: str) -> tuple[str, list[str]]:
    if len(outputs) == 1:
        shape = outputs[0].shape
        if shape and shape[-1] == 6 and len(shape) in (2, 3):
            return "yolo", [outputs[0].name]
    elif len(outputs) >= 3:
        by_name = {}
        for role in ("boxes", "labels", "scores"):
            named = [o.name for o in outputs if role in o.name.lower()]
            if len(named) == 1:
                by_name[role] = named[0]
        if len(by_name) == 3:
            return "torchvision", [by_name["boxes"], by_name["labels"], by_name["scores"]]
        boxes = [o for o in outputs if len(o.shape) == 2 and o.shape[-1] == 4]
        ints = [o for o in outputs if len(o.shape) == 1 and "int" in o.type]
        floats = [o for o in outputs if len(o.shape) == 1 and "float" in o.type]
        if len(outputs) == 3 and len(boxes) == len(ints) == len(floats) == 1:
            return "torchvision", [boxes[0].name, ints[0].name, floats[0].name]
    found = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
    raise SpecError(
        f"{origin}: detector outputs ({found}) are neither torchvision-style boxes [K,4], labels [K], scores [K] "
        "nor YOLO-style [K, 6] (x1, y1, x2, y2, score, class)"
    )


def iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pairwise IoU of boxes ``a [n, 4]`` and ``b [m, 4]`` (x1, y1, x2, y2)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass
class _Track:
    id: int
    box: Box
    seen_at: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per second

    def predict(self, now: float) -> np.ndarray:
        return np.asarray(self.box) + self.velocity * (now - self.seen_at)


@dataclass
class IouTracker:
    """Greedy IoU matching: each detection takes the unmatched track whose predicted box (last box moved at its
    last velocity) it overlaps most (IoU >= ``min_iou``), highest overlaps first, so people who cross keep their
    ids; the rest start new tracks with the next id. A track not matched for ``lost_after_s`` is lost. Pure: times
    are passed in."""

    min_iou: float = 0.3
    lost_after_s: float = 3.0
    tracks: dict[int, _Track] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        """Forget everyone (the stream went down); ids keep counting up."""
        self.tracks.clear()

    def update(self, detections: list[Detection], now: float) -> tuple[list[Person], list[int]]:
        """Match ``detections`` (box, score) seen at ``now``; returns (people in detection order, lost ids)."""
        ids = list(self.tracks)
        overlap = iou([d[0] for d in detections], [self.tracks[i].predict(now) for i in ids])
        assigned: dict[int, int] = {}
        taken: set[int] = set()
        for flat in np.argsort(-overlap, axis=None, kind="stable"):
            d, t = divmod(int(flat), len(ids))
            if overlap[d, t] < self.min_iou:
                break
            if d not in assigned and t not in taken:
                assigned[d] = ids[t]
                taken.add(t)
        people = []
        for d, (box, score) in enumerate(detections):
            if d in assigned:
                track = self.tracks[assigned[d]]
                dt = now - track.seen_at
                if dt > 0:
                    track.velocity = (np.asarray(box) - np.asarray(track.box)) / dt
                track.box, track.seen_at = box, now
            else:
                pid = next(self._ids)
                track = self.tracks[pid] = _Track(pid, box, now)
            people.append(Person(track.id, box, score))
        lost = [i for i, tr in self.tracks.items() if now - tr.seen_at >= self.lost_after_s]
        for i in lost:
            del self.tracks[i]
        return people, lost


def _box(values: np.ndarray) -> Box:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2
