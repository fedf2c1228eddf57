"""Model runtime: one ONNX Runtime session per model file, and cross-camera dynamic batching.

Providers: ``device: auto`` takes the CUDA execution provider when it loads (onnxruntime-gpu with CUDA and cuDNN
present), else the CPU; ``cuda`` requires it; ``cpu`` never tries. Inference runs in worker threads (``workers``, one
by default), so the event loop never waits on it.

On CUDA the uint8 clips go through IO binding into device buffers allocated once per input shape (only the uint8
bytes cross the bus; normalisation happens in the graph), and batches are padded up to a few bucket sizes (powers of
two and ``max_batch``) that :meth:`ModelRuntime.warm_up` runs once, so no live batch meets an untuned shape. On the
CPU, ONNX Runtime's worker threads do not spin between runs: the decoder threads need those cores.

``workers`` (CPU): each batch is cut into pieces (about eight per worker) that the workers, threads of their own and
each single-threaded by default (cores ÷ workers), take in turn without going through the event loop; a piece's
scores go back to its cameras as soon as it is done, and the event loop forms the next batch, from the clips waiting
then, as soon as the last piece of this one is taken (one worker: once it is done). One run spread over all cores
pays a barrier per operator, and whenever a decoder thread preempts one of its threads the others wait at the next one;
splitting each batch into one row range per worker made every batch wait for its slowest range instead (~19 ms of
~330 ms with 64 cameras decoding beside it on 2 cores), and whole batches per worker run each batch on one core
(K = 48: p50 capture→publish 332 ms, against 136 ms with pieces). ONNX Runtime's per-clip CPU cost is flat from
1 to 32 clips per run, so the pieces cost nothing in throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from agent.clips import Clip
from agent.config import ModelConfig
from agent.metrics import Metrics
from agent.people import box_inputs, rows_per_clip
from agent.spec import ModelSpec, SpecError, open_session, read_spec

log = logging.getLogger("actionstream.runtime")


def providers_for(config: ModelConfig) -> list:
    cpu = "CPUExecutionProvider"
    if config.device == "cpu" or "CUDAExecutionProvider" not in ort.get_available_providers():
        if config.device == "cuda":
            raise SpecError(f"{config.path}: device 'cuda' requested but this onnxruntime has no CUDA provider")
        return [cpu]
    cuda_options = {"device_id": config.device_id, "cudnn_conv_algo_search": config.cudnn_conv_algo_search}
    return [("CUDAExecutionProvider", cuda_options), cpu]


class ModelRuntime:
    """A loaded model: its spec, its session and a blocking :meth:`infer`."""

    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name, self.config = name, config
        options = ort.SessionOptions()
        cores = len(os.sched_getaffinity(0))
        threads = config.threads or (max(1, cores // config.workers) if config.workers > 1 else 0)
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = providers_for(config)
        ort.set_default_logger_severity(4)  # a failing CUDA load is reported below, in one line
        try:
            self.session = open_session(config.path, providers, options)
        finally:
            ort.set_default_logger_severity(2)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        if config.device == "cuda" and self.device != "cuda":
            raise SpecError(f"{config.path}: device 'cuda' requested but the CUDA provider did not load")
        if config.device == "auto" and len(providers) > 1 and self.device == "cpu":
            # Loud only where a GPU is visible: onnxruntime-gpu is the default install on CPU-only boxes too.
            level = logging.WARNING if Path("/dev/nvidia0").exists() else logging.INFO
            log.log(level, "model %s: the CUDA provider did not load (CUDA/cuDNN missing?); running on the CPU", name)
        self.spec: ModelSpec = read_spec(self.session, str(config.path))
        self.input_names = [i.name for i in self.spec.inputs]
        self.buckets = batch_buckets(config.max_batch) if self.device == "cuda" else []
        self.workers = config.workers if self.device == "cpu" else 1  # CUDA: one stream
        self.bound_device = ("cuda", config.device_id)  # where IO-bound inputs and outputs live
        self._device_inputs: dict[tuple, ort.OrtValue] = {}  # (name, shape, dtype) -> device buffer
        self._copy_in_place = True
        self._padded: dict[tuple, np.ndarray] = {}  # host staging for padded batches

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """``inputs``: name → array (uint8 ``[N, T, S, S, 3]`` clips, plus any other inputs the graph takes, all
        bound as given); returns float32 scores ``[N, K]``. On the CPU, ``workers`` threads may call this at once."""
        if self.device == "cuda":
            return self._infer_bound(inputs)
        return self.session.run([self.spec.output.name], inputs)[0]

    def _infer_bound(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        n = len(inputs[self.input_names[0]])
        rows = self.bucket(n) if set(inputs) == set(self.input_names) else n  # extra inputs (boxes): no padding
        binding = self.session.io_binding()
        for name, value in inputs.items():
            if rows != n:
                value = self._pad(name, value, rows)
            if self._copy_in_place:
                try:
                    binding.bind_ortvalue_input(name, self._on_device(name, value))
                    continue
                except Exception as e:  # an onnxruntime without in-place device copies: let it copy per run
                    log.warning("model %s: device buffers unavailable (%s); binding host inputs", self.name, e)
                    self._copy_in_place = False
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output(self.spec.output.name, *self.bound_device)
        self.session.run_with_iobinding(binding)
        scores = binding.copy_outputs_to_cpu()[0]
        return scores[:n] if rows != n else scores

    def bucket(self, n: int) -> int:
        """The batch size ``n`` clips run at (CUDA: the smallest bucket that holds them)."""
        return next((b for b in self.buckets if b >= n), n)

    def stack(self, name: str, arrays: list[np.ndarray]) -> np.ndarray:
        """``np.stack(arrays)`` into a host buffer reused across batches (no fresh megabytes per batch); on CUDA
        the buffer has the bucket's rows, so padding costs no copy. Valid until this thread's next ``stack`` of
        ``name`` (each worker thread has its own buffers)."""
        rows = max(self.bucket(len(arrays)), len(arrays))
        staging = self._staging(name, (rows, *arrays[0].shape), arrays[0].dtype)
        return np.stack(arrays, out=staging[: len(arrays)])

    def _staging(self, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
        key = (threading.get_ident(), name, shape, np.dtype(dtype).str)
        staging = self._padded.get(key)
        if staging is None:
            if len(self._padded) >= 64:
                self._padded.clear()
            staging = self._padded[key] = np.zeros(shape, dtype)
        return staging

    def _pad(self, name: str, value: np.ndarray, rows: int) -> np.ndarray:
        staging = self._staging(name, (rows, *value.shape[1:]), value.dtype)
        if value.base is not staging:  # stacked by :meth:`stack`: already in place
            staging[: len(value)] = value  # rows past it keep old clips: their scores are dropped
        return staging

    def _on_device(self, name: str, value: np.ndarray) -> ort.OrtValue:
        value = np.ascontiguousarray(value)
        key = (name, value.shape, value.dtype.str)
        buffer = self._device_inputs.get(key)
        if buffer is None:
            if len(self._device_inputs) >= 64:  # person models: one shape per box count; keep memory bounded
                self._device_inputs.clear()
            buffer = ort.OrtValue.ortvalue_from_shape_and_type(value.shape, value.dtype, *self.bound_device)
            self._device_inputs[key] = buffer
        buffer.update_inplace(value)
        return buffer

    def warm_up(self, batch_sizes: list[int]) -> None:
        """Run each batch size once (CUDA: every bucket up to the largest asked for)."""
        size = self.spec.size
        wanted = set(batch_sizes)
        if self.buckets:
            top = self.bucket(max(wanted))
            wanted = {b for b in self.buckets if b <= top}
        for n in sorted(wanted):
            inputs = {i.name: np.zeros((n, i.frames, size, size, 3), np.uint8) for i in self.spec.inputs}
            if self.spec.task == "person":  # one box per clip
                inputs["boxes"] = np.tile(np.float32([0.25, 0.25, 0.75, 0.75]), (n, 1))
                inputs["box_batch"] = np.arange(n, dtype=np.int64)
            self.infer(inputs)


def batch_buckets(max_batch: int) -> list[int]:
    """Powers of two below ``max_batch``, then ``max_batch``: the shapes a CUDA session is tuned for."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


