"""Memory on the model's device, and copies inside it, through ONNX Runtime (``cameras[].convert: graph``).

With the model on ONNX Runtime's CUDA provider, a converted frame, a camera's clip ring, a clip and a batch are uint8
buffers ONNX Runtime allocated on the GPU (:class:`DeviceArray`: an ``OrtValue`` and a view of it: shape and byte
offset). Nothing here calls CUDA itself: copying rows of one buffer into another is a run of
``agent/graphs/take_rows.onnx`` (``out = data[indices]``) with both buffers bound by address (IO binding), on the
provider the model runs on. ONNX Runtime synchronises the provider at the end of every run, so what a run wrote is
complete when it returns, for whichever session reads it next. On the CPU provider the same code runs on buffers in
host memory: that is how the tests exercise it.

One exception, :class:`DecoderSync`: NVDEC's frames, read where the decoder left them, were copied there by FFmpeg
on the CUDA context's default stream, which ONNX Runtime's stream does not wait for. Before a graph reads such a
frame the camera's thread waits for that stream (``cuStreamSynchronize`` through the driver library, ``libcuda``,
with ctypes: three calls, the only direct CUDA use in the agent).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from agent.yuvgraph import TAKE_ROWS

log = logging.getLogger("actionstream.device")
Device = tuple[str, int]  # ONNX Runtime's device name ("cuda" or "cpu") and index
HOST: Device = ("cpu", 0)


@functools.cache
def graph_session(path: Path, device: Device) -> ort.InferenceSession:
    """One session of an agent graph per device, shared by every thread (runs are thread-safe); on the CPU each run
    stays on the thread that calls it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    providers: list = ["CPUExecutionProvider"]
    if device[0] == "cuda":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device[1]}))
    return ort.InferenceSession(str(path), options, providers=providers)


class DeviceArray:
    """uint8 ``shape`` at byte ``offset`` of a buffer ONNX Runtime allocated on ``device``. Views share the buffer
    (which lives while any of them does); :meth:`take` and :meth:`numpy` copy."""

    __slots__ = ("value", "shape", "offset", "device")

    def __init__(self, value: ort.OrtValue, shape: tuple[int, ...], device: Device, offset: int = 0) -> None:
        self.value, self.shape, self.device, self.offset = value, tuple(shape), device, offset

    @classmethod
    def empty(cls, shape: tuple[int, ...], device: Device) -> DeviceArray:
        return cls(ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.uint8, *device), shape, device)

    @classmethod
    def from_numpy(cls, array: np.ndarray, device: Device) -> DeviceArray:
        """A copy of a host array on the device."""
        array = np.ascontiguousarray(array, dtype=np.uint8)
        return cls(ort.OrtValue.ortvalue_from_numpy(array, *device), array.shape, device)

    @property
    def ptr(self) -> int:
        return int(self.value.data_ptr()) + self.offset

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:])

    @property
    def capacity(self) -> int:
        """Rows of this shape the buffer holds from ``offset`` on."""
        return (math.prod(self.value.shape()) - self.offset) // max(1, self.row_bytes)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> DeviceArray:
        if not 0 <= row < len(self):
            raise IndexError(row)
        return DeviceArray(self.value, self.shape[1:], self.device, self.offset + row * self.row_bytes)

    def rows(self, n: int) -> DeviceArray:
        """The first ``n`` rows (at most :attr:`capacity`): a view, also past ``len(self)`` (padding)."""
        if n > self.capacity:
            raise ValueError(f"{n} rows of {self.row_bytes} bytes do not fit in the buffer ({self.capacity})")
        return DeviceArray(self.value, (n, *self.shape[1:]), self.device, self.offset)

    def reshape(self, shape: tuple[int, ...]) -> DeviceArray:
        """The same bytes as ``shape``."""
        if math.prod(shape) != math.prod(self.shape):
            raise ValueError(f"cannot view {self.shape} as {shape}")
        return DeviceArray(self.value, shape, self.device, self.offset)

    def take(self, rows: np.ndarray | list[int]) -> DeviceArray:
        """A new buffer of these rows, in this order."""
        index = np.asarray(rows, dtype=np.int64)
        out = DeviceArray.empty((len(index), *self.shape[1:]), self.device)
        copy_rows(self, index, out)
        return out

    def numpy(self) -> np.ndarray:
        """A host copy."""
        out = np.empty(self.shape, np.uint8)
        copy_rows(self, np.arange(len(self), dtype=np.int64), out)
        return out

    def __repr__(self) -> str:
        return f"DeviceArray({self.shape}, {self.device[0]}:{self.device[1]})"


