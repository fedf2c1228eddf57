"""Where training clips come from: MMAction2 list files, a folder per class, and PyAV/JPEG frame reading.

Formats (MMAction2's, paths relative to a data root; blank lines and ``#`` comments are skipped):

- VideoDataset list: ``<path> <label>`` per line, e.g. ``videos/move_left/0001.mp4 0``.
- RawframeDataset list: ``<frame_dir> <num_frames> <label>``; frames are ``img_00001.jpg`` … (1-based).
- Folder per class: ``root/<class>/*.mp4``, classes sorted by name (their index is the label).

A path may contain spaces: the label (and frame count) are taken from the right. Any malformed line raises
:class:`DatasetError` naming the file and the line number.

:class:`ClipDataset` turns a sample into model inputs with a :class:`train.pipelines.ClipPipeline`; its random
choices come from a generator seeded by (seed, epoch, index), so a run is reproducible whatever the number of
loader workers and a resumed run sees the same clips as an uninterrupted one. For flow models it samples the
video's flow fields (:mod:`train.flows`) instead of its frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from agent.errors import DatasetError
from agent.frames import resized_rgb
from agent.spec import resized_size
from train.flows import FlowCache, read_flow_frames
from train.pipelines import ClipPipeline

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
FRAME_TEMPLATE = "img_{:05d}.jpg"
ListFormat = Literal["video", "rawframes"]


@dataclass(frozen=True)
class Sample:
    path: Path  # a video file, or a frame directory (rawframes)
    label: int
    num_frames: int | None = None  # rawframes: from the list; videos: counted when read


def read_video_list(list_file: str | Path, data_root: str | Path | None = None) -> list[Sample]:
    """``<path> <label>`` lines; paths are relative to ``data_root`` (default: the list file's folder)."""
    return [Sample(path, int(fields[0])) for path, fields in _parse(list_file, data_root, 1, ("label",))]


def read_rawframe_list(list_file: str | Path, data_root: str | Path | None = None) -> list[Sample]:
    """``<frame_dir> <num_frames> <label>`` lines (frames ``img_00001.jpg`` …)."""
    out = []
    for path, (num_frames, label) in _parse(list_file, data_root, 2, ("num_frames", "label")):
        out.append(Sample(path, int(label), int(num_frames)))
    return out


def read_list(list_file: str | Path, data_root: str | Path | None = None, fmt: ListFormat = "video") -> list[Sample]:
    return read_rawframe_list(list_file, data_root) if fmt == "rawframes" else read_video_list(list_file, data_root)


def _parse(list_file, data_root, n_numbers: int, names: tuple[str, ...]):
    list_file = Path(list_file)
    root = Path(data_root) if data_root is not None else list_file.parent
    try:
        text = list_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{list_file}: cannot read list file ({e})") from None
    expected = "<path> " + " ".join(f"<{n}>" for n in names)
    out = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=n_numbers)
        if len(parts) != n_numbers + 1:
            raise DatasetError(f"{list_file}:{number}: expected '{expected}', got {raw!r}")
        numbers = parts[1:]
        for name, value in zip(names, numbers, strict=True):
            if not value.isdigit():
                raise DatasetError(
                    f"{list_file}:{number}: {name} must be a non-negative integer, got {value!r} in {raw!r}"
                )
        out.append((root / parts[0], tuple(int(v) for v in numbers)))
    if not out:
        raise DatasetError(f"{list_file}: no samples (expected lines '{expected}')")
    return out


