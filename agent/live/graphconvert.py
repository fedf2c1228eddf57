"""``cameras[].convert``: how a camera's sampled frames become the model's input, and where they then live.

``cpu``: swscale on the camera's thread (:class:`agent.frames.Converter`), the clip ring in host memory. ``graph``:
``agent/graphs/yuv_to_rgb.onnx`` (:mod:`agent.yuvgraph`) on the ONNX Runtime provider the model runs on
(:class:`GraphConverter`). The default is ``graph`` where the model runs on CUDA and the camera decodes on NVDEC,
else ``cpu`` (:func:`resolve`).

With the graph on CUDA, a frame is not copied to the host and back:

- NVDEC's frames stay in GPU memory (PyAV 18's ``HWAccel(is_hw_owned=True)``: frames of format ``cuda`` whose
  planes, NV12, expose their device address, ``plane.buffer_ptr``, and row pitch, ``plane.line_size``; PyAV also
  exports them as DLPack). The graph reads the sampled ones there, bound by address as ``[rows, line_size]`` uint8
  (the pitch included; the tables never index past the width), after :class:`agent.live.device.DecoderSync`. A
  frame decoded in software is uploaded once into device buffers allocated per plane shape (``update_inplace``).
- The converted frame is written into device memory; the camera's clip ring (:class:`agent.live.device.DeviceRing`),
  its clips and the model's batch stay there (``on_device``), and the model's session reads the batch by address.
  Person models keep host clips (their detector runs on the key frame): the graph's output is copied to the host.

On the CPU provider the graph runs on the camera's thread, one intra-op thread, reading the decoded planes in place
and writing the model's frame into host memory: the same code, what ``convert: graph`` does without a GPU.
Formats the graph does not read (:data:`agent.yuvgraph.GRAPH_FORMATS`) are converted by swscale, said once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import av
import numpy as np
import onnxruntime as ort

from agent import yuvgraph
from agent.frames import Converter, quarter_turns, region_pixels
from agent.geometry import Box, Polygon
from agent.live.device import HOST, Device, DeviceArray, decoder_sync, graph_session
from agent.spec import ModelSpec

log = logging.getLogger("actionstream.sources")


@dataclass(frozen=True)
class Conversion:
    """A camera entry's conversion, resolved: ``mode`` cpu (swscale) or graph; for the graph, the ONNX Runtime
    device it runs on and whether the clips stay in that device's memory (``on_device``); ``why`` in words."""

    mode: Literal["cpu", "graph"] = "cpu"
    device: str = "cpu"
    device_id: int = 0
    on_device: bool = False
    why: str = "convert: cpu"

    @property
    def where(self) -> Device:
        return (self.device, self.device_id)

    def describe(self) -> str:
        """One line for ``check`` and the API: ``cpu (swscale)``, ``graph on cuda:0, clips on the device``, ..."""
        if self.mode == "cpu":
            return "cpu (swscale)"
        kept = "clips on the device" if self.on_device else "clips in host memory"
        return f"graph on {self.device}:{self.device_id}, {kept}"


CPU = Conversion()


def resolve(
    convert: str | None,
    *,
    model_device: str,
    device_id: int = 0,
    decodes_on_gpu: bool = False,
    person: bool = False,
) -> Conversion:
    """A camera's :class:`Conversion`: ``convert`` as configured (None: the default), the model on
    ``model_device`` (cuda, cpu, openvino...), the camera decoding on NVDEC or not. The graph runs on CUDA when the
    model does (ONNX Runtime's CUDA provider), else on ONNX Runtime's CPU provider."""
    if convert is None:
        if model_device == "cuda" and decodes_on_gpu:
            convert, why = "graph", "default: the model runs on CUDA and the camera decodes on NVDEC"
        else:
            where = "the model runs on CUDA" if model_device == "cuda" else f"the model runs on {model_device}"
            decode = "decodes on NVDEC" if decodes_on_gpu else "decodes in software"
            convert, why = "cpu", f"default: {where}, the camera {decode}"
    else:
        why = f"convert: {convert}"
    if convert == "cpu":
        return Conversion(why=why)
    on_cuda = model_device == "cuda"
    return Conversion(
        "graph",
        device="cuda" if on_cuda else "cpu",
        device_id=device_id if on_cuda else 0,
        on_device=on_cuda and not person,
        why=why,
    )


def planes_format(frame: av.VideoFrame) -> str:
    """The format of a frame's planes (NVDEC's frames in GPU memory: ``cuda``, with NV12 planes)."""
    if frame.format.name == "cuda":
        return frame.sw_format.name if frame.sw_format is not None else "nv12"
    return frame.format.name


