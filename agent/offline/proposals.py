"""Person boxes read from a file, for ``actionstream infer --proposals`` (instead of running a detector).

Accepted formats (boxes are x1, y1, x2, y2 normalised to [0, 1]; times are seconds in the video):

- ``.json``: ``[{"time": 2.0, "boxes": [[x1, y1, x2, y2], [x1, y1, x2, y2, score], ...]}, ...]``
- ``.csv``: AVA's layout ``video_id, timestamp, x1, y1, x2, y2[, action_id[, person_id]]`` (ground truth or
  detections; a box repeated for several actions counts once);
- ``.pkl``: MMAction2's AVA proposals, ``{"video_id,timestamp": array [K, 4 or 5]}``. Read with an unpickler that
  accepts numpy arrays and nothing else, so a proposals file cannot run code.

With several video ids in one file, ``video_id`` picks one (required then).
"""

from __future__ import annotations

import csv
import io
import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np

from agent.errors import ProposalsError
from agent.live.people import Box, Detection

Proposals = dict[float, list[Detection]]  # time → (box, score), best first


def read_proposals(path: str | Path, video_id: str | None = None, min_score: float = 0.0) -> Proposals:
    path = Path(path)
    if not path.is_file():
        raise ProposalsError(f"{path}: proposals file not found")
    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = _json_rows(path)
    elif suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix in (".pkl", ".pickle"):
        rows = _pickle_rows(path)
    else:
        raise ProposalsError(f"{path}: unknown proposals format {suffix!r}; expected .json, .csv (AVA) or .pkl")
    videos = sorted({vid for vid, *_ in rows if vid is not None})
    if video_id is None and len(videos) > 1:
        raise ProposalsError(f"{path}: holds several videos ({', '.join(videos[:5])}...); choose one with --video-id")
    if video_id is not None and video_id not in videos:
        raise ProposalsError(f"{path}: no proposals for video id {video_id!r} (it has: {', '.join(videos[:5])})")
    out: Proposals = defaultdict(list)
    for vid, t, box, score, where in rows:
        if video_id is not None and vid != video_id:
            continue
        x1, y1, x2, y2 = box
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise ProposalsError(f"{path}: {where}: box {list(box)} is not x1 < x2, y1 < y2 within [0, 1]")
        if score >= min_score and all(box != b for b, _ in out[t]):
            out[t].append((box, score))
    if not out:
        raise ProposalsError(f"{path}: no boxes")
    return {t: sorted(v, key=lambda bs: -bs[1]) for t, v in sorted(out.items())}


Row = tuple[str | None, float, Box, float, str]


def _box(values, path: Path, where: str) -> Detection:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ProposalsError(f"{path}: {where}: expected numbers x1, y1, x2, y2[, score], got {values!r}") from None
    if len(numbers) not in (4, 5) or not all(np.isfinite(numbers)):
        raise ProposalsError(f"{path}: {where}: expected 4 or 5 finite numbers (x1, y1, x2, y2[, score])")
    return tuple(numbers[:4]), numbers[4] if len(numbers) == 5 else 1.0  # type: ignore[return-value]


def _json_rows(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProposalsError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, list):
        raise ProposalsError(f"{path}: expected a list of {{'time': seconds, 'boxes': [[x1, y1, x2, y2], ...]}}")
    rows: list[Row] = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("boxes"), list):
            raise ProposalsError(f"{path}: [{i}]: expected {{'time': seconds, 'boxes': [...]}}")
        try:
            t = float(entry["time"])
        except (KeyError, TypeError, ValueError):
            raise ProposalsError(f"{path}: [{i}].time: expected a number of seconds") from None
        for j, values in enumerate(entry["boxes"]):
            where = f"[{i}].boxes[{j}]"
            rows.append((None, t, *_box(values if isinstance(values, list) else [values], path, where), where))
    return rows


def _csv_rows(path: Path) -> list[Row]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProposalsError(f"{path}: cannot read ({e})") from None
    rows: list[Row] = []
    for n, fields in enumerate(csv.reader(io.StringIO(text)), 1):
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) < 6:
            raise ProposalsError(f"{path}: line {n}: expected video_id, timestamp, x1, y1, x2, y2[, ...]")
        try:
            t = float(fields[1])
        except ValueError:
            raise ProposalsError(f"{path}: line {n}: timestamp {fields[1]!r} is not a number") from None
        box, _ = _box(fields[2:6], path, f"line {n}")
        rows.append((fields[0].strip(), t, box, 1.0, f"line {n}"))
    return rows


class _NumpyOnly(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("_codecs", "encode"),  # bytes in protocol 2 pickles
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        return super().find_class(module, name)


def _pickle_rows(path: Path) -> list[Row]:
    try:
        with path.open("rb") as f:
            data = _NumpyOnly(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ProposalsError(f"{path}: not an MMAction2 proposals pickle ({e})") from None
    if not isinstance(data, dict):
        raise ProposalsError(f"{path}: expected a dict 'video_id,timestamp' → array [K, 4 or 5]")
    rows: list[Row] = []
    for key, boxes in data.items():
        vid, _, stamp = str(key).rpartition(",")
        try:
            t = float(stamp)
        except ValueError:
            raise ProposalsError(f"{path}: key {key!r}: expected 'video_id,timestamp'") from None
        array = np.asarray(boxes, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] not in (4, 5):
            raise ProposalsError(f"{path}: key {key!r}: expected an array [K, 4 or 5], got shape {array.shape}")
        for j, values in enumerate(array):
            where = f"key {key!r} row {j}"
            rows.append((vid or None, t, *_box(values, path, where), where))
    return rows
