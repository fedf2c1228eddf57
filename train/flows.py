"""Training data for flow models: each video's optical flow, computed once and cached, or MMAction2's flow frames.

A video's flow is every consecutive pair of its frames (the data's own frame rate: what ``step_s = 1 / fps`` in the
exported spec says), each frame resized as the model's frames are (short side, or ``resize_to``) and grey, the flow
made and quantised by :mod:`agent.flow` — the agent's own code, so that training and serving see the same flow.
The result, uint8 ``[frames - 1, H, W, 2]``, is cached as a compressed ``.npz`` under
``cache/<method>-b<bound>-<resize>/`` with the video's path relative to the data root, and reused by every later run
with the same method, bound and resize (remove the folder to recompute). :func:`prepare` computes what is missing in
worker processes before training starts.

MMAction2's own flow frames (``tools/misc/flow_extraction.py`` or denseflow output: ``x_00001.jpg``,
``y_00001.jpg``, … in each frame directory, a RawframeDataset list counting flow frames) are read as they are.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.errors import DatasetError
from agent.flow import FlowEstimator, cv2_module, grey

FLOW_TEMPLATE = "{}_{:05d}.jpg"  # MMAction2's flow_tmpl: x_00001.jpg, y_00001.jpg


@dataclass(frozen=True)
class FlowSettings:
    method: str
    bound: float
    resize_short: int
    resize_to: tuple[int, int] | None = None

    @property
    def tag(self) -> str:
        size = f"{self.resize_to[0]}x{self.resize_to[1]}" if self.resize_to else f"s{self.resize_short}"
        return f"{self.method}-b{self.bound:g}-{size}"


def video_flow(path: Path, settings: FlowSettings) -> np.ndarray:
    """uint8 ``[frames - 1, H, W, 2]``: the flow from each frame of the video to the next."""
    from train.datasets import count_frames, read_video_frames

    total = count_frames(path)
    frames = read_video_frames(path, np.arange(total), settings.resize_short, settings.resize_to)
    if len(frames) < 2:
        raise DatasetError(f"{path}: a flow model needs at least 2 frames, the video has {len(frames)}")
    estimator = FlowEstimator(settings.method, settings.bound)
    greys = [grey(f) for f in frames]
    return np.stack([estimator(a, b) for a, b in zip(greys[:-1], greys[1:], strict=True)])


def read_flow_frames(directory: Path, indices: np.ndarray) -> np.ndarray:
    """uint8 ``[len(indices), H, W, 2]`` from MMAction2's ``x_{i+1:05d}.jpg`` and ``y_{i+1:05d}.jpg`` (0-based
    indices, 1-based names)."""
    from torchvision.io import ImageReadMode, decode_image

    fields = {}
    for i in sorted(set(np.asarray(indices).tolist())):
        planes = []
        for axis in ("x", "y"):
            path = directory / FLOW_TEMPLATE.format(axis, i + 1)
            try:
                planes.append(decode_image(str(path), mode=ImageReadMode.GRAY)[0].numpy())
            except (OSError, RuntimeError) as e:
                raise DatasetError(f"{path}: cannot read flow frame ({e})") from None
        fields[i] = np.stack(planes, axis=-1)
    return np.stack([fields[int(i)] for i in indices])


class FlowCache:
    """Where each video's flow lives (``cache/<settings>/<video relative to root>.npz``), computed on first use."""

    def __init__(self, cache: Path, root: Path | None, settings: FlowSettings) -> None:
        self.folder, self.root, self.settings = Path(cache) / settings.tag, root, settings

    def path(self, video: Path) -> Path:
        try:
            relative = video.resolve().relative_to(self.root.resolve()) if self.root else None
        except ValueError:
            relative = None
        if relative is None:  # outside the root: named by a hash of its absolute path
            digest = hashlib.sha256(str(video.resolve()).encode()).hexdigest()[:16]
            relative = Path("_abs") / f"{digest}-{video.name}"
        return self.folder / relative.with_suffix(relative.suffix + ".npz")

    def load(self, video: Path) -> np.ndarray:
        path = self.path(video)
        if not path.is_file():
            self.store(video, video_flow(video, self.settings))
        with np.load(path) as data:
            return data["flow"]

    def store(self, video: Path, flow: np.ndarray) -> None:
        path = self.path(video)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part.npz")
        np.savez_compressed(tmp, flow=flow)
        tmp.replace(path)  # atomic: a run that stops half-way leaves no half-written flow behind

    def missing(self, videos: list[Path]) -> list[Path]:
        return [v for v in dict.fromkeys(videos) if not self.path(v).is_file()]


def _one_thread() -> None:
    cv2_module().setNumThreads(1)  # one process per core already


def _compute(job: tuple[Path, Path, Path | None, FlowSettings]) -> Path:
    video, cache, root, settings = job
    FlowCache(cache, root, settings).store(video, video_flow(video, settings))
    return video


def prepare(cache: FlowCache, videos: list[Path], *, jobs: int = 1, progress: bool = True) -> int:
    """Compute the flow of every video not cached yet, in ``jobs`` processes; returns how many were computed."""
    todo = cache.missing(videos)
    if not todo:
        return 0
    print(f"optical flow ({cache.settings.method}) of {len(todo)} videos → {cache.folder}", flush=True)
    work = [(v, cache.folder.parent, cache.root, cache.settings) for v in todo]
    bar = tqdm(total=len(todo), desc="flow", disable=not progress, leave=False)
    if jobs > 1:
        context = multiprocessing.get_context("spawn")  # not fork: the trainer has torch's threads running
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_thread) as pool:
            for _ in pool.map(_compute, work, chunksize=1):
                bar.update()
    else:
        for job in work:
            _compute(job)
            bar.update()
    bar.close()
    return len(todo)
