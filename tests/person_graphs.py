"""Small ONNX graphs for person-model tests, built with onnx.helper: detectors that report fixed boxes in either
accepted output layout, and a person "action model" whose scores are a fixed function of each box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from agent.spec import METADATA_KEY, InputSpec, ModelSpec, SourceSpec


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def _image_input(kind: str, size: tuple[int, int] | None) -> onnx.ValueInfoProto:
    h, w = size or ("H", "W")
    if kind == "uint8_nhwc":
        return helper.make_tensor_value_info("image", TensorProto.UINT8, [1, h, w, 3])
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])


def constant_detector(
    path: Path,
    boxes: list[list[float]],
    scores: list[float],
    classes: list[int],
    *,
    layout: str = "torchvision",
    image: str = "float_nchw",
    size: tuple[int, int] | None = None,
    names: tuple[str, str, str] = ("boxes", "labels", "scores"),
) -> Path:
    """A detector that always reports ``boxes`` (pixels of its input) with ``scores`` and ``classes``.

    ``layout``: "torchvision" (outputs ``names``: boxes, labels, scores) or "yolo" (one ``[1, K, 6]``). The image
    input is consumed (its max times 0 is added to the boxes), so ORT cannot prune it.
    """
    k = len(boxes)
    nodes = [
        helper.make_node("Cast", [_image_input(image, size).name], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["image_f"], ["image_max"], keepdims=0),
        helper.make_node("Mul", ["image_max", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.float32(0), "zero")]
    if layout == "torchvision":
        inits += [
            numpy_helper.from_array(np.float32(boxes).reshape(k, 4), "const_boxes"),
            numpy_helper.from_array(np.int64(classes).reshape(k), "const_labels"),
            numpy_helper.from_array(np.float32(scores).reshape(k), "const_scores"),
        ]
        nodes += [
            helper.make_node("Add", ["const_boxes", "nothing"], [names[0]]),
            helper.make_node("Identity", ["const_labels"], [names[1]]),
            helper.make_node("Identity", ["const_scores"], [names[2]]),
        ]
        graph_outputs = [
            helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [k, 4]),
            helper.make_tensor_value_info(names[1], TensorProto.INT64, [k]),
            helper.make_tensor_value_info(names[2], TensorProto.FLOAT, [k]),
        ]
    else:
        rows = np.concatenate([np.float32(boxes), np.float32(scores)[:, None], np.float32(classes)[:, None]], 1)
        inits.append(numpy_helper.from_array(rows.reshape(1, k, 6).astype(np.float32), "rows"))
        nodes.append(helper.make_node("Add", ["rows", "nothing"], ["output0"]))
        graph_outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, k, 6])]
    graph = helper.make_graph(nodes, "detector", [_image_input(image, size)], graph_outputs, inits)
    return _save(graph, path)


def box_scorer(
    path: Path,
    labels: list[str],
    weights: np.ndarray,
    bias: np.ndarray,
    *,
    frames: int = 4,
    stride_s: float = 0.2,
    size: int = 32,
) -> Path:
    """A person model (task person, crop none): ``scores = sigmoid(boxes @ weights + bias)`` per box.

    ``weights`` ``[4, K]``, ``bias`` ``[K]``. The clip and box_batch inputs are consumed (times 0).
    """
    k = len(labels)
    spec = ModelSpec(
        arch="box_scorer",
        labels=labels,
        inputs=[InputSpec(name="clip", frames=frames, stride_s=stride_s)],
        size=size,
        resize_short=size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        output={"name": "scores", "activation": "sigmoid"},
        source=SourceSpec(exported_by="tests"),
        task="person",
        multilabel=True,
        crop="none",
    )
    inits = [
        numpy_helper.from_array(np.float32(weights).reshape(4, k), "w"),
        numpy_helper.from_array(np.float32(bias).reshape(k), "b"),
        numpy_helper.from_array(np.float32(0), "zero"),
    ]
    nodes = [
        helper.make_node("Cast", ["clip"], ["clip_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["clip_f"], ["clip_max"], keepdims=0),
        helper.make_node("Cast", ["box_batch"], ["batch_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["batch_f"], ["batch_max"], keepdims=0),
        helper.make_node("Add", ["clip_max", "batch_max"], ["both"]),
        helper.make_node("Mul", ["both", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["boxes", "w"], ["wx"]),
        helper.make_node("Add", ["wx", "b"], ["logits0"]),
        helper.make_node("Add", ["logits0", "nothing"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "box_scorer",
        [
            helper.make_tensor_value_info("clip", TensorProto.UINT8, ["N", frames, "H", "W", 3]),
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["M", 4]),
            helper.make_tensor_value_info("box_batch", TensorProto.INT64, ["M"]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["M", k])],
        inits,
    )
    return _save(graph, path, {METADATA_KEY: spec.to_json()})


def bright_object_detector(path: Path, threshold: int = 200) -> Path:
    """A detector that finds the one bright object on a dark frame from its pixels: the bounding box of the pixels
    whose brightest channel is above ``threshold``, YOLO-style ``[1, 1, 6]`` (score 1, class 0; score 0 when there is
    none). Input uint8 ``[1, H, W, 3]`` of any size (fed the key frame as the model sees it)."""
    c = lambda name, value, dtype=np.int64: numpy_helper.from_array(np.asarray(value, dtype=dtype), name)  # noqa: E731
    inits = [
        c("threshold", float(threshold), np.float32),
        c("axis_h", [1]),
        c("axis_w", [2]),
        c("axis_c", [3]),
        c("one", 1.0, np.float32),
        c("zero_class", [0.0], np.float32),
        c("shape_out", [1, 1, 6]),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["image_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["image_f", "axis_c"], ["brightest"], keepdims=0),  # [1, H, W]
        helper.make_node("Greater", ["brightest", "threshold"], ["lit_b"]),
        helper.make_node("Cast", ["lit_b"], ["lit"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["lit", "axis_h"], ["cols"], keepdims=0),  # [1, W]
        helper.make_node("ReduceMax", ["lit", "axis_w"], ["rows"], keepdims=0),  # [1, H]
        helper.make_node("ArgMax", ["cols"], ["x1_i"], axis=1, keepdims=0),
        helper.make_node("ArgMax", ["cols"], ["x2_i"], axis=1, keepdims=0, select_last_index=1),
        helper.make_node("ArgMax", ["rows"], ["y1_i"], axis=1, keepdims=0),
        helper.make_node("ArgMax", ["rows"], ["y2_i"], axis=1, keepdims=0, select_last_index=1),
        helper.make_node("ReduceMax", ["cols"], ["score"], keepdims=1),  # [1, 1]: 1 when anything is lit
        *[helper.make_node("Cast", [f"{v}_i"], [f"{v}_f"], to=TensorProto.FLOAT) for v in ("x1", "x2", "y1", "y2")],
        helper.make_node("Add", ["x2_f", "one"], ["x2_end"]),  # the pixel's far edge
        helper.make_node("Add", ["y2_f", "one"], ["y2_end"]),
        helper.make_node("Reshape", ["score", "axis_h"], ["score_1"]),
        helper.make_node("Concat", ["x1_f", "y1_f", "x2_end", "y2_end", "score_1", "zero_class"], ["row"], axis=0),
        helper.make_node("Reshape", ["row", "shape_out"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bright_object",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 1, 6])],
        inits,
    )
    return _save(graph, path)