class GraphConverter:
    """A camera's frames → the model's frames with the conversion graph (see the module docstring); the interface of
    :class:`agent.frames.Converter`: ``converter(frame)`` (a host array, or a :class:`DeviceArray` with
    ``on_device``), ``region``, ``region_of(frame)``. ``codec()``: the stream's decoder now (chroma siting). Used by
    one thread."""

    def __init__(
        self,
        spec: ModelSpec,
        conversion: Conversion,
        *,
        region: Box | None = None,
        mask: list[Polygon] | tuple[Polygon, ...] = (),
        codec: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.spec, self.conversion, self.codec = spec, conversion, codec
        self.swscale = Converter(spec, region=region, mask=mask, threads=1)  # geometry, masks, other formats
        self.region = self.swscale.region
        self.device = conversion.where
        self.session = graph_session(yuvgraph.YUV_TO_RGB, self.device)
        self._plans: dict[tuple, tuple[dict[str, ort.OrtValue], tuple[int, int, int]]] = {}
        self.upload = self.device[0] != "cpu"  # host planes are uploaded (CUDA), else read in place
        self._uploads: dict[tuple[int, tuple[int, int]], ort.OrtValue] = {}  # by plane and shape
        self._other_formats: set[str] = set()
        self.converted = 0

    def region_of(self, frame: av.VideoFrame) -> Box:
        return self.swscale.region_of(frame)

    def __call__(self, frame: av.VideoFrame) -> Any:
        on_gpu = frame.format.name == "cuda"
        if on_gpu and (self.device[0] != "cuda" or decoder_sync(self.device[1]) is None):
            frame, on_gpu = frame.reformat(format=planes_format(frame)), False  # downloaded: read on the host
        fmt = planes_format(frame)
        if fmt not in yuvgraph.GRAPH_FORMATS:
            return self._by_swscale(frame, fmt)
        tables, shape = self._plan(frame)
        binding = self.session.io_binding()
        for name, value in tables.items():
            binding.bind_ortvalue_input(name, value)
        keep = self._bind_planes(binding, frame, fmt, on_gpu)  # (host views the run reads: alive until it is done)
        out: DeviceArray | np.ndarray
        if self.conversion.on_device:
            out = DeviceArray.empty(shape, self.device)
            binding.bind_output(yuvgraph.OUTPUT, *self.device, np.uint8, list(shape), out.ptr)
        else:
            out = np.empty(shape, np.uint8)
            binding.bind_output(yuvgraph.OUTPUT, "cpu", 0, np.uint8, list(shape), out.ctypes.data)
        self.session.run_with_iobinding(binding)
        del keep
        self.converted += 1
        return out

    def _plan(self, frame: av.VideoFrame) -> tuple[dict[str, ort.OrtValue], tuple[int, int, int]]:
        """The tables for this frame's geometry, on the device (computed and uploaded once per geometry)."""
        turns = quarter_turns(frame)
        whole = (0, 0, frame.width, frame.height)
        region = whole if self.region is None else region_pixels(self.region, frame.width, frame.height, turns)
        # Chroma sited as swscale sees it: the decoder's siting for the whole frame; a region is a frame of its own
        # that says nothing (PyAV cannot set a frame's siting), read as centred. Both conversions agree so.
        siting = yuvgraph.chroma_siting(self.codec()) if region == whole else "center"
        fmt = planes_format(frame)
        key = (frame.width, frame.height, fmt, turns, int(frame.colorspace), int(frame.color_range), siting)
        found = self._plans.get(key)
        if found is None:
            geometry = yuvgraph.geometry(frame, self.spec, region=region, turns=turns, siting=siting)
            mask = self.swscale._raster(frame.width, frame.height, turns) if self.swscale.mask else None
            tables = yuvgraph.plan(geometry, mask, self.swscale.fill.tolist())
            values = {
                name: ort.OrtValue.ortvalue_from_numpy(a, *(HOST if name in yuvgraph.HOST_TABLES else self.device))
                for name, a in tables.items()
            }
            found = self._plans[key] = (values, (*tables["keep"].shape, 3))
        return found

    def _bind_planes(self, binding: Any, frame: av.VideoFrame, fmt: str, on_gpu: bool) -> list[np.ndarray]:
        """Binds the frame's Y, U, V planes as ``[rows, line_size]`` (NV12: its chroma plane as both U and V)."""
        hs, vs = yuvgraph.GRAPH_FORMATS[fmt]
        planes = list(frame.planes)
        if fmt == "nv12":
            planes = [planes[0], planes[1], planes[1]]
        views: list[np.ndarray] = []
        for i, (name, plane) in enumerate(zip(yuvgraph.PLANES, planes, strict=True)):
            rows = frame.height if i == 0 else -(-frame.height >> vs)
            if on_gpu:  # NVDEC's frame where the decoder left it
                if i == 0:
                    sync = decoder_sync(self.device[1])
                    assert sync is not None  # checked by the caller
                    sync.sync()
                binding.bind_input(name, *self.device, np.uint8, [rows, plane.line_size], plane.buffer_ptr)
                continue
            view = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)[: plane.height]
            views.append(view)
            if not self.upload:
                binding.bind_input(name, "cpu", 0, np.uint8, list(view.shape), view.ctypes.data)
            else:  # uploaded once into this camera's device buffer for planes of this shape
                second = fmt == "nv12" and i == 2  # NV12's chroma plane again, as V: uploaded once for both
                key = (1 if second else i, view.shape)
                target = self._uploads.get(key)
                if target is None:
                    target = self._uploads[key] = ort.OrtValue.ortvalue_from_shape_and_type(
                        list(view.shape), np.uint8, *self.device
                    )
                if not second:
                    target.update_inplace(view)
                binding.bind_ortvalue_input(name, target)
        return views

    def _by_swscale(self, frame: av.VideoFrame, fmt: str) -> Any:
        if fmt not in self._other_formats:
            self._other_formats.add(fmt)
            log.info("convert: graph: %s frames are converted by swscale (the graph reads %s)", fmt,
                     ", ".join(yuvgraph.GRAPH_FORMATS))  # fmt: skip
        rgb = self.swscale(frame)
        self.converted += 1
        return DeviceArray.from_numpy(rgb, self.device) if self.conversion.on_device else rgb