def copy_rows(src: DeviceArray, rows: np.ndarray, dst: DeviceArray | np.ndarray, at: int = 0) -> None:
    """``dst[at : at + len(rows)] = src[rows]``, on ``src``'s device (``dst`` a host array: copied back to it)."""
    session = graph_session(TAKE_ROWS, src.device)
    binding = session.io_binding()
    width = src.row_bytes
    binding.bind_input("data", src.device[0], src.device[1], np.uint8, [len(src), width], src.ptr)
    binding.bind_cpu_input("indices", rows)
    if isinstance(dst, DeviceArray):
        where, ptr = dst.device, dst.ptr + at * dst.row_bytes
    else:
        where, ptr = HOST, dst.ctypes.data + at * width
    binding.bind_output("out", where[0], where[1], np.uint8, [len(rows), width], ptr)
    session.run_with_iobinding(binding)


class DeviceRing:
    """A camera's clip ring in the device's memory (:class:`agent.live.clips.ClipBuffer`'s ``ring``):
    ``ring[k] = frame`` copies a converted frame into slot ``k``; ``ring[slots]`` copies those slots out, a clip."""

    def __init__(self, shape: tuple[int, ...], device: Device) -> None:
        self.array = DeviceArray.empty(shape, device)
        self.shape = self.array.shape

    def __setitem__(self, slot: int, frame: DeviceArray) -> None:
        copy_rows(frame.reshape((1, math.prod(frame.shape))), np.zeros(1, np.int64), self.array, at=slot)

    def __getitem__(self, slots: np.ndarray) -> DeviceArray:
        return self.array.take(slots)


def ring_factory(device: Device) -> Callable[[tuple[int, ...]], DeviceRing]:
    """``ClipBuffer(ring=...)``: a ring of the shape asked for, on ``device``."""
    return functools.partial(DeviceRing, device=device)


def stack_into(arrays: list[DeviceArray], staging: DeviceArray) -> DeviceArray:
    """The clips ``arrays`` (each ``[T, H, W, 3]``) copied into rows of ``staging`` (``[B, T, H, W, 3]``, B at least
    their number); returns the first ``len(arrays)`` rows (a view: the rest pads)."""
    first = np.zeros(1, np.int64)
    for i, array in enumerate(arrays):
        copy_rows(array.reshape((1, math.prod(array.shape))), first, staging, at=i)
    return staging.rows(len(arrays))


class DecoderSync:
    """Waits for the work FFmpeg queued on a CUDA device's default stream in the primary context (NVDEC's copy of a
    decoded frame), so a graph may read the frame in place. ``sync()`` runs on the camera's thread; the primary
    context is made current there once (FFmpeg pushes and pops its own around each call)."""

    def __init__(self, device_id: int) -> None:
        cuda = ctypes.CDLL("libcuda.so.1")
        self._push = getattr(cuda, "cuCtxPushCurrent_v2", None) or cuda.cuCtxPushCurrent  # (cuda.h's names)
        self._synchronize = cuda.cuStreamSynchronize
        self._check(cuda.cuInit(0), "cuInit")
        device, context = ctypes.c_int(), ctypes.c_void_p()
        self._check(cuda.cuDeviceGet(ctypes.byref(device), device_id), "cuDeviceGet")
        self._check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
        self._context = context
        self._current = threading.local()

    def sync(self) -> None:
        if not getattr(self._current, "pushed", False):
            self._check(self._push(self._context), "cuCtxPushCurrent")
            self._current.pushed = True
        self._check(self._synchronize(ctypes.c_void_p(0)), "cuStreamSynchronize")  # the legacy default stream

    @staticmethod
    def _check(status: int, call: str) -> None:
        if status != 0:
            raise RuntimeError(f"{call} failed (CUresult {status})")


@functools.cache
def decoder_sync(device_id: int) -> DecoderSync | None:
    """The :class:`DecoderSync` of a CUDA device, or None (said once) when the driver library cannot give one."""
    try:
        return DecoderSync(device_id)
    except (OSError, RuntimeError, AttributeError) as e:
        log.warning(
            "cuda:%d: cannot wait for the decoder's stream (%s); NVDEC frames are downloaded instead", device_id, e
        )
        return None
