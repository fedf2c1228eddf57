"""The model file contract: ``actionstream.spec`` metadata inside an exported ONNX file.

Torch-free: the exporter writes a :class:`ModelSpec`, the agent reads it back and checks it against the graph's
inputs and outputs (:func:`checked_spec`), the same way whichever engine opened the file: :func:`read_spec` for an
ONNX Runtime session, :mod:`agent.live.backends` for OpenVINO (which keeps the file's metadata too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class InputSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="graph input name: clip, or slow and fast")
    frames: int = Field(ge=1, description="frames in the clip")
    stride_s: float = Field(gt=0, description="seconds between two sampled frames")

    @property
    def span_s(self) -> float:
        return self.frames * self.stride_s


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
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
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
    none, plus the box inputs for person models) and give float ``[N, labels]`` (``[M, labels]``: one per box)."""
    graph_inputs = {i.name: i for i in inputs}
    expected = [i.name for i in spec.inputs] + (list(BOX_INPUTS) if spec.task == "person" else [])
    if sorted(graph_inputs) != sorted(expected):
        raise SpecError(f"{origin}: graph inputs {sorted(graph_inputs)} differ from spec inputs {expected}")
    for inp in spec.inputs:
        node = graph_inputs[inp.name]
        if node.type != "tensor(uint8)":
            raise SpecError(f"{origin}: input {inp.name!r} has type {node.type}, expected tensor(uint8)")
        want = [inp.frames, spec.size, spec.size, 3] if spec.crop == "centre" else [inp.frames, "H", "W", 3]
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
