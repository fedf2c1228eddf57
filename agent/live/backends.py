"""The inference engines a model file runs on, behind one small protocol (:class:`Backend`): ONNX Runtime
(:class:`OrtBackend`: its CUDA or CPU provider) and OpenVINO (:class:`OpenVinoBackend`: the CPU, or an Intel GPU).

:func:`choose` is the one place a model's ``device`` setting becomes an engine, and says why; :func:`open_backend`
opens the file on it. Everything above (:class:`agent.live.runtime.ModelRuntime`, the batcher and its workers, the
person detector) sees only a :class:`Backend`: its graph's inputs and outputs, the file's metadata (the spec is read
and checked from these by :func:`agent.spec.checked_spec`, the same checks for both engines), a blocking ``run``,
and two answers that differ by engine: the batch sizes runs are padded to, and how many runs may be in flight.

``device: auto`` takes ONNX Runtime's CUDA provider when it loads (a 71-byte probe graph finds out once per
process, in milliseconds, before any model is opened), else OpenVINO when it is installed (the ``openvino``
extra), else ONNX Runtime's CPU provider.

OpenVINO runs the ONNX file directly (its ONNX reader, no conversion step, nothing written to disk), in fp32 by
default (``INFERENCE_PRECISION_HINT`` is set: on CPUs with AVX512-BF16 or AMX OpenVINO would otherwise compute in
bf16); ``precision: bf16`` asks for bf16.

Concurrency, chosen by measurement: the batcher's workers, exactly as for ONNX Runtime's CPU provider. Each run
takes an infer request from a pool, and the compiled model has one stream per worker (``NUM_STREAMS = workers``,
the cores split between them), so ``workers`` pieces of a batch run at once. OpenVINO's own asynchronous requests
(``AsyncInferQueue`` on the same two streams) were measured against two worker threads each blocking in ``infer``
(which releases the GIL) on the 2-core host, the demo model, 16 pieces a round, rounds alternating: async ÷
workers 1.025 (median of 10 rounds) with one clip a piece, 0.985 (6 rounds) with four, inside the host's noise.
No gain, and a second scheduling path beside the batcher's (callbacks on OpenVINO's threads instead of workers
taking pieces, the same metrics to keep): so the workers stay. CPU pinning is off (``ENABLE_CPU_PINNING``): at 40
cameras, end to end, 146.9 clips/s without it, 145.3 with it (medians of 3 alternating runs), and unpinned threads
leave the scheduler free to work around the cameras' decoding threads.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import onnxruntime as ort

from agent.config import ModelConfig
from agent.errors import ConfigError, SpecError
from agent.live.device import DeviceArray
from agent.spec import Port, open_session

if TYPE_CHECKING:
    import openvino

log = logging.getLogger("actionstream.runtime")

OPENVINO_DEVICES = {"openvino": "CPU", "openvino:GPU": "GPU"}  # our device → OpenVINO's
# An ONNX graph of one Identity (float [1]): opening it on the CUDA provider tells whether the provider loads.
_PROBE = base64.b64decode(
    "CAgSADo7ChAKAXgSAXkiCElkZW50aXR5EgVwcm9iZVoPCgF4EgoKCAgBEgQKAggBYg8KAXkSCgoICAESBAoCCAFCBAoAEA0="
)
# OpenVINO element types as ONNX Runtime names the same tensor types, so the spec checks read both alike.
_OV_TYPES = {
    "u8": "uint8",
    "i8": "int8",
    "u16": "uint16",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "f16": "float16",
    "bf16": "bfloat16",
    "f32": "float",
    "f64": "double",
    "boolean": "bool",
}


class Backend(Protocol):
    """A model file opened on one engine. ``run`` is called by up to :meth:`workers` threads at once."""

    device: str  # where it runs: cuda or cpu (ONNX Runtime), openvino or openvino:GPU
    inputs: list[Port]
    outputs: list[Port]

    def metadata(self) -> dict[str, str]:
        """The file's metadata (``actionstream.spec`` among it)."""
        ...

    def run(self, names: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One blocking run: ``inputs`` by name, the outputs ``names`` back as host arrays the caller owns."""
        ...

    def buckets(self, max_batch: int) -> list[int]:
        """The batch sizes runs are padded up to ([]: any size runs as it is)."""
        ...

    def workers(self, wanted: int) -> int:
        """How many runs may be in flight at once, given the configured ``workers``."""
        ...


@dataclass(frozen=True)
class Choice:
    """Where a model runs (``device``: cuda, cpu, openvino or openvino:GPU; never auto) and why."""

    device: str
    why: str

    @property
    def engine(self) -> str:
        return "OpenVINO" if self.device in OPENVINO_DEVICES else "ONNX Runtime"


def choose(name: str, config: ModelConfig) -> Choice:
    """The engine and device of model ``name``: ``device`` as configured, or for auto the first that works of
    CUDA (ONNX Runtime), OpenVINO, ONNX Runtime's CPU provider. Raises :class:`SpecError` (naming the file) for a
    device that is not there, :class:`ConfigError` for bf16 where auto picked ONNX Runtime."""
    wanted = config.device
    if wanted == "cpu":
        return Choice("cpu", "device cpu: ONNX Runtime's CPU provider")
    if wanted == "cuda":
        loads, why = cuda_loads()
        if not loads:
            raise SpecError(f"{config.path}: device 'cuda' requested but {why}")
        return Choice("cuda", "device cuda: ONNX Runtime's CUDA provider")
    version = openvino_version()
    if wanted in OPENVINO_DEVICES:
        if version is None:
            raise SpecError(
                f"{config.path}: device {wanted!r} requested but OpenVINO is not installed "
                "(pip install 'actionstream[openvino]')"
            )
        return Choice(wanted, f"device {wanted}: OpenVINO {version}")
    loads, why = cuda_loads()
    if loads:
        choice = Choice("cuda", "auto: ONNX Runtime's CUDA provider loads")
    else:
        if "did not load" in why:  # loud only where a GPU is visible: onnxruntime-gpu is the default install
            level = logging.WARNING if Path("/dev/nvidia0").exists() else logging.INFO
            log.log(level, "model %s: %s; running on the CPU", name, why)
        if version is not None:
            choice = Choice("openvino", f"auto: {why}; OpenVINO {version} is installed")
        else:
            choice = Choice("cpu", f"auto: {why}; OpenVINO is not installed: ONNX Runtime's CPU provider")
    if config.precision != "fp32" and choice.engine != "OpenVINO":
        raise ConfigError(
            f"models.{name}.precision: {config.precision} runs on OpenVINO only, and device auto chose "
            f"{choice.device} ({choice.why}); set device: openvino (and install the openvino extra)"
        )
    return choice


@functools.cache
def cuda_loads() -> tuple[bool, str]:
    """Whether ONNX Runtime's CUDA provider loads here, and in words why (not)."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime has no CUDA provider"
    ort.set_default_logger_severity(4)  # the failure is said once, by the caller
    try:
        session = ort.InferenceSession(_PROBE, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as e:
        return False, f"the CUDA provider did not load ({_first_line(e)})"
    finally:
        ort.set_default_logger_severity(2)
    if session.get_providers()[0] != "CUDAExecutionProvider":
        return False, "the CUDA provider did not load (CUDA/cuDNN missing?)"
    return True, "the CUDA provider loads"


@functools.cache
def openvino_version() -> str | None:
    """OpenVINO's version when it is installed, else None."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


def open_backend(
    path: str | Path,
    device: str,
    *,
    precision: str = "fp32",
    threads: int = 0,
    workers: int = 1,
    device_id: int = 0,
    cudnn_conv_algo_search: str = "HEURISTIC",
) -> Backend:
    """Open ``path`` on ``device`` (a :class:`Choice`'s). ``threads``: per worker (0: the engine's default),
    ``workers``: runs in flight at once (CPU)."""
    if device in OPENVINO_DEVICES:
        return OpenVinoBackend(path, device, precision=precision, threads=threads, streams=workers)
    return OrtBackend(path, device, threads=threads, device_id=device_id, cudnn_conv_algo_search=cudnn_conv_algo_search)


def batch_buckets(max_batch: int) -> list[int]:
    """Powers of two below ``max_batch``, then ``max_batch``: the shapes a CUDA session is tuned for."""
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [max_batch]


class OrtBackend:
    """ONNX Runtime. The CPU provider's threads do not spin between runs (the cameras' decoding threads need those
    cores). On CUDA the inputs go through IO binding into device buffers allocated once per input shape (only the
    uint8 bytes cross the bus; normalisation happens in the graph), and batches are padded to :meth:`buckets`.
    Inputs already in the device's memory (a :class:`agent.live.device.DeviceArray`: clips converted there,
    ``convert: graph``) are bound where they are, on either provider."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        *,
        threads: int = 0,
        device_id: int = 0,
        cudnn_conv_algo_search: str = "HEURISTIC",
    ) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 4  # a failing run is reported by the batcher, once per streak, not by ORT per run
        providers: list[Any] = ["CPUExecutionProvider"]
        if device == "cuda":
            cuda = {"device_id": device_id, "cudnn_conv_algo_search": cudnn_conv_algo_search}
            providers.insert(0, ("CUDAExecutionProvider", cuda))
        ort.set_default_logger_severity(4)  # a failing CUDA load is reported below, in one line
        try:
            self.session = open_session(path, providers, options)
        finally:
            ort.set_default_logger_severity(2)
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            raise SpecError(f"{path}: device 'cuda' requested but the CUDA provider did not load")
        self.device = device
        self.inputs = [Port(i.name, i.type, list(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [Port(o.name, o.type, list(o.shape)) for o in self.session.get_outputs()]
        self.bound_device = ("cuda", device_id) if device == "cuda" else ("cpu", 0)  # where IO-bound outputs live
        self._device_inputs: dict[tuple, ort.OrtValue] = {}  # (name, shape, dtype) -> device buffer
        self._copy_in_place = True

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def buckets(self, max_batch: int) -> list[int]:
        return batch_buckets(max_batch) if self.device == "cuda" else []

    def workers(self, wanted: int) -> int:
        return 1 if self.device == "cuda" else wanted  # CUDA: one stream

    def run(self, names: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        on_device = any(isinstance(v, DeviceArray) for v in inputs.values())
        if self.device != "cuda" and not on_device:
            return self.session.run(names, inputs)
        binding = self.session.io_binding()
        for name, value in inputs.items():
            if isinstance(value, DeviceArray):
                binding.bind_input(name, *value.device, np.uint8, list(value.shape), value.ptr)
                continue
            if self.device != "cuda":
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
                continue
            if self._copy_in_place:
                try:
                    binding.bind_ortvalue_input(name, self._on_device(name, value))
                    continue
                except Exception as e:  # an onnxruntime without in-place device copies: let it copy per run
                    log.warning("device buffers unavailable (%s); binding host inputs", e)
                    self._copy_in_place = False
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in names:
            binding.bind_output(name, *self.bound_device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

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


class OpenVinoBackend:
    """OpenVINO, reading the ONNX file itself. One compiled model with ``streams`` streams (the cores split between
    them), and a pool of infer requests: each run takes one (a new one when all are busy) and gives it back, so
    ``workers`` threads run at once, each on a stream of its own (see the module docstring for why not
    ``AsyncInferQueue``). Inputs are handed over without a copy; outputs are copied out of the request."""

    def __init__(
        self, path: str | Path, device: str = "openvino", *, precision: str = "fp32", threads: int = 0, streams: int = 1
    ) -> None:
        core = _core()
        target = OPENVINO_DEVICES[device]
        if target not in core.available_devices:
            found = ", ".join(core.available_devices) or "none"
            raise SpecError(f"{path}: device {device!r} requested but OpenVINO sees no {target} (devices: {found})")
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"{path}: model file not found")
        try:  # the ONNX reader alone: read_model would try every framework's, and some print to stderr
            onnx_reader = _onnx_frontend()
            model = onnx_reader.convert(onnx_reader.load(str(path)))
        except Exception as e:
            raise SpecError(f"{path}: not a loadable ONNX model ({_ov_message(e)})") from None
        self.device = device
        self.inputs = [_port(p) for p in model.inputs]
        self.outputs = [_port(p) for p in model.outputs]
        self._metadata = _ov_metadata(model)
        properties: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "NUM_STREAMS": streams,
        }
        if target == "CPU":
            cores = len(os.sched_getaffinity(0))
            properties["INFERENCE_NUM_THREADS"] = max(streams, threads * streams if threads else cores)
            properties["ENABLE_CPU_PINNING"] = False  # the cameras' decoding threads share these cores
        try:
            self.compiled = core.compile_model(model, target, properties)
        except Exception as e:
            raise SpecError(f"{path}: OpenVINO cannot compile it for {target} ({_ov_message(e)})") from None
        # What it computes in: f32, or bf16 where asked for and the CPU has it (else OpenVINO computes f32).
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if precision == "bf16" and self.precision != "bf16":
            log.warning("%s: precision bf16 asked for, OpenVINO computes %s on this %s", path, self.precision, target)
        self._requests: queue.SimpleQueue[openvino.InferRequest] = queue.SimpleQueue()

    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def buckets(self, max_batch: int) -> list[int]:
        return []  # dynamic shapes cost OpenVINO's CPU nothing per new batch size worth padding for

    def workers(self, wanted: int) -> int:
        return wanted

    def run(self, names: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            feeds = {name: np.ascontiguousarray(value) for name, value in inputs.items()}
            request.infer(feeds, share_inputs=True, share_outputs=True)
            return [np.array(request.get_tensor(name).data) for name in names]  # copies: the request reuses them
        except RuntimeError as e:  # one line that says what, not which source files said it
            raise RuntimeError(f"OpenVINO: {_ov_message(e)}") from None
        finally:
            self._requests.put(request)


@functools.cache
def _core() -> openvino.Core:
    import openvino

    return openvino.Core()


@functools.cache
def _onnx_frontend() -> Any:
    from openvino.frontend import FrontEndManager

    return FrontEndManager().load_by_framework("onnx")


def _port(port: Any) -> Port:
    """An OpenVINO model input or output as a :class:`Port` (dynamic dimensions are named ``?``)."""
    kind = port.get_element_type().get_type_name()
    shape = [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]
    return Port(port.get_any_name(), f"tensor({_OV_TYPES.get(kind, kind)})", shape)


def _ov_metadata(model: Any) -> dict[str, str]:
    """The ONNX file's metadata, which OpenVINO's ONNX reader keeps under the runtime info's ``framework``."""
    if not model.has_rt_info(["framework"]):
        return {}
    return {key: value.astype(str) for key, value in model.get_rt_info()["framework"].items()}


def _ov_message(e: Exception) -> str:
    """What an OpenVINO exception says, without the lines naming its source files."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from ", "Check '", "FrontEnd API failed"))]
    return (said or lines or [type(e).__name__])[0]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
