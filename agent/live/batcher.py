"""Cross-camera dynamic batching: the clips of every camera that feeds one model, run together.

A batch forms when a worker has nothing left to run and either ``max_batch`` clips are waiting or the oldest has
waited ``max_wait_ms``. Inference runs in worker threads (``workers``, one by default), so the event loop never
waits on it.

With several workers (CPU), each batch is cut into pieces, about eight per worker, that the workers take in turn
without going through the event loop; a piece's scores go back to its cameras as soon as it is done, and the next
batch is formed as soon as the last piece of this one is taken. Why pieces: one run spread over all cores pays a
barrier per operator, and a decoding thread that preempts one of its threads stalls the others at the next one; one
row range per worker makes every batch wait for its slowest range; whole batches per worker leave the other cores
idle while one runs. ONNX Runtime's CPU cost per clip is flat from 1 to 32 clips per run, so pieces cost no
throughput. One worker (and CUDA) runs each batch whole, and asks for the next once it is done, so that a batch
holds every clip that came while the previous one ran.

A model that keeps failing (:data:`FAILURE_LIMIT` runs in a row: a sticky ONNX Runtime or CUDA error) is down:
``model_up`` goes to 0, the watchers (the cameras' pipelines) end their actions, one line says so, and the session is
recreated. The first run that succeeds brings it back up. If it fails as many times again after the new session,
:meth:`Batcher.run` raises :class:`ModelFailed`: the agent exits (status 3) so that its supervisor restarts the
process, which is what clears a broken CUDA context.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from agent.errors import InferenceError
from agent.live.clips import Clip
from agent.live.runtime import ModelRuntime, box_inputs, rows_per_clip
from agent.metrics import Metrics

log = logging.getLogger("actionstream.runtime")
JOIN_TIMEOUT_S = 5.0  # stopping: how long to wait for a worker to finish the run it is in
FAILURE_LIMIT = 5  # runs in a row that fail: the model is down


class ModelFailed(InferenceError):
    """A model kept failing after its session was recreated."""


class Scored(NamedTuple):
    """A clip's scores (person models: one row per box) and how long its batch had been running when they were
    ready (ms)."""

    scores: np.ndarray
    inference_ms: float


@dataclass
class _Request:
    clip: Clip
    future: asyncio.Future[Scored | None]
    boxes: np.ndarray | None = None  # person models: float32 [M, 4], normalised


@dataclass
class _Batch:
    clips: int
    pieces: int  # not yet finished
    started: float = 0.0  # perf_counter when its first piece started


class Batcher:
    """Collects clips for one model from all cameras and runs them in batches (see the module docstring).

    A live camera's clip comes here as soon as the camera has it (:meth:`submit` with ``replace``), while its
    previous clip may still be running; a newer clip from the same camera replaces one that no batch has taken yet,
    keeping its place in line, and the replaced one is counted as ``frames_dropped_total{reason="stale_clip"}``. So
    a live camera has at most one clip waiting here, always its newest. Consumer-paced files and person models do
    not replace: their pipelines bound what they have here themselves (:mod:`agent.live.pipelines`).
    """

    def __init__(self, runtime: ModelRuntime, metrics: Metrics) -> None:
        self.runtime, self.metrics = runtime, metrics
        self.workers = runtime.workers
        self.max_batch = runtime.config.max_batch
        self.max_wait = runtime.config.max_wait_ms / 1000
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._depth = metrics.queue_depth.labels(stage=f"inference:{runtime.name}")
        self._pieces: deque[tuple[_Batch, list[_Request]]] = deque()
        self._ready = threading.Condition()  # guards _pieces and _stopping; workers wait on it for pieces
        self._stopping = False
        self._form = asyncio.Event()  # set by a worker: time to collect the next batch
        self._waiting: dict[str, _Request] = {}  # camera → its clip no batch has taken yet (replace=True only)
        self._failures = 0  # runs in a row that failed
        self._reloaded = False  # the session was recreated since the model went down
        self._since_reload = 0  # runs in a row that failed with the new session
        self._fatal: ModelFailed | None = None
        self._watchers: list[Callable[[bool], None]] = []
        self._up = metrics.model_up.labels(model=runtime.name)
        self._up.set(1)
        self.last_done: float | None = None  # monotonic time of the last run that succeeded (readiness)

    @property
    def up(self) -> bool:
        return self._failures < FAILURE_LIMIT

    def watch(self, callback: Callable[[bool], None]) -> None:
        """``callback(up)`` on the event loop whenever the model goes down or comes back up."""
        self._watchers.append(callback)

    async def infer(self, clip: Clip, boxes: np.ndarray | None = None) -> Scored:
        """Scores for one clip; :class:`InferenceError` when its run failed."""
        scored = await self.submit(clip, boxes)
        assert scored is not None  # only a replacing submit resolves to None
        return scored

    def submit(self, clip: Clip, boxes: np.ndarray | None = None, replace: bool = False) -> asyncio.Future:
        """Queue a clip; the future gives what :meth:`infer` returns. With ``replace``, a clip from the same camera
        that no batch has taken yet gives way to this one: its future gives ``None``."""
        future: asyncio.Future[Scored | None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.get(clip.camera) if replace else None
        if waiting is not None:
            if not waiting.future.done():  # (done: cancelled, its camera is stopping)
                waiting.future.set_result(None)
            self.metrics.frames_dropped.labels(camera=clip.camera, reason="stale_clip").inc()
            waiting.clip, waiting.future, waiting.boxes = clip, future, boxes
            return future
        request = _Request(clip, future, boxes)
        if replace:
            self._waiting[clip.camera] = request
        self.queue.put_nowait(request)
        self._depth.set(self.queue.qsize())
        return future

    async def run(self) -> None:
        """Forms batches whenever a worker asks for one, until cancelled; then stops the workers and waits for them
        (each finishes the run it is in)."""
        loop = asyncio.get_running_loop()
        threads = [
            threading.Thread(target=self._work, args=(loop,), name=f"infer-{self.runtime.name}_{i}", daemon=True)
            for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        self._form.set()
        try:
            while True:
                await self._form.wait()
                self._form.clear()
                if self._fatal is not None:
                    raise self._fatal
                pieces = []
                for group in _same_shapes(await self._collect(loop)):
                    rows = piece_rows(len(group), self.workers)
                    batch = _Batch(len(group), pieces=-(-len(group) // rows))
                    pieces += [(batch, group[i : i + rows]) for i in range(0, len(group), rows)]
                with self._ready:
                    self._pieces.extend(pieces)
                    self._ready.notify_all()
        finally:
            with self._ready:
                self._stopping = True
                self._ready.notify_all()
            await asyncio.shield(asyncio.to_thread(_join, threads, JOIN_TIMEOUT_S))

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Request]:
        batch = [self._taken(await self.queue.get())]
        deadline = loop.time() + self.max_wait
        # Cameras woken by the previous results are runnable now: let them queue their next clips, so a saturated
        # model runs full batches instead of one clip followed by the rest.
        for _ in range(3):
            await asyncio.sleep(0)
        while len(batch) < self.max_batch:
            try:
                batch.append(self._taken(self.queue.get_nowait()))
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:  # not wait_for: see Camera.clips
                async with asyncio.timeout(remaining):
                    batch.append(self._taken(await self.queue.get()))
            except TimeoutError:
                break
        self._depth.set(self.queue.qsize())
        return batch

    def _taken(self, request: _Request) -> _Request:
        if self._waiting.get(request.clip.camera) is request:
            del self._waiting[request.clip.camera]
        return request

    def _infer(self, piece: list[_Request]) -> list[np.ndarray]:  # worker thread: stacking clips copies megabytes
        inputs = {n: self.runtime.stack(n, [r.clip.inputs[n] for r in piece]) for n in self.runtime.input_names}
        boxes = [r.boxes for r in piece if r.boxes is not None]
        if not boxes:
            rows = list(self.runtime.infer(inputs))
        else:
            inputs |= box_inputs(boxes)
            rows = rows_per_clip(self.runtime.infer(inputs), [len(b) for b in boxes])
        if len(rows) != len(piece):
            raise InferenceError(f"{len(rows)} score rows for {len(piece)} clips")
        return rows

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:  # a worker thread
        """Runs pieces back to back, never waiting for the event loop between two of them; asks for the next batch
        when the last piece of this one is taken (several workers) or done (one)."""
        while True:
            with self._ready:
                while not self._pieces and not self._stopping:
                    self._ready.wait()
                if self._stopping:
                    return
                batch, piece = self._pieces.popleft()
                last = not self._pieces
            if last and self.workers > 1:
                self._call(loop, self._form.set)
            batch.started = batch.started or time.perf_counter()
            try:
                result: list[np.ndarray] | Exception = self._infer(piece)
            except Exception as e:  # a model error fails these clips, not the agent
                result = e
            self._call(loop, self._done, batch, piece, result, time.perf_counter() - batch.started)
            if last and self.workers == 1:
                self._call(loop, self._form.set)

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, callback: Callable, *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the agent has stopped
            loop.call_soon_threadsafe(callback, *args)

    def _done(self, batch: _Batch, piece: list[_Request], result: list[np.ndarray] | Exception, seconds: float) -> None:
        name = self.runtime.name
        batch.pieces -= 1
        if isinstance(result, Exception):
            error = InferenceError(f"model {name}: {_one_line(result)}")
            for r in piece:
                if not r.future.done():
                    r.future.set_exception(error)
            self._failed(result)
            return
        if not self.up:
            log.info("model %s: runs succeed again (up)", name)
            self._up.set(1)
            self._tell(True)
        self._failures, self._reloaded, self._since_reload = 0, False, 0
        self.last_done = time.monotonic()
        self.metrics.clips_inferred.labels(model=name).inc(len(piece))
        if not batch.pieces:
            self.metrics.inference_seconds.labels(model=name).observe(seconds)
            self.metrics.batch_size.labels(model=name).observe(batch.clips)
        for r, rows in zip(piece, result, strict=True):
            if not r.future.done():
                r.future.set_result(Scored(rows, seconds * 1000))

    def _failed(self, error: Exception | str) -> None:  # event loop
        """One more run failed: say so once per streak, take the model down at the limit, give up after a reload."""
        name, error = self.runtime.name, _one_line(error)
        self.metrics.inference_failures.labels(model=name).inc()
        self._failures += 1
        self._since_reload += self._reloaded
        if self._failures == 1:
            log.warning("model %s: a run failed (its clips are lost): %s", name, error)
        elif self._failures == FAILURE_LIMIT:
            log.error("model %s: %d runs in a row failed (%s); ending its cameras' actions and recreating its session",
                      name, FAILURE_LIMIT, error)  # fmt: skip
            self._up.set(0)
            self._tell(False)
            asyncio.get_running_loop().create_task(self._reload())
        elif self._since_reload >= FAILURE_LIMIT and self._fatal is None:
            self._fatal = ModelFailed(
                f"model {name}: {self._failures} runs in a row failed, also with a new session ({error}); "
                "exiting so that a supervisor restarts the agent"
            )
            self._form.set()

    async def _reload(self) -> None:
        try:
            await asyncio.to_thread(self.runtime.reload)
        except Exception as e:  # the new session failed too: the next failures decide
            log.error("model %s: recreating its session failed: %s", self.runtime.name, e)
        self._reloaded, self._since_reload = True, 0

    def _tell(self, up: bool) -> None:
        for callback in self._watchers:
            try:
                callback(up)
            except Exception:
                log.exception("model %s: a watcher failed", self.runtime.name)


def _one_line(error: Exception | str) -> str:
    """The first line of an error (ONNX Runtime's carry a newline and more)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _join(threads: list[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("%s: still running after %.0f s; leaving it", thread.name, timeout)


def piece_rows(clips: int, workers: int) -> int:
    """Clips per run for a batch of ``clips``: the whole batch with one worker (CUDA: one run per batch), else about
    eight pieces per worker, so a worker that finishes early never waits long for another."""
    return clips if workers == 1 else -(-clips // (8 * workers))


def _same_shapes(batch: list[_Request]) -> list[list[_Request]]:
    """Clips that can be stacked together (whole-frame models: cameras of different sizes run apart)."""
    groups: dict[tuple, list[_Request]] = {}
    for r in batch:
        groups.setdefault(tuple(a.shape for a in r.clip.inputs.values()), []).append(r)
    return list(groups.values())