def read_folder(root: str | Path) -> tuple[list[Sample], list[str]]:
    """``root/<class>/<video>`` → samples and the sorted class names."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory (expected one sub-folder of videos per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders (expected {root}/<class>/*.mp4)")
    samples = []
    for label, name in enumerate(classes):
        videos = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise DatasetError(f"{root / name}: no videos ({', '.join(VIDEO_SUFFIXES)})")
        samples += [Sample(v, label) for v in videos]
    return samples, classes


def load_samples(
    source: str | Path, *, root: str | Path | None = None, fmt: ListFormat = "video"
) -> tuple[list[Sample], list[str] | None]:
    """A list file (``fmt``) or a folder per class → (samples, class names from folders or None)."""
    source = Path(source)
    if source.is_dir():
        return read_folder(source)
    if not source.exists():
        raise DatasetError(f"{source}: no such list file or folder")
    return read_list(source, root, fmt), None


def read_labels(path: str | Path) -> list[str]:
    """One label per non-empty line, in class order."""
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read labels file ({e})") from None
    if not labels:
        raise DatasetError(f"{path}: no labels")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise DatasetError(f"{path}: duplicate labels: {', '.join(dupes)}")
    return labels


def check_labels(samples: list[Sample], num_classes: int, source: str | Path) -> None:
    bad = [s for s in samples if s.label >= num_classes]
    if bad:
        raise DatasetError(f"{source}: label {bad[0].label} of {bad[0].path} is out of range for {num_classes} classes")


# --- reading frames ---------------------------------------------------------------------------------------------


def count_frames(path: Path) -> int:
    """Frames in a video: the container's count when it has one, else by decoding."""
    with _open(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(stream))


def read_video_frames(
    path: Path, indices: np.ndarray, short_side: int | None = None, resize_to: tuple[int, int] | None = None
) -> np.ndarray:
    """uint8 RGB ``[len(indices), H, W, 3]`` for 0-based ``indices``; decodes from the start up to the largest
    one only. With ``short_side`` swscale resizes while converting (bilinear, mmcv rounding — the agent's path);
    with ``resize_to`` (width, height) it resizes to exactly that (a spec's ``resize_to``: S3D).
    Indices past the last decodable frame get the last frame (files whose header over-counts)."""
    wanted = np.asarray(indices, dtype=np.int64)
    targets, last_needed = set(wanted.tolist()), int(wanted.max())
    got: dict[int, np.ndarray] = {}
    end, frame = -1, None
    with _open(path) as container:
        try:
            for end, frame in enumerate(container.decode(container.streams.video[0])):
                if end in targets:
                    got[end] = _to_rgb(frame, short_side, resize_to)
                if end >= last_needed:
                    break
        except av.FFmpegError as e:
            if frame is None:
                raise DatasetError(f"{path}: no decodable video frames ({e})") from None
        if frame is None:
            raise DatasetError(f"{path}: no decodable video frames")
        if end not in got:
            got[end] = _to_rgb(frame, short_side, resize_to)
    return np.stack([got[min(int(i), end)] for i in wanted])


def _to_rgb(frame: av.VideoFrame, short_side: int | None, resize_to: tuple[int, int] | None = None) -> np.ndarray:
    if short_side is None and resize_to is None:
        return frame.to_ndarray(format="rgb24")
    w, h = resize_to or resized_size(frame.width, frame.height, short_side)
    return resized_rgb(frame, w, h)  # the agent's own conversion: no train/serve pixel skew


