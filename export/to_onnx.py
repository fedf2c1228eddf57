"""Export a model to one self-describing ONNX file (the model file contract of docs/contracts.md).

    python export/to_onnx.py --arch slowfast_r50_4x16 --checkpoint ckpt.pth --num-classes 400 \\
        --labels labels.txt --out model.onnx

The graph takes uint8 NTHWC RGB clips (flow models: ``[N, T, H, W, 2]`` flow x, y as MMAction2 quantises it),
normalises them and permutes inside, and returns softmax scores; the ``actionstream.spec`` metadata carries labels,
sampling and preprocessing (for flow: how the flow is made, ``--flow-method`` and ``--flow-bound``). After export,
ONNX Runtime is run against PyTorch on the same input and the export fails if they disagree.

Each arch brings its config's sampling (frames, interval; 2D models: ``--segments`` over ``--window-s``), test
crop (``--size`` scales it: the resize follows in proportion), mean and std; docs/models.md lists them.

Person (AVA-style) models (``--arch ava_...``) also take ``boxes`` [M, 4] (x1, y1, x2, y2 normalised to the whole
frame) and ``box_batch`` [M] and return sigmoid ``scores`` [M, labels]; ``--labels`` is then an AVA label map
(``id: name`` lines) naming the head outputs to keep, and frames keep their aspect ratio (no crop).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch import Tensor, nn

from agent import __version__
from agent.errors import ActionstreamError, ExportError
from agent.spec import (
    BOX_INPUTS,
    FLOW_METHODS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    METADATA_KEY,
    FlowSpec,
    InputSpec,
    ModelSpec,
    OutputSpec,
    SourceSpec,
    load_spec,
)
from export.checkpoints import load_weights, read_checkpoint, sha256_of
from export.models import ARCHS, PERSON_ARCHS, build_model

TOLERANCE = {False: 1e-4, True: 1e-2}  # max |Δ probability|, fp32 / fp16
ALL_ARCHS = {**ARCHS, **PERSON_ARCHS}
AVA_CLASSES = 81  # MMAction2's AVA heads: class 0 is background, 1..80 the AVA action ids


class ClipsToScores(nn.Module):
    """uint8 ``[N, T, H, W, C]`` clip(s) → probabilities ``[N, K]``; the graph the agent runs.

    C is 3 (RGB) or 2 (flow x, y). 2D models on flow with ``pairs`` > 1 (TSN 5x1x3) take ``T = segments · pairs``
    and stack each segment's fields into ``2 · pairs`` channels, x and y interleaved (MMAction2's ``FormatShape``)."""

    mean: Tensor  # buffers
    std: Tensor

    def __init__(
        self,
        model: nn.Module,
        kind: str,
        *,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        fp16: bool = False,
        pairs: int = 1,
    ) -> None:
        super().__init__()
        self.model, self.kind, self.fp16, self.pairs = model, kind, fp16, pairs
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def _prepare(self, clip: Tensor) -> Tensor:
        x = (clip.float() - self.mean) / self.std  # same operations, same order as MMAction2's preprocessor
        if self.kind == "2d":
            x = x.permute(0, 1, 4, 2, 3)  # N T C H W
            if self.pairs > 1:  # N (S·P) 2 H W → N S (P·2) H W: x0, y0, x1, y1, ...
                x = x.unflatten(1, (-1, self.pairs)).flatten(2, 3)
        else:
            x = x.permute(0, 4, 1, 2, 3)
        return x.half() if self.fp16 else x

    def forward(self, *clips: Tensor) -> Tensor:
        logits = self.model(*(self._prepare(c) for c in clips))
        return torch.softmax(logits.float(), dim=1)


class ClipsBoxesToScores(ClipsToScores):
    """uint8 clip(s) ``[N, T, H, W, 3]`` + ``boxes [M, 4]`` (normalised x1, y1, x2, y2) + ``box_batch [M]`` →
    sigmoid probabilities ``[M, len(label_ids)]``: column k is head output ``label_ids[k]``."""

    def __init__(self, model: nn.Module, kind: str, label_ids: list[int], *, fp16: bool = False) -> None:
        super().__init__(model, kind, fp16=fp16)  # AVA configs: ImageNet mean and std
        self.register_buffer("label_ids", torch.tensor(label_ids, dtype=torch.int64))

    def forward(self, *inputs: Tensor) -> Tensor:
        *clips, boxes, box_batch = inputs
        height, width = clips[0].shape[2], clips[0].shape[3]
        x1, y1, x2, y2 = boxes.unbind(dim=1)  # → pixels of the input frame
        pixels = (x1 * width, y1 * height, x2 * width, y2 * height)
        rois = torch.stack((box_batch.to(torch.float32), *pixels), dim=1)
        logits = self.model(*(self._prepare(c) for c in clips), rois=rois)
        return torch.sigmoid(logits.float().index_select(1, self.label_ids))


def model_inputs(
    arch: str,
    *,
    segments: int,
    window_s: float,
    fps: float,
    flow_method: str | None = None,
    flow_bound: float | None = None,
    pairs: int | None = None,
) -> list[InputSpec]:
    a = ALL_ARCHS[arch]
    flow: dict = {}
    if a.modality == "flow":  # a flow field's two frames are one frame of the training data apart
        settings = {"method": flow_method or a.flow_method, "bound": flow_bound or a.flow_bound}
        spec = FlowSpec.model_validate(settings | {"pairs": pairs or a.pairs, "step_s": 1 / fps})
        flow = {"modality": "flow", "flow": spec}
    if a.kind == "2d":
        return [InputSpec(name="clip", frames=segments, stride_s=window_s / segments, **flow)]
    return [InputSpec(name=s.name, frames=s.frames, stride_s=s.interval / fps, **flow) for s in a.inputs]


def real_looking_clips(spec: ModelSpec, batch: int, seed: int = 0, *, width: int | None = None) -> list[Tensor]:
    """Smooth random scenes drifting over time, plus sensor noise: activations in a realistic range.

    Frames are ``size x size``, or ``size x width`` (height x width) where given (person models: no crop). Flow
    models get :func:`real_looking_flow`."""
    if spec.flow_input is not None:
        return [real_looking_flow(spec, batch, seed)]
    g = torch.Generator().manual_seed(seed)
    longest = max(i.frames for i in spec.inputs)
    height, width = spec.size, width or spec.size
    scene = torch.rand(batch, 3, 6, 6, generator=g) * 255
    scene = nn.functional.interpolate(scene, size=(height * 2, width * 2), mode="bicubic")
    frames = []
    for t in range(longest):
        shift = t * min(height, width) // (2 * longest)
        frames.append(scene[:, :, shift : shift + height, shift : shift + width])
    video = torch.stack(frames, dim=1).permute(0, 1, 3, 4, 2)  # N T H W C
    video = (video + torch.randn(video.shape, generator=g) * 4).clamp(0, 255).to(torch.uint8)
    step = {i.name: longest // i.frames for i in spec.inputs}
    return [video[:, :: step[i.name]][:, : i.frames].contiguous() for i in spec.inputs]


def real_looking_flow(spec: ModelSpec, batch: int, seed: int = 0) -> Tensor:
    """uint8 ``[batch, images, size, size, 2]`` as quantised flow looks: 128 (still) almost everywhere, smooth
    blobs of motion a few pixels strong in both directions, a little noise."""
    inp = spec.flow_input
    assert inp is not None
    g = torch.Generator().manual_seed(seed)
    shape = (batch * inp.images, 2, 5, 5)
    blobs = nn.functional.interpolate(torch.randn(shape, generator=g), size=(spec.size, spec.size), mode="bicubic")
    flow = 128 + 30 * blobs * (blobs.abs() > 0.5) + torch.randn(blobs.shape, generator=g) * 2
    flow = flow.clamp(0, 255).to(torch.uint8).reshape(batch, inp.images, 2, spec.size, spec.size)
    return flow.permute(0, 1, 3, 4, 2).contiguous()


def read_labels(path: Path, num_classes: int | None = None) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: cannot read labels file ({e})") from None
    labels = [line.strip() for line in lines if line.strip()]
    if num_classes is not None and len(labels) != num_classes:
        raise ExportError(f"{path}: has {len(labels)} labels (one per non-empty line), expected {num_classes}")
    if len(set(labels)) != len(labels):
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        raise ExportError(f"{path}: duplicate labels: {', '.join(dupes)}")
    return labels


def read_label_map(path: Path, num_classes: int) -> tuple[list[int], list[str]]:
    """An AVA label map (``id: name`` per line, MMAction2's ``tools/data/ava/label_map.txt``) → (ids, names).

    Ids must be head outputs other than the background 0 (1 .. num_classes - 1); ids and names unique."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: cannot read label map ({e})") from None
    ids: list[int] = []
    names: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        name = name.strip()
        if not sep or not key.strip().isdigit() or not name:
            raise ExportError(f"{path}:{number}: expected 'id: name' (an AVA label map line), got {line.strip()!r}")
        class_id = int(key)
        if not 1 <= class_id < num_classes:
            raise ExportError(
                f"{path}:{number}: class id {class_id} is outside 1..{num_classes - 1} "
                f"(the head has {num_classes} outputs; 0 is the background)"
            )
        if class_id in ids or name in names:
            raise ExportError(f"{path}:{number}: duplicate {'id' if class_id in ids else 'label'} in {line.strip()!r}")
        ids.append(class_id)
        names.append(name)
    if not ids:
        raise ExportError(f"{path}: empty label map (expected 'id: name' lines)")
    return ids, names


