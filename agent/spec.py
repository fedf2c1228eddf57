"""The model file contract: ``actionstream.spec`` metadata inside an exported ONNX file.

Torch-free: the exporter writes a :class:`ModelSpec`, the agent reads it back and checks it against the graph's
inputs and outputs (:func:`checked_spec`), the same way whichever engine opened the file: :func:`read_spec` for an
ONNX Runtime session, :mod:`agent.live.backends` for OpenVINO (which keeps the file's metadata too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator

from agent.errors import SpecError

if TYPE_CHECKING:
    import onnxruntime

METADATA_KEY = "actionstream.spec"
SPEC_FORMAT = 1
# Person models (``task: person``) take these inputs besides their clip(s): ``boxes`` float32 ``[M, 4]`` (x1, y1, x2,
# y2 normalised to [0, 1] in the model's frame) and ``box_batch`` int64 ``[M]`` (the clip each box belongs to).
BOX_INPUTS = ("boxes", "box_batch")
# MMAction2's ImageNet normalisation (RGB), the default of every recognizer config it ships.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
# MMAction2's flow configs normalise both flow channels (x, y) with mean 128 and std 128.
FLOW_MEAN = (128.0, 128.0)
FLOW_STD = (128.0, 128.0)
Modality = Literal["rgb", "flow"]
# Optical flow methods: MMAction2's flow_extraction.py has TV-L1 and Farnebäck; DIS is OpenCV's fast one.
FlowMethod = Literal["tvl1", "farneback", "dis"]
FLOW_METHODS: tuple[str, ...] = get_args(FlowMethod)


class Port(NamedTuple):
    """A graph input or output as the checks read it, named and typed as ONNX Runtime's ``NodeArg`` is (whose
    instances pass for one): ``type`` like ``tensor(uint8)``, ``shape`` a list of ints and names (dynamic axes)."""

    name: str
    type: str
    shape: list


def resized_size(width: int, height: int, resize_short: int) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``resize_short``, rounded as MMAction2 (mmcv) rounds:
    ``int(x + 0.5)``. Training, export and the agent all resize with this."""
    scale = resize_short / min(width, height)
    return int(width * scale + 0.5), int(height * scale + 0.5)


