"""A loaded model: one ONNX Runtime session per model file, its spec, and a blocking :meth:`ModelRuntime.infer`.

Providers: ``device: auto`` takes the CUDA execution provider when it loads (onnxruntime-gpu with CUDA and cuDNN
present), else the CPU; ``cuda`` requires it; ``cpu`` never tries.

On CUDA the uint8 clips go through IO binding into device buffers allocated once per input shape (only the uint8
bytes cross the bus; normalisation happens in the graph), and batches are padded up to a few bucket sizes (powers of
two and ``max_batch``) that :meth:`ModelRuntime.warm_up` runs once, so no live batch meets an untuned shape. On the
CPU, ONNX Runtime's threads do not spin between runs: the cameras' decoding threads need those cores. With several
``workers`` each session runs single-threaded by default (cores ÷ workers): see :mod:`agent.live.batcher`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from agent.config import ModelConfig
from agent.errors import SpecError
from agent.spec import ModelSpec, open_session, read_spec

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
        providers = providers_for(config)
        self.session = self._open(providers)
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

    def _open(self, providers: list) -> ort.InferenceSession:
        config = self.config
        options = ort.SessionOptions()
        cores = len(os.sched_getaffinity(0))
        threads = config.threads or (max(1, cores // config.workers) if config.workers > 1 else 0)
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 4  # a failing run is reported by the batcher, once per streak, not by ORT per run
        ort.set_default_logger_severity(4)  # a failing CUDA load is reported by the caller, in one line
        try:
            return open_session(config.path, providers, options)
        finally:
            ort.set_default_logger_severity(2)

    def reload(self) -> None:
        """A fresh session for the same file (after runs kept failing), run once at batch 1; raises what the new
        session raises."""
        session = self._open(providers_for(self.config))
        self._device_inputs.clear()
        self.session = session
        self.warm_up([1])

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
        """Run each batch size once (CUDA: every bucket up to the largest asked for); a model that fails is a
        :class:`SpecError` naming the file."""
        size = self.spec.size
        wanted = set(batch_sizes)
        if self.buckets:
            top = self.bucket(max(wanted))
            wanted = {b for b in self.buckets if b <= top}
        for n in sorted(wanted):
            inputs = {i.name: np.zeros((n, i.frames, size, size, 3), np.uint8) for i in self.spec.inputs}
            if self.spec.task == "person":  # one box per clip
                inputs |= box_inputs([np.asarray([[0.25, 0.25, 0.75, 0.75]], dtype=np.float32)] * n)
            try:
                self.infer(inputs)
            except Exception as e:  # ONNX Runtime raises its own classes; one line is what the user needs
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SpecError(f"{self.config.path}: does not run on {self.device} at batch {n}: {first}") from None


def batch_buckets(max_batch: int) -> list[int]:
    """Powers of two below ``max_batch``, then ``max_batch``: the shapes a CUDA session is tuned for."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


def box_inputs(boxes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """A person model's ``boxes`` and ``box_batch`` inputs for a batch of clips, ``boxes[i]`` ``[M_i, 4]`` of clip i."""
    return {
        "boxes": np.concatenate(boxes).astype(np.float32).reshape(-1, 4),
        "box_batch": np.repeat(np.arange(len(boxes), dtype=np.int64), [len(b) for b in boxes]),
    }


def rows_per_clip(scores: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Split a person model's ``[ΣM_i, K]`` scores back into each clip's ``[M_i, K]``."""
    return np.split(scores, np.cumsum(counts)[:-1])