@dataclass
class _Request:
    clip: Clip
    future: asyncio.Future
    boxes: np.ndarray | None = None  # person models: float32 [M, 4], normalised


class Batcher:
    """Collects clips for one model from all cameras: a batch forms when a worker has nothing left to run and either
    ``max_batch`` clips are waiting or the oldest has waited ``max_wait_ms``.

    A live camera's clip comes here as soon as the camera has it (:meth:`submit` with ``replace``), while its
    previous clip may still be running; a newer clip from the same camera replaces one that no batch has taken yet,
    keeping its place in line, and the replaced one is counted as ``frames_dropped_total{reason="stale_clip"}``. So
    a live camera has at most one clip waiting here, always its newest. Consumer-paced files and person models do
    not replace: their pipelines bound what they have here themselves (:class:`agent.app._Pipeline`).
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

    async def infer(self, clip: Clip, boxes: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """Scores for one clip (person models: one row per box) and how long its batch had been running when they
        were ready (ms)."""
        return await self.submit(clip, boxes)

    def submit(self, clip: Clip, boxes: np.ndarray | None = None, replace: bool = False) -> asyncio.Future:
        """Queue a clip; the future gives what :meth:`infer` returns. With ``replace``, a clip from the same camera
        that no batch has taken yet gives way to this one: its future gives ``None``."""
        future = asyncio.get_running_loop().create_future()
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
        """Forms batches whenever a worker asks for one, until cancelled; the workers are threads of their own."""
        loop = asyncio.get_running_loop()
        for i in range(self.workers):
            name = f"infer-{self.runtime.name}_{i}"
            threading.Thread(target=self._work, args=(loop,), name=name, daemon=True).start()
        self._form.set()
        try:
            while True:
                await self._form.wait()
                self._form.clear()
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

    def _infer(self, piece: list[_Request]) -> np.ndarray:  # worker thread: stacking clips is copying megabytes
        inputs = {n: self.runtime.stack(n, [r.clip.inputs[n] for r in piece]) for n in self.runtime.input_names}
        if self.runtime.spec.task == "person":
            inputs |= box_inputs([r.boxes for r in piece])
        return self.runtime.infer(inputs)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:  # a worker thread
        """Runs pieces back to back, never waiting for the event loop between two of them. With several workers,
        the next batch is formed as soon as the last piece of this one is taken (about a piece before a worker would
        otherwise go idle): forming it when a worker runs dry, the loop first ran the trackers of the clips just
        scored, ~4 % of each worker's time with 18 cameras on 2 cores. One worker runs each batch whole, and asks
        for the next once it is done, so that a batch holds every clip that came while the previous one ran."""
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
                result: np.ndarray | Exception = self._infer(piece)
            except Exception as e:  # a model error fails these clips, not the agent
                result = e
            self._call(loop, self._done, batch, piece, result, time.perf_counter() - batch.started)
            if last and self.workers == 1:
                self._call(loop, self._form.set)

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the agent has stopped
            loop.call_soon_threadsafe(callback, *args)

    def _done(self, batch: _Batch, piece: list[_Request], result: np.ndarray | Exception, seconds: float) -> None:
        name = self.runtime.name
        batch.pieces -= 1
        if isinstance(result, Exception):
            log.error("model %s: inference failed: %s", name, result)
            for r in piece:
                if not r.future.done():
                    r.future.set_exception(result)
            return
        self.metrics.clips_inferred.labels(model=name).inc(len(piece))
        if not batch.pieces:
            self.metrics.inference_seconds.labels(model=name).observe(seconds)
            self.metrics.batch_size.labels(model=name).observe(batch.clips)
        if self.runtime.spec.task == "person":
            result = rows_per_clip(result, [len(r.boxes) for r in piece])
        for r, row in zip(piece, result, strict=True):
            if not r.future.done():
                r.future.set_result((row, seconds * 1000))


@dataclass
class _Batch:
    clips: int
    pieces: int  # not yet finished
    started: float = 0.0  # perf_counter when its first piece started


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