class FlowSpec(BaseModel):
    """How a flow input is made (MMAction2's ``tools/misc/flow_extraction.py``): dense optical flow between two grey
    frames ``step_s`` apart, clipped to ``±bound`` pixels and mapped to uint8; ``pairs`` consecutive flow fields per
    sampled instant (TSN's 5x1x3: 5, stacked into 10 channels; SlowOnly's: 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: FlowMethod = Field(default="tvl1", description="tvl1, farneback (MMAction2's) or dis (OpenCV's fast one)")
    bound: float = Field(default=20.0, gt=0, description="flow clipped to ±bound pixels, then mapped to 0-255")
    pairs: int = Field(default=1, ge=1, description="consecutive flow fields stacked at each sampled instant")
    step_s: float = Field(gt=0, description="seconds between the two frames of a pair: one frame of the training data")


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="graph input name: clip, or slow and fast")
    frames: int = Field(ge=1, description="frames in the clip (flow: sampled instants, each with flow.pairs fields)")
    stride_s: float = Field(gt=0, description="seconds between two sampled frames")
    modality: Modality = Field(default="rgb", description="rgb: RGB frames; flow: optical flow (x, y), see flow")
    flow: FlowSpec | None = Field(default=None, description="flow inputs: how the flow is computed")

    @model_validator(mode="after")
    def _flow_needs_its_spec(self) -> InputSpec:
        if (self.modality == "flow") != (self.flow is not None):
            raise ValueError("a flow input needs its `flow` settings, and only a flow input has them")
        return self

    @model_serializer(mode="wrap")
    def _rgb_as_before(self, handler: Any) -> Any:
        """RGB inputs are written without ``modality`` and ``flow``: agents that predate them still read the file
        (and refuse a flow model's, whose input carries keys they do not know)."""
        data = handler(self)
        if self.modality == "rgb" and isinstance(data, dict):
            data.pop("modality", None)
            data.pop("flow", None)
        return data

    @property
    def channels(self) -> int:
        """Channels per image: 3 (RGB) or 2 (flow x, y)."""
        return 2 if self.modality == "flow" else 3

    @property
    def images(self) -> int:
        """Images along the graph input's T axis: ``frames``, times ``flow.pairs`` for flow."""
        return self.frames * (self.flow.pairs if self.flow is not None else 1)

    @property
    def span_s(self) -> float:
        extra = self.flow.pairs * self.flow.step_s if self.flow is not None else 0.0
        return self.frames * self.stride_s + extra


class OutputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "scores"
    activation: Literal["softmax", "sigmoid", "none"] = "softmax"


class SourceSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    checkpoint_sha256: str | None = Field(default=None, description="null for random weights")
    exported_by: str


class ModelSpec(BaseModel):
    """What the agent needs to feed a model: labels, how to sample and preprocess each input."""

    model_config = ConfigDict(frozen=True, extra="allow")  # later formats may add keys

    format: Literal[1] = 1
    arch: str
    labels: list[str] = Field(min_length=1)
    inputs: list[InputSpec] = Field(min_length=1, max_length=2)
    size: int = Field(ge=8, description="square crop side in pixels")
    resize_short: int = Field(ge=8, description="short side before the centre crop")
    mean: tuple[float, ...] = Field(description="per channel: RGB (3), or flow x, y (2)")
    std: tuple[float, ...] = Field(description="per channel, as mean")
    output: OutputSpec = OutputSpec()
    source: SourceSpec
    task: Literal["clip", "person"] = Field(
        default="clip", description="clip: one score row per clip; person: one row per person box (AVA-style)"
    )
    multilabel: bool = Field(default=False, description="independent (sigmoid) scores: several labels at once")
    crop: Literal["centre", "none"] = Field(
        default="centre",
        description="centre: resize the short side to resize_short, crop size x size; "
        "none: resize the short side to resize_short (= size) and keep the whole frame (H, W follow its shape)",
    )
    label_ids: list[int] | None = Field(default=None, description="dataset class ids of the labels (AVA label map)")
    resize_to: tuple[int, int] | None = Field(
        default=None,
        description="(width, height) every frame is resized to, aspect ratio not kept, before the centre crop "
        "(torchvision's video transforms); null: resize the short side to resize_short",
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        names = [i.name for i in self.inputs]
        if names not in (["clip"], ["slow", "fast"]):
            raise ValueError(f"inputs must be named ['clip'] or ['slow', 'fast'], got {names}")
        if len(names) == 2:
            slow, fast = self.inputs
            alpha = fast.frames // slow.frames
            if fast.frames != alpha * slow.frames or abs(slow.stride_s - alpha * fast.stride_s) > 1e-3:
                raise ValueError(
                    f"slow/fast inputs must satisfy fast.frames = alpha*slow.frames and "
                    f"slow.stride_s = alpha*fast.stride_s; got {slow} and {fast}"
                )
        if self.resize_short < self.size:
            raise ValueError(f"resize_short ({self.resize_short}) must be >= size ({self.size})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        channels = {i.channels for i in self.inputs}
        if len(channels) != 1 or len(self.mean) not in channels or len(self.std) not in channels:
            raise ValueError(
                f"mean and std need one value per channel of the inputs ({' or '.join(map(str, sorted(channels)))}),"
                f" got {len(self.mean)} and {len(self.std)}"
            )
        if self.flow_input is not None and (names != ["clip"] or self.task != "clip" or self.crop != "centre"):
            raise ValueError("a flow model has one input, `clip`, is a clip model (task clip) and crops (crop centre)")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be unique")
        if self.crop == "none" and self.size != self.resize_short:
            raise ValueError(f"crop 'none' keeps the whole frame: size ({self.size}) must equal resize_short")
        if self.resize_to is not None and (self.crop == "none" or min(self.resize_to) < self.size):
            raise ValueError(f"resize_to {list(self.resize_to)} needs crop 'centre' and sides >= size ({self.size})")
        if self.multilabel and self.output.activation == "softmax":
            raise ValueError("a multilabel model cannot have a softmax output")
        if self.label_ids is not None and (
            len(self.label_ids) != len(self.labels) or len(set(self.label_ids)) != len(self.label_ids)
        ):
            raise ValueError(f"label_ids must be {len(self.labels)} unique ids, one per label")
        return self

    @property
    def span_s(self) -> float:
        """Seconds of video one prediction looks at (the longest input)."""
        return max(i.span_s for i in self.inputs)

    @property
    def crop_size(self) -> int | None:
        """Side of the centre crop; None when the whole frame is kept (``crop: none``)."""
        return self.size if self.crop == "centre" else None

    @property
    def flow_input(self) -> InputSpec | None:
        """The flow input, if this is a flow model."""
        return next((i for i in self.inputs if i.flow is not None), None)

    @property
    def modality(self) -> Modality:
        return "flow" if self.flow_input is not None else "rgb"

    @property
    def alpha(self) -> int:
        """Frame-rate ratio fast/slow (1 for single-input models)."""
        return self.inputs[-1].frames // self.inputs[0].frames

    def to_json(self) -> str:
        return self.model_dump_json()


def parse_spec(text: str, origin: str) -> ModelSpec:
    """Parse spec JSON; ``origin`` names the file in error messages."""
    try:
        return ModelSpec.model_validate(json.loads(text))
    except json.JSONDecodeError as e:
        raise SpecError(f"{origin}: metadata {METADATA_KEY!r} is not valid JSON ({e})") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg']}" for err in e.errors())
        raise SpecError(f"{origin}: metadata {METADATA_KEY!r} violates the model contract: {problems}") from None


def open_session(
    path: str | Path, providers: list | None = None, options: onnxruntime.SessionOptions | None = None
) -> onnxruntime.InferenceSession:
    """Open an ONNX Runtime session, turning load failures into a :class:`SpecError` naming the file."""
    import onnxruntime

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: model file not found")
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... classes
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"{path}: not a loadable ONNX model ({first_line})") from None


def read_spec(session: onnxruntime.InferenceSession, origin: str) -> ModelSpec:
    """Read and validate the spec of an open session, then check it against the graph."""
    meta = session.get_modelmeta().custom_metadata_map
    return checked_spec(meta, session.get_inputs(), session.get_outputs(), origin)


def checked_spec(
    metadata: Mapping[str, str], inputs: Sequence[Port], outputs: Sequence[Port], origin: str
) -> ModelSpec:
    """The spec in a model file's ``metadata``, validated and checked against the graph's ``inputs`` and ``outputs``."""
    if METADATA_KEY not in metadata:
        raise SpecError(
            f"{origin}: no {METADATA_KEY!r} metadata; export the model with export/to_onnx.py "
            "(or add the spec JSON described in docs/contracts.md)"
        )
    spec = parse_spec(metadata[METADATA_KEY], origin)
    check_graph(spec, inputs, outputs, origin)
    return spec


def load_spec(path: str | Path) -> ModelSpec:
    """Open ``path`` on the CPU and return its validated spec."""
    return read_spec(open_session(path), str(path))


def check_session(spec: ModelSpec, session: onnxruntime.InferenceSession, origin: str) -> None:
    """:func:`check_graph` on an open ONNX Runtime session."""
    check_graph(spec, session.get_inputs(), session.get_outputs(), origin)


def check_graph(spec: ModelSpec, inputs: Sequence[Port], outputs: Sequence[Port], origin: str) -> None:
    """The graph must take uint8 ``[N, T, size, size, 3]`` (N dynamic) per spec input (``[N, T, H, W, 3]`` with crop
    none, plus the box inputs for person models; flow: ``[N, frames·pairs, size, size, 2]``) and give float
    ``[N, labels]`` (``[M, labels]``: one per box)."""
    graph_inputs = {i.name: i for i in inputs}
    expected = [i.name for i in spec.inputs] + (list(BOX_INPUTS) if spec.task == "person" else [])
    if sorted(graph_inputs) != sorted(expected):
        raise SpecError(f"{origin}: graph inputs {sorted(graph_inputs)} differ from spec inputs {expected}")
    for inp in spec.inputs:
        node = graph_inputs[inp.name]
        if node.type != "tensor(uint8)":
            raise SpecError(f"{origin}: input {inp.name!r} has type {node.type}, expected tensor(uint8)")
        if spec.crop == "centre":
            want: list = [inp.images, spec.size, spec.size, inp.channels]
        else:
            want = [inp.frames, "H", "W", 3]
        shape = list(node.shape[1:])
        if spec.crop == "none" and len(shape) == 4:
            shape[1:3] = ["H", "W"]  # follows the camera's aspect ratio: any value, fixed or symbolic
        if len(node.shape) != 5 or shape != want:
            raise SpecError(
                f"{origin}: input {inp.name!r} has shape {node.shape}, expected [N, {', '.join(map(str, want))}]"
            )
        if isinstance(node.shape[0], int):
            raise SpecError(
                f"{origin}: input {inp.name!r} has a fixed batch dimension ({node.shape[0]}); the agent batches "
                "clips across cameras: export the model with a dynamic batch (export/to_onnx.py does)"
            )
    if spec.task == "person":
        for name, dtype, rank in (("boxes", "tensor(float)", 2), ("box_batch", "tensor(int64)", 1)):
            box = graph_inputs[name]
            if box.type != dtype or len(box.shape) != rank or (rank == 2 and box.shape[1] != 4):
                form = "float [M, 4]" if rank == 2 else "int64 [M]"
                raise SpecError(f"{origin}: input {name!r} is {box.type} {box.shape}, expected {form}")
    by_name = {o.name: o for o in outputs}
    if spec.output.name not in by_name:
        raise SpecError(f"{origin}: no output {spec.output.name!r} (graph outputs: {sorted(by_name)})")
    out = by_name[spec.output.name]
    if out.type != "tensor(float)":
        raise SpecError(f"{origin}: output {out.name!r} has type {out.type}, expected tensor(float)")
    if len(out.shape) != 2 or out.shape[1] != len(spec.labels):
        raise SpecError(
            f"{origin}: output {out.name!r} has shape {out.shape} but the spec lists {len(spec.labels)} labels"
        )