def example_boxes(batch: int) -> tuple[Tensor, Tensor]:
    """Person boxes (normalised x1, y1, x2, y2) spread over the clips of a batch, some touching the border."""
    boxes = torch.tensor([[0.1, 0.2, 0.45, 0.95], [0.5, 0.1, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0], [0.62, 0.55, 0.7, 0.73]])
    return boxes, torch.arange(len(boxes)) % batch


def export(args: argparse.Namespace) -> float:
    """Run the export; returns max |Δ probability| between ONNX Runtime and PyTorch."""
    step = _Progress(5)
    if args.arch not in ALL_ARCHS:
        raise ExportError(f"--arch: unknown arch {args.arch!r}; expected one of: {', '.join(ALL_ARCHS)}")
    person = args.arch in PERSON_ARCHS
    arch = ALL_ARCHS[args.arch]
    geometry = arch.geometry(args.size)
    if args.size is None:
        args.size = 256 if person else geometry.size
    if args.segments is None:
        args.segments = arch.segments
    for flag, value, low in (("--segments", args.segments, 1), ("--size", args.size, 32), ("--opset", args.opset, 18)):
        if value < low:
            raise ExportError(f"{flag}: must be at least {low}, got {value}")
    for flag, value in (("--window-s", args.window_s), ("--fps", args.fps), ("--num-classes", args.num_classes or 1)):
        if value <= 0:
            raise ExportError(f"{flag}: must be positive, got {value}")

    for flag, name, value in (("--depth", "depth", args.depth), ("--width", "width", args.width)):
        if value and not arch.takes(name):
            raise ExportError(f"{flag}: {args.arch} has no {name} to set")

    ckpt = read_checkpoint(args.checkpoint) if args.checkpoint else None
    model_args = dict(ckpt.model_args) if ckpt else {}
    if args.depth:
        model_args["depth"] = args.depth
    if args.width:
        model_args["width"] = args.width
    if arch.takes("segments"):  # TSM: the backbone is built for the segment count it is fed
        model_args["segments"] = args.segments
    if arch.takes("size"):  # C3D: fc6 takes the flattened features of the crop
        model_args["size"] = args.size
    if arch.modality == "flow":
        _flow_defaults(args, arch, ckpt)
    elif args.flow_method or args.flow_bound:
        raise ExportError(f"--flow-method/--flow-bound: {args.arch} takes RGB frames, not flow")
    if person:
        num_classes = args.num_classes or model_args.get("num_classes") or (ckpt and ckpt.num_classes) or AVA_CLASSES
    else:
        from_labels = len(read_labels(args.labels)) if args.labels else None
        num_classes = args.num_classes or model_args.get("num_classes") or (ckpt and ckpt.num_classes)
        num_classes = num_classes or from_labels or 400
    model_args["num_classes"] = num_classes
    label_ids = None
    if person:
        if not args.labels:
            raise ExportError("--labels: person models need an AVA label map ('id: name' lines, e.g. label_map.txt)")
        label_ids, labels = read_label_map(args.labels, num_classes)
    elif args.labels:
        labels = read_labels(args.labels, num_classes)
    elif ckpt and ckpt.labels and len(ckpt.labels) == num_classes:
        labels = ckpt.labels
    else:
        raise ExportError(f"--labels: a labels file with {num_classes} lines is required (the checkpoint has none)")

    step(f"building {args.arch} ({num_classes} classes, {model_args})")
    model = build_model(args.arch, **model_args).eval()
    if ckpt:
        step(f"loading {ckpt.path}")
        load_weights(model, ckpt, reset_head=args.reset_head)
    else:
        step("no --checkpoint: exporting RANDOM weights (fine for tests, useless for recognition)")

    spec = clip_spec(
        args.arch,
        labels,
        label_ids=label_ids,
        size=args.size,
        segments=args.segments,
        window_s=args.window_s,
        fps=args.fps,
        flow_method=args.flow_method,
        flow_bound=args.flow_bound,
        pairs=model_args.get("pairs"),
        source=SourceSpec(
            checkpoint_sha256=sha256_of(ckpt.path) if ckpt else None, exported_by=f"actionstream {__version__}"
        ),
    )
    kind = arch.kind
    exported = copy.deepcopy(model).half() if args.fp16 else model  # the fp32 model stays the reference
    pairs = spec.flow_input.flow.pairs if spec.flow_input and spec.flow_input.flow else 1
    graph = _graph(exported, kind, label_ids, fp16=args.fp16, mean=spec.mean, std=spec.std, pairs=pairs).eval()
    step(f"exporting to {args.out} (opset {args.opset}{', fp16' if args.fp16 else ''})")
    _write_onnx(graph, spec, args.out, args.opset)

    step("checking the file against the model contract")
    load_spec(args.out)

    step("comparing ONNX Runtime with PyTorch")
    if person:  # wider than high, as cameras are; boxes over clips 0 and 1 of 3
        feeds = [*real_looking_clips(spec, batch=3, width=args.size * 16 // 9), *example_boxes(2)]
    else:
        feeds = real_looking_clips(spec, batch=3)
    with torch.no_grad():
        reference = _graph(model, kind, label_ids, mean=spec.mean, std=spec.std, pairs=pairs).eval()(*feeds).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    names = [i.name for i in spec.inputs] + (list(BOX_INPUTS) if person else [])
    got = session.run(["scores"], {name: x.numpy() for name, x in zip(names, feeds, strict=True)})[0]
    delta = float(np.abs(got - reference).max())
    same_top = bool((got.argmax(1) == reference.argmax(1)).all())
    print(f"max |Δprob| = {delta:.3g} (tolerance {args.tolerance:g}), same top-1: {same_top}", flush=True)
    if delta > args.tolerance:
        raise ExportError(f"{args.out}: ONNX Runtime and PyTorch disagree by {delta:.3g} > {args.tolerance:g}")
    return delta


def clip_spec(
    arch: str,
    labels: list[str],
    *,
    label_ids: list[int] | None = None,
    size: int | None = None,
    segments: int | None = None,
    window_s: float = 4.0,
    fps: float = 30.0,
    flow_method: str | None = None,
    flow_bound: float | None = None,
    pairs: int | None = None,
    source: SourceSpec | None = None,
) -> ModelSpec:
    """The spec an export of ``arch`` gets: its sampling, test geometry (``size``: another crop, the resize scaled
    in proportion), mean and std; flow archs: how the flow is made (default: the arch's, MMAction2's TV-L1, ±20)."""
    source = source or SourceSpec(exported_by=f"actionstream {__version__}")
    segments = segments or ALL_ARCHS[arch].segments
    inputs = model_inputs(
        arch, segments=segments, window_s=window_s, fps=fps, flow_method=flow_method, flow_bound=flow_bound, pairs=pairs
    )
    if arch in PERSON_ARCHS:  # MMAction2's AVA test pipeline: Resize(scale=(-1, size)), the whole frame, no crop
        size = size or 256
        return ModelSpec(
            arch=arch, labels=labels, inputs=inputs, size=size, resize_short=size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            output=OutputSpec(activation="sigmoid"), source=source, task="person", multilabel=True, crop="none",
            label_ids=label_ids,
        )  # fmt: skip
    a = ALL_ARCHS[arch]
    geometry = a.geometry(size)
    return ModelSpec(
        arch=arch,
        labels=labels,
        inputs=inputs,
        size=geometry.size,
        resize_short=geometry.resize_short,
        resize_to=geometry.resize_to,
        mean=a.mean,
        std=a.std,
        source=source,
    )


def _flow_defaults(args: argparse.Namespace, arch, ckpt) -> None:
    """A flow model's flow settings: the flags, else what a trainer checkpoint was trained with, else the arch's."""
    trained = (ckpt.extra.get("config") or {}).get("data", {}) if ckpt is not None else {}
    if args.flow_method is None:
        args.flow_method = trained.get("flow_method") or arch.flow_method
    if args.flow_bound is None:
        args.flow_bound = trained.get("flow_bound") or arch.flow_bound
    if args.flow_method not in FLOW_METHODS:
        raise ExportError(f"--flow-method: {args.flow_method!r} is not one of {', '.join(FLOW_METHODS)}")
    if args.flow_bound <= 0:
        raise ExportError(f"--flow-bound: must be positive, got {args.flow_bound}")


def _graph(
    model: nn.Module,
    kind: str,
    label_ids: list[int] | None,
    *,
    fp16: bool = False,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    pairs: int = 1,
) -> ClipsToScores:
    if label_ids is None:
        return ClipsToScores(model, kind, mean=mean, std=std, fp16=fp16, pairs=pairs)
    return ClipsBoxesToScores(model, kind, label_ids, fp16=fp16)


def _write_onnx(graph: nn.Module, spec: ModelSpec, out: Path, opset: int) -> None:
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    names = [i.name for i in spec.inputs]
    batch = torch.export.Dim("N", min=1, max=4096)
    if spec.task == "person":  # frames of any size (whole frames), any number of boxes
        example = (*real_looking_clips(spec, batch=2, width=spec.size * 4 // 3), *example_boxes(2))
        height, width = torch.export.Dim("H", min=16, max=8192), torch.export.Dim("W", min=16, max=8192)
        boxes = torch.export.Dim("M", min=1, max=65536)
        dims = [{0: batch, 2: height, 3: width} for _ in names] + [{0: boxes}, {0: boxes}]
        names += list(BOX_INPUTS)
    else:
        example = tuple(real_looking_clips(spec, batch=2))
        dims = [{0: batch} for _ in names]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*axis name.*")  # the exporter's note about naming Dim N
        program = torch.onnx.export(
            graph,
            example,
            input_names=names,
            output_names=["scores"],
            opset_version=opset,
            dynamo=True,
            external_data=False,
            dynamic_shapes=(tuple(dims),),  # forward(*inputs): one varargs entry
            verbose=False,
        )
    assert program is not None  # dynamo=True always gives the program
    proto = program.model_proto
    for node in proto.graph.node:  # the exporter's provenance (stack traces with local paths) stays here
        del node.metadata_props[:]
        node.doc_string = ""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, spec.to_json()
    proto.producer_name = "actionstream"
    onnx.save_model(proto, str(out), save_as_external_data=False)


class _Progress:
    def __init__(self, total: int) -> None:
        self.n, self.total, self.t0 = 0, total, time.monotonic()

    def __call__(self, what: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total} {time.monotonic() - self.t0:5.1f}s] {what}", flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actionstream-export", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, help=f"one of: {', '.join(ALL_ARCHS)}")
    p.add_argument("--checkpoint", type=Path, help="MMAction2 or actionstream checkpoint; omit for random weights")
    p.add_argument("--num-classes", type=int, help="classes (default: the checkpoint's, else the labels file's)")
    p.add_argument(
        "--labels",
        type=Path,
        help="text file, one label per line, in class order; person (ava_*) models: an AVA label map ('id: name')",
    )
    p.add_argument("--out", type=Path, required=True, help="output .onnx file")
    p.add_argument(
        "--segments", type=int, help="TSN/TSM: frames (segments) per clip (default: the arch's, 8; tsm_r50_1x1x16: 16)"
    )
    p.add_argument("--window-s", type=float, default=4.0, help="TSN/TSM: seconds the segments span (default 4)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of the training data (Kinetics: 30)")
    p.add_argument(
        "--size",
        type=int,
        help="crop size in pixels (default: the arch's test crop, 224 for most); person models: short side (256)",
    )
    p.add_argument("--depth", type=int, choices=(18, 34, 50, 101, 152), help="ResNet depth (default: the arch's)")
    p.add_argument("--width", type=int, help="base channels (default: the arch's, 64 for ResNets)")
    p.add_argument(
        "--flow-method",
        choices=FLOW_METHODS,
        help="flow models: how the training data's flow was made (default: a trainer checkpoint's, else tvl1)",
    )
    p.add_argument("--flow-bound", type=float, help="flow models: the flow's ±bound in pixels (default 20)")
    p.add_argument("--reset-head", action="store_true", help="drop the checkpoint's head (class count differs)")
    p.add_argument("--fp16", action="store_true", help="half-precision weights and compute (scores stay float32)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--tolerance", type=float, help="max |Δprob| vs PyTorch (default 1e-4, fp16 1e-2)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.tolerance is None:
        args.tolerance = TOLERANCE[args.fp16]
    try:
        export(args)
    except ActionstreamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