def read_rawframes(directory: Path, indices: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[len(indices), H, W, 3]`` from ``img_{i+1:05d}.jpg`` (indices are 0-based)."""
    from torchvision.io import ImageReadMode, decode_image

    frames = {}
    for i in sorted(set(np.asarray(indices).tolist())):
        path = directory / FRAME_TEMPLATE.format(i + 1)
        try:
            frames[i] = decode_image(str(path), mode=ImageReadMode.RGB).permute(1, 2, 0).numpy()
        except (OSError, RuntimeError) as e:
            raise DatasetError(f"{path}: cannot read frame ({e})") from None
    return np.stack([frames[int(i)] for i in indices])


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise DatasetError(f"{path}: video file not found")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise DatasetError(f"{path}: not a readable video ({e})") from None
    if not container.streams.video:
        container.close()
        raise DatasetError(f"{path}: has no video stream")
    return container


# --- the dataset ------------------------------------------------------------------------------------------------


class ClipDataset(Dataset):
    """``samples`` → ``(inputs, labels)``: ``inputs`` is a tuple of float tensors, each ``[repeats·views, ...]`` in
    the layout the model kind takes (see :func:`train.pipelines.format_inputs`), ``labels`` an int64 ``[repeats]``.

    ``repeats`` > 1 (training) samples that many independent clips (offsets, crops, flips) from one decode of the
    video, as MMAction2's ``RepeatAugDataset``: decoding dominates the cost of a sample on a CPU, and the frames
    up to the last needed index are decoded once for all of them.

    ``cache`` keeps every video's frames (all of them, resized to the pipeline's short side) in memory after its
    first read, so later epochs decode nothing: for small sets such as the synthetic one (a 3-s 160x120 clip at
    30 fps is ~1.9 MB at short side 73). The cache lives in this object: use it without loader workers.

    ``flow`` (flow models): videos give their flow fields from this cache (computed on first use), rawframe
    directories MMAction2's ``x_``/``y_`` flow frames; ``num_frames`` then counts flow fields."""

    def __init__(
        self,
        samples: list[Sample],
        pipeline: ClipPipeline,
        *,
        seed: int = 0,
        repeats: int = 1,
        cache: bool = False,
        flow: FlowCache | None = None,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.samples, self.pipeline, self.seed, self.repeats = samples, pipeline, seed, repeats
        self.flow = flow
        self.epoch = 0
        self.cache: dict[Path, np.ndarray] | None = {} if cache else None
        self._frame_counts: dict[Path, int] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Fresh random choices per epoch (set before iterating; workers copy the dataset each epoch)."""
        self.epoch = epoch

    def total_frames(self, sample: Sample) -> int:
        if sample.num_frames is not None:
            return sample.num_frames
        if self.flow is not None:
            return len(self._flow_of(sample))
        if self.cache is not None and sample.path in self.cache:
            return len(self.cache[sample.path])
        if sample.path not in self._frame_counts:
            self._frame_counts[sample.path] = count_frames(sample.path)
        return self._frame_counts[sample.path]

    def _flow_of(self, sample: Sample) -> np.ndarray:
        """A video's whole flow (kept in memory with ``cache``)."""
        assert self.flow is not None
        if self.cache is not None:
            if sample.path not in self.cache:
                self.cache[sample.path] = self.flow.load(sample.path)
            return self.cache[sample.path]
        return self.flow.load(sample.path)

    def _read(self, sample: Sample, indices: np.ndarray) -> np.ndarray:
        if self.flow is not None:
            if sample.num_frames is None:
                return self._flow_of(sample)[indices]
            return read_flow_frames(sample.path, indices)
        if sample.num_frames is None:
            return read_video_frames(sample.path, indices, self.pipeline.resize_short, self.pipeline.resize_to)
        return read_rawframes(sample.path, indices)

    def _cached(self, sample: Sample, total: int) -> np.ndarray:
        if sample.path not in self.cache:
            self.cache[sample.path] = self._read(sample, np.arange(total))
        return self.cache[sample.path]

    def cache_bytes(self) -> int:
        return sum(a.nbytes for a in (self.cache or {}).values())

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        sample = self.samples[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        total = self.total_frames(sample)
        if total < 1:
            raise DatasetError(f"{sample.path}: no frames")
        picks = [self.pipeline.frame_indices(total, rng) for _ in range(self.repeats)]
        wanted = np.concatenate(picks)
        if self.flow is not None and sample.num_frames is None:
            frames = self._flow_of(sample)[wanted]  # one load for count and fields
        elif self.cache is not None:
            frames = self._cached(sample, total)[wanted]
        else:
            frames = self._read(sample, wanted)
        outputs, labels, start = [], [], 0
        for pick in picks:
            inputs, label = self.pipeline(frames[start : start + len(pick)], sample.label, rng)
            outputs.append(inputs)
            labels.append(label)
            start += len(pick)
        inputs = tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))
        return inputs, torch.tensor(labels, dtype=torch.int64)
