"""agent.spec: the ``actionstream.spec`` metadata contract and the checks of an ONNX graph against it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

from agent.spec import (
    METADATA_KEY,
    ModelSpec,
    SpecError,
    check_session,
    load_spec,
    open_session,
    parse_spec,
    read_spec,
)
from tests.docs import CONTRACTS, json_block

# The example of docs/contracts.md, "Model file (ONNX)": what users read is what these tests parse.
EXAMPLE = json_block(CONTRACTS, "Model file (ONNX)")


def example() -> dict:
    return json.loads(EXAMPLE)


def clip_spec(labels=("walk", "run", "jump"), frames=4, size=16) -> dict:
    return {
        "arch": "slowonly_r50_4x16",
        "labels": list(labels),
        "inputs": [{"name": "clip", "frames": frames, "stride_s": 16 / 30}],
        "size": size,
        "resize_short": size,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "source": {"exported_by": "tests"},
    }


# --- parse_spec ---------------------------------------------------------------------------------------------------


def test_documented_example_parses():
    spec = parse_spec(EXAMPLE, "example.onnx")
    assert isinstance(spec, ModelSpec)
    assert spec.format == 1
    assert spec.arch == "slowfast_r50_4x16"
    assert spec.labels == ["abseiling", "air drumming", "..."]
    assert [(i.name, i.frames) for i in spec.inputs] == [("slow", 4), ("fast", 32)]
    assert spec.alpha == 8
    assert spec.span_s == pytest.approx(32 * 0.0667)
    assert spec.inputs[0].span_s == pytest.approx(4 * 0.5333)
    assert spec.size == 224 and spec.resize_short == 256
    assert spec.mean == (123.675, 116.28, 103.53)
    assert spec.output.name == "scores" and spec.output.activation == "softmax"
    assert spec.source.checkpoint_sha256 == "..."


def test_defaults_and_round_trip():
    spec = parse_spec(json.dumps(clip_spec()), "m.onnx")
    assert spec.output.name == "scores" and spec.output.activation == "softmax"
    assert spec.source.checkpoint_sha256 is None
    assert spec.alpha == 1
    assert parse_spec(spec.to_json(), "again") == spec


def test_unknown_top_level_keys_are_allowed():
    doc = example()
    doc["added_in_a_later_release"] = {"x": 1}
    parse_spec(json.dumps(doc), "m.onnx")


def test_resize_to_is_optional_and_round_trips():
    """Specs before it say nothing (short-side resize); torchvision-style models set (width, height)."""
    assert parse_spec(EXAMPLE, "m.onnx").resize_to is None
    doc = example() | {"resize_to": [256, 256]}
    spec = parse_spec(json.dumps(doc), "m.onnx")
    assert spec.resize_to == (256, 256) and spec.crop_size == 224
    assert parse_spec(spec.to_json(), "again") == spec
    with pytest.raises(SpecError, match="resize_to .* needs crop 'centre'"):
        parse_spec(json.dumps(doc | {"crop": "none", "resize_short": 224}), "m.onnx")


def test_spec_is_frozen():
    spec = parse_spec(EXAMPLE, "m.onnx")
    with pytest.raises(ValidationError, match="frozen"):
        spec.size = 10


def _broken(mutate) -> str:
    doc = example()
    mutate(doc)
    return json.dumps(doc)


def _pop(key):
    return lambda d: d.pop(key)


def _set(path, value):
    def mutate(d):
        target = d
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return mutate


BAD = {
    "missing labels": (_pop("labels"), ["labels"]),
    "empty labels": (_set(["labels"], []), ["labels"]),
    "duplicate labels": (_set(["labels"], ["a", "b", "a"]), ["labels", "unique"]),
    "missing arch": (_pop("arch"), ["arch"]),
    "wrong input name": (_set(["inputs", 0, "name"], "rgb"), ["inputs", "name"]),
    "inputs swapped": (
        _set(
            ["inputs"],
            [{"name": "fast", "frames": 32, "stride_s": 0.0667}, {"name": "slow", "frames": 4, "stride_s": 0.5333}],
        ),
        ["inputs", "['clip'] or ['slow', 'fast']"],
    ),
    "clip and fast": (_set(["inputs", 0, "name"], "clip"), ["inputs", "['clip'] or ['slow', 'fast']"]),
    "only slow": (_set(["inputs"], [{"name": "slow", "frames": 4, "stride_s": 0.5}]), ["inputs"]),
    "three inputs": (
        _set(["inputs"], [{"name": "clip", "frames": 4, "stride_s": 0.5}] * 3),
        ["inputs"],
    ),
    "no inputs": (_set(["inputs"], []), ["inputs"]),
    "alpha frames": (_set(["inputs", 1, "frames"], 30), ["slow/fast", "alpha"]),
    "alpha stride": (_set(["inputs", 1, "stride_s"], 0.1), ["slow/fast", "alpha"]),
    "zero frames": (_set(["inputs", 0, "frames"], 0), ["inputs.0.frames"]),
    "negative stride": (_set(["inputs", 0, "stride_s"], -0.5), ["inputs.0.stride_s"]),
    "unknown input key": (_set(["inputs", 0, "fps"], 30), ["inputs.0.fps"]),
    "resize_short < size": (_set(["resize_short"], 200), ["resize_short", "224"]),
    "tiny size": (_set(["size"], 4), ["size"]),
    "std zero": (_set(["std"], [58.4, 0.0, 57.4]), ["std"]),
    "mean of two": (_set(["mean"], [1.0, 2.0]), ["mean"]),
    "format 2": (_set(["format"], 2), ["format"]),
    "activation": (_set(["output", "activation"], "relu"), ["output.activation"]),
    "missing source": (_pop("source"), ["source"]),
    "size is text": (_set(["size"], "big"), ["size"]),
    "unknown task": (_set(["task"], "scene"), ["task"]),
    "crop none, size != short": (_set(["crop"], "none"), ["crop 'none'", "size (224) must equal resize_short"]),
    "multilabel softmax": (_set(["multilabel"], True), ["multilabel", "softmax"]),
    "label_ids short": (_set(["label_ids"], [1, 2]), ["label_ids", "3 unique ids"]),
    "label_ids repeated": (_set(["label_ids"], [1, 1, 2]), ["label_ids", "3 unique ids"]),
    "resize_to below size": (_set(["resize_to"], [256, 200]), ["resize_to", "sides >= size (224)"]),
    "resize_to of one side": (_set(["resize_to"], [256]), ["resize_to"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_spec_names_the_key(case):
    mutate, needles = BAD[case]
    with pytest.raises(SpecError) as err:
        parse_spec(_broken(mutate), "cam/model.onnx")
    message = str(err.value)
    assert message.startswith("cam/model.onnx: ")
    assert METADATA_KEY in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_alpha_two_slow_fast_is_valid():
    doc = example()
    doc["inputs"] = [{"name": "slow", "frames": 8, "stride_s": 0.2}, {"name": "fast", "frames": 16, "stride_s": 0.1}]
    assert parse_spec(json.dumps(doc), "m").alpha == 2


@pytest.mark.parametrize("text", ["{not json", "", "[1, 2", "{'single': 'quotes'}"])
def test_invalid_json(text):
    with pytest.raises(SpecError) as err:
        parse_spec(text, "cam/model.onnx")
    assert "cam/model.onnx" in str(err.value)
    assert "not valid JSON" in str(err.value)
    assert METADATA_KEY in str(err.value)


def test_json_that_is_not_an_object():
    with pytest.raises(SpecError, match="cam/model.onnx"):
        parse_spec("[1, 2, 3]", "cam/model.onnx")


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


# --- ONNX files ---------------------------------------------------------------------------------------------------


def tiny_onnx(
    path: Path,
    *,
    inputs=(("clip", 4),),
    size: int = 16,
    classes: int = 3,
    input_type: int = TensorProto.UINT8,
    output_name: str = "scores",
    output_type: int = TensorProto.FLOAT,
    metadata: str | None = None,
    batch: int | str = "N",
    fail_above: int | None = None,
    channels: int = 3,
) -> Path:
    """uint8 clip(s) [N, T, size, size, 3] → Cast → ReduceMean over T, H, W → [N, 3] → MatMul → Softmax → [N, K].

    ``batch``: the batch dimension (an int fixes it). ``fail_above``: every run whose clips hold a pixel value above
    it fails (a Reshape that cannot be done), as a model with a sticky runtime error would; dark clips run."""
    nodes, graph_inputs = [], []
    means = []
    for name, frames in inputs:
        shape = [batch, frames, size, size, channels]
        graph_inputs.append(helper.make_tensor_value_info(name, input_type, shape))
        nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("ReduceMean", [f"{name}_f", "axes"], [f"{name}_m"], keepdims=0))
        means.append(f"{name}_m")
    summed = means[0]
    if len(means) == 2:
        nodes.append(helper.make_node("Add", means, ["summed"]))
        summed = "summed"
    weight = np.linspace(-0.05, 0.05, channels * classes, dtype=np.float32).reshape(channels, classes)
    nodes.append(helper.make_node("MatMul", [summed, "weight"], ["logits"]))
    extra = []
    if fail_above is not None:
        first = f"{inputs[0][0]}_f"
        nodes += [
            helper.make_node("ReduceMax", [first], ["brightest"], keepdims=0),
            helper.make_node("Greater", ["brightest", "fail_above"], ["bright"]),
            helper.make_node("Where", ["bright", "bad_shape", "good_shape"], ["shape"]),
            helper.make_node("Reshape", ["logits", "shape"], ["checked"]),
        ]
        extra = [
            numpy_helper.from_array(np.array(fail_above, dtype=np.float32), "fail_above"),
            numpy_helper.from_array(np.array([-1, classes + 1], dtype=np.int64), "bad_shape"),
            numpy_helper.from_array(np.array([-1, classes], dtype=np.int64), "good_shape"),
        ]
    logits = "checked" if fail_above is not None else "logits"
    if output_type == TensorProto.FLOAT:
        nodes.append(helper.make_node("Softmax", [logits], [output_name], axis=1))
    else:
        nodes.append(helper.make_node("Cast", [logits], [output_name], to=output_type))
    graph = helper.make_graph(
        nodes,
        "tiny",
        graph_inputs,
        [helper.make_tensor_value_info(output_name, output_type, [batch, classes])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2, 3], dtype=np.int64), "axes"),
            numpy_helper.from_array(weight, "weight"),
            *extra,
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    if metadata is not None:
        helper.set_model_props(model, {METADATA_KEY: metadata})
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def test_tiny_model_with_spec_loads_and_runs(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", metadata=json.dumps(clip_spec()))
    spec = load_spec(path)
    assert spec.labels == ["walk", "run", "jump"]
    session = open_session(path)
    assert read_spec(session, str(path)) == spec
    clip = np.random.default_rng(0).integers(0, 256, (2, 4, 16, 16, 3), dtype=np.uint8)
    (scores,) = session.run(["scores"], {"clip": clip})
    assert scores.shape == (2, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)


def test_tiny_slowfast_model_loads(tmp_path):
    doc = clip_spec(labels=("a", "b"))
    doc["inputs"] = [{"name": "slow", "frames": 2, "stride_s": 0.4}, {"name": "fast", "frames": 8, "stride_s": 0.1}]
    path = tiny_onnx(tmp_path / "sf.onnx", inputs=(("slow", 2), ("fast", 8)), classes=2, metadata=json.dumps(doc))
    spec = load_spec(path)
    assert [i.name for i in spec.inputs] == ["slow", "fast"]
    assert spec.alpha == 4


def test_missing_metadata(tmp_path):
    path = tiny_onnx(tmp_path / "plain.onnx")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "actionstream.spec" in str(err.value)
    assert str(path) in str(err.value)


def test_metadata_not_json(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", metadata="labels: [a, b, c]")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "not valid JSON" in str(err.value) and str(path) in str(err.value)


def test_metadata_violating_contract(tmp_path):
    doc = clip_spec()
    del doc["labels"]
    path = tiny_onnx(tmp_path / "m.onnx", metadata=json.dumps(doc))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "labels" in str(err.value) and str(path) in str(err.value)


def test_float_input_is_refused(tmp_path):
    path = tiny_onnx(tmp_path / "f.onnx", input_type=TensorProto.FLOAT, metadata=json.dumps(clip_spec()))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message
    assert "'clip'" in message
    assert "tensor(uint8)" in message and "tensor(float)" in message


def test_output_class_count_differs_from_labels(tmp_path):
    path = tiny_onnx(tmp_path / "k.onnx", classes=4, metadata=json.dumps(clip_spec()))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    message = str(err.value)
    assert str(path) in message and "'scores'" in message and "3 labels" in message


def test_non_float_output_is_refused(tmp_path):
    path = tiny_onnx(tmp_path / "d.onnx", output_type=TensorProto.DOUBLE, metadata=json.dumps(clip_spec()))
    with pytest.raises(SpecError, match="tensor\\(float\\)"):
        load_spec(path)


def test_missing_scores_output(tmp_path):
    path = tiny_onnx(tmp_path / "o.onnx", output_name="probs", metadata=json.dumps(clip_spec()))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "'scores'" in str(err.value) and "probs" in str(err.value)


@pytest.mark.parametrize(
    "graph, needle",
    [
        ({"size": 32}, "shape"),  # spatial size differs from spec.size
        ({"inputs": (("clip", 8),)}, "shape"),  # frame count differs
        ({"inputs": (("rgb", 4),)}, "inputs"),  # input name differs
        ({"inputs": (("slow", 1), ("fast", 4))}, "inputs"),  # two inputs, spec has one
    ],
    ids=["size", "frames", "name", "count"],
)
def test_graph_inputs_must_match_spec(tmp_path, graph, needle):
    path = tiny_onnx(tmp_path / "g.onnx", metadata=json.dumps(clip_spec()), **graph)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_check_session_against_another_spec(tmp_path):
    """check_session compares any spec with an open graph (the agent calls it on spec overrides too)."""
    path = tiny_onnx(tmp_path / "m.onnx", metadata=json.dumps(clip_spec()))
    session = open_session(path)
    check_session(parse_spec(json.dumps(clip_spec()), "ok"), session, "ok")
    other = clip_spec(labels=("a", "b"))
    with pytest.raises(SpecError, match="^other: "):
        check_session(parse_spec(json.dumps(other), "other"), session, "other")


def test_not_an_onnx_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value)
    assert "not a loadable ONNX model" in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(SpecError, match=re.escape(str(path))):
        load_spec(path)


def test_missing_file(tmp_path):
    path = tmp_path / "missing.onnx"
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and "not found" in str(err.value)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(SpecError):
        open_session(tmp_path)


# --- person models (task: person) ---------------------------------------------------------------------------------


def test_person_model_with_boxes_and_any_frame_shape_loads(tmp_path):
    from tests.person_graphs import box_scorer

    path = box_scorer(tmp_path / "people.onnx", ["a", "b"], np.zeros((4, 2)), np.zeros(2))
    spec = load_spec(path)
    assert (spec.task, spec.multilabel, spec.crop, spec.crop_size) == ("person", True, "none", None)
    assert parse_spec(EXAMPLE, "m.onnx").crop_size == 224


def _person_graph(tmp_path, boxes_width=True, batch_type=TensorProto.INT64, with_boxes=True):
    from tests.person_graphs import box_scorer

    good = onnx.load(str(box_scorer(tmp_path / "good.onnx", ["a", "b"], np.zeros((4, 2)), np.zeros(2))))
    for node in good.graph.input:
        if node.name == "boxes" and not boxes_width:
            node.type.tensor_type.shape.dim[1].dim_param = "K"  # not 4 coordinates
        if node.name == "box_batch":
            node.type.tensor_type.elem_type = batch_type
    if not with_boxes:  # the same graph, with a spec that says clip model
        meta = json.loads(good.metadata_props[0].value) | {"task": "clip"}
        good.metadata_props[0].value = json.dumps(meta)
    path = tmp_path / "bad.onnx"
    onnx.save(good, str(path))
    return path


def test_person_model_box_inputs_are_checked(tmp_path):
    with pytest.raises(SpecError, match=r"bad\.onnx: input 'boxes' is tensor\(float\) \['M', 'K'\], expected float"):
        load_spec(_person_graph(tmp_path, boxes_width=False))
    with pytest.raises(SpecError, match=r"input 'box_batch' is tensor\(int32\).*expected int64 \[M\]"):
        load_spec(_person_graph(tmp_path, batch_type=TensorProto.INT32))
    with pytest.raises(SpecError, match=r"graph inputs \['box_batch', 'boxes', 'clip'\] differ from spec inputs"):
        load_spec(_person_graph(tmp_path, with_boxes=False))


# --- flow models ----------------------------------------------------------------------------------------------------


def flow_spec(**flow) -> dict:
    doc = clip_spec()
    doc["arch"] = "tsn_r50_flow"
    doc["inputs"] = [
        {"name": "clip", "frames": 3, "stride_s": 4 / 3, "modality": "flow",
         "flow": {"method": "tvl1", "bound": 20, "pairs": 5, "step_s": 1 / 30} | flow}
    ]  # fmt: skip
    doc["mean"], doc["std"] = [128, 128], [128, 128]
    return doc


def test_a_flow_spec_says_how_its_flow_is_made():
    spec = parse_spec(json.dumps(flow_spec()), "flow.onnx")
    (inp,) = spec.inputs
    assert spec.modality == "flow" and spec.flow_input is inp
    assert (inp.modality, inp.flow.method, inp.flow.bound, inp.flow.pairs) == ("flow", "tvl1", 20.0, 5)
    assert inp.channels == 2 and inp.images == 15
    assert inp.span_s == pytest.approx(3 * 4 / 3 + 5 / 30)
    assert parse_spec(spec.to_json(), "again") == spec


def test_rgb_specs_are_written_as_before():
    """Old specs (no modality) are RGB; new RGB specs leave the new keys out, so older agents still read them."""
    spec = parse_spec(json.dumps(clip_spec()), "m.onnx")
    assert spec.modality == "rgb" and spec.flow_input is None and spec.inputs[0].channels == 3
    written = json.loads(spec.to_json())
    assert written["inputs"] == [{"name": "clip", "frames": 4, "stride_s": 16 / 30}]


FLOW_BAD = {
    "flow without its settings": (lambda d: d["inputs"][0].pop("flow"), ["flow input needs its `flow` settings"]),
    "rgb with flow settings": (lambda d: d["inputs"][0].pop("modality"), ["only a flow input has them"]),
    "three means": (lambda d: d.update(mean=[1, 2, 3]), ["one value per channel", "(2)"]),
    "unknown method": (lambda d: d["inputs"][0]["flow"].update(method="raft"), ["inputs.0.flow.method"]),
    "zero bound": (lambda d: d["inputs"][0]["flow"].update(bound=0), ["inputs.0.flow.bound"]),
    "person flow": (lambda d: d.update(task="person", multilabel=True, output={"activation": "sigmoid"}),
                    ["a flow model has one input"]),
    "flow slowfast": (
        lambda d: d.update(inputs=[dict(d["inputs"][0], name="slow"), dict(d["inputs"][0], name="fast")]),
        ["a flow model has one input"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(FLOW_BAD))
def test_bad_flow_specs_are_refused(case):
    mutate, needles = FLOW_BAD[case]
    doc = flow_spec()
    mutate(doc)
    with pytest.raises(SpecError) as err:
        parse_spec(json.dumps(doc), "flow.onnx")
    for needle in needles:
        assert needle in str(err.value), (needle, str(err.value))


def test_a_flow_graph_takes_frames_times_pairs_fields_of_two_channels(tmp_path):
    path = tiny_onnx(tmp_path / "flow.onnx", inputs=(("clip", 15),), channels=2, metadata=json.dumps(flow_spec()))
    assert load_spec(path).flow_input.images == 15
    for inputs, channels, needle in (((("clip", 3),), 2, "[N, 15, 16, 16, 2]"), ((("clip", 15),), 3, "[N, 15, 16")):
        bad = tiny_onnx(tmp_path / "bad.onnx", inputs=inputs, channels=channels, metadata=json.dumps(flow_spec()))
        with pytest.raises(SpecError, match=re.escape(needle)):
            load_spec(bad)
