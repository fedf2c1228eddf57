"""A loaded model: its file opened on the engine :func:`agent.live.backends.choose` picks, its spec, and a blocking
:meth:`ModelRuntime.infer`.

Engines (:mod:`agent.live.backends`): ``device: auto`` takes ONNX Runtime's CUDA provider when it loads
(onnxruntime-gpu with CUDA and cuDNN present), else OpenVINO when it is installed, else ONNX Runtime's CPU
provider; ``cuda``, ``cpu``, ``openvino`` and ``openvino:GPU`` ask for one.

On CUDA the batches are padded up to a few bucket sizes (powers of two and ``max_batch``) that
:meth:`ModelRuntime.warm_up` runs once, so no live batch meets an untuned shape. On the CPU (either engine) several
``workers`` run pieces of each batch at once, each single-threaded by default (cores ÷ workers): see
:mod:`agent.live.batcher`.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from agent.config import ModelConfig
from agent.errors import SpecError
from agent.live.backends import Backend, Choice, choose, open_backend
from agent.live.device import DeviceArray, stack_into
from agent.spec import ModelSpec, checked_spec


class ModelRuntime:
    """A loaded model: its spec, its engine (``backend``, chosen as ``choice`` says) and a blocking :meth:`infer`."""

    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name, self.config = name, config
        self.choice: Choice = choose(name, config)
        self.device = self.choice.device  # cuda, cpu, openvino or openvino:GPU
        self.backend: Backend = self._open()
        origin = str(config.path)
        self.spec: ModelSpec = checked_spec(self.backend.metadata(), self.backend.inputs, self.backend.outputs, origin)
        self.input_names = [i.name for i in self.spec.inputs]
        self.buckets = self.backend.buckets(config.max_batch)
        self.workers = self.backend.workers(config.workers)
        self._padded: dict[tuple, np.ndarray] = {}  # host staging for stacked and padded batches
        self._on_device: dict[tuple, DeviceArray] = {}  # the same in device memory (clips that live there)

    def _open(self) -> Backend:
        config = self.config
        cores = len(os.sched_getaffinity(0))
        threads = config.threads or (max(1, cores // config.workers) if config.workers > 1 else 0)
        return open_backend(
            config.path,
            self.device,
            precision=config.precision,
            threads=threads,
            workers=config.workers,
            device_id=config.device_id,
            cudnn_conv_algo_search=config.cudnn_conv_algo_search,
        )

    def reload(self) -> None:
        """The model file opened afresh on the same device (after its runs kept failing), run once at batch 1;
        raises what the new engine raises."""
        self.backend = self._open()
        self.warm_up([1])

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """``inputs``: name → array (uint8 ``[N, T, S, S, 3]`` clips, plus any other inputs the graph takes, all
        bound as given); returns float32 scores ``[N, K]``. Up to ``workers`` threads may call this at once."""
        n = len(inputs[self.input_names[0]])
        rows = self.bucket(n) if set(inputs) == set(self.input_names) else n  # extra inputs (boxes): no padding
        if rows != n:
            inputs = {name: self._pad(name, value, rows) for name, value in inputs.items()}
        scores = self.backend.run([self.spec.output.name], inputs)[0]
        return scores[:n] if rows != n else scores

    def bucket(self, n: int) -> int:
        """The batch size ``n`` clips run at (CUDA: the smallest bucket that holds them)."""
        return next((b for b in self.buckets if b >= n), n)

    def stack(self, name: str, arrays: list[np.ndarray]) -> np.ndarray:
        """``np.stack(arrays)`` into a host buffer reused across batches (no fresh megabytes per batch); on CUDA
        the buffer has the bucket's rows, so padding costs no copy. Valid until this thread's next ``stack`` of
        ``name`` (each worker thread has its own buffers). Clips in device memory (``convert: graph`` on CUDA) are
        stacked there, into a device buffer kept the same way."""
        rows = max(self.bucket(len(arrays)), len(arrays))
        first = arrays[0]
        if isinstance(first, DeviceArray):
            key = (threading.get_ident(), name, (rows, *first.shape), first.device)
            staging = self._on_device.get(key)
            if staging is None:
                if len(self._on_device) >= 64:
                    self._on_device.clear()
                staging = self._on_device[key] = DeviceArray.empty((rows, *first.shape), first.device)
            return stack_into(list(arrays), staging)  # bound by address
        staging = self._staging(name, (rows, *first.shape), first.dtype)
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
        if isinstance(value, DeviceArray):  # stacked by :meth:`stack` into a buffer of the bucket's rows
            return value.rows(rows)
        staging = self._staging(name, (rows, *value.shape[1:]), value.dtype)
        if value.base is not staging:  # stacked by :meth:`stack`: already in place
            staging[: len(value)] = value  # rows past it keep old clips: their scores are dropped
        return staging

    def warm_up(self, batch_sizes: list[int]) -> None:
        """Run each batch size once (CUDA: every bucket up to the largest asked for); a model that fails is a
        :class:`SpecError` naming the file."""
        size = self.spec.size
        wanted = set(batch_sizes)
        if self.buckets:
            top = self.bucket(max(wanted))
            wanted = {b for b in self.buckets if b <= top}
        for n in sorted(wanted):
            inputs = {i.name: np.zeros((n, i.images, size, size, i.channels), np.uint8) for i in self.spec.inputs}
            if self.spec.task == "person":  # one box per clip
                inputs |= box_inputs([np.asarray([[0.25, 0.25, 0.75, 0.75]], dtype=np.float32)] * n)
            try:
                self.infer(inputs)
            except Exception as e:  # ONNX Runtime raises its own classes; one line is what the user needs
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SpecError(f"{self.config.path}: does not run on {self.device} at batch {n}: {first}") from None


def box_inputs(boxes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A person model's ``boxes`` and ``box_batch`` inputs for a batch of clips, ``boxes[i]`` ``[M_i, 4]`` of clip i."""
    return {
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
        "box_batch": np.repeat(np.arange(len(boxes), dtype=np.int64), [len(b) for b in boxes]),
    }


def rows_per_clip(scores: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Split a person model's ``[ΣM_i, K]`` scores back into each clip's ``[M_i, K]``."""
    return np.split(scores, np.cumsum(counts)[:-1])
