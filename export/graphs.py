"""The agent's own small ONNX graphs, written with ``onnx.helper`` and shipped as package data in ``agent/graphs/``.

    python -m export.graphs            # rewrite agent/graphs/*.onnx
    python -m export.graphs --check    # exit 1 when a shipped file differs from what this writes

The agent may not import ``onnx``, so these graphs are built here, on the export side, and committed; the test suite
regenerates them and compares the bytes (``tests/export/test_graphs.py``). The agent reads them with ONNX Runtime.

- ``yuv_to_rgb.onnx``: decoded YUV planes → the model's uint8 RGB frame (``cameras[].convert: graph``); every
  geometry and colour constant is an input (:mod:`agent.yuvgraph` computes them).
- ``take_rows.onnx``: ``out = data[indices]`` on uint8 rows: copies between buffers in the device's memory (a
  converted frame into a camera's clip ring, a clip out of it, clips into a batch), run by the same provider.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import onnx
from onnx import TensorProto, helper

from agent.yuvgraph import OPSET, OUTPUT, PLANES, TABLES, TAKE_ROWS, YUV_TO_RGB

IR_VERSION = 8  # ONNX Runtime 1.18 and later read it
U8, F32, I64 = TensorProto.UINT8, TensorProto.FLOAT, TensorProto.INT64
TABLE_TYPES = {  # (element type, rank)
    "y_start": (I64, 1),
    "y_stop": (I64, 1),
    "c_start": (I64, 1),
    "c_stop": (I64, 1),
    "y_cols": (I64, 2),
    "u_cols": (I64, 2),
    "v_cols": (I64, 2),
    "y_col_weights": (F32, 3),
    "c_col_weights": (F32, 3),
    "y_rows": (I64, 2),
    "c_rows": (I64, 2),
    "y_row_weights": (F32, 3),
    "c_row_weights": (F32, 3),
    "offset": (F32, 3),
    "matrix": (F32, 2),
    "turned": (TensorProto.BOOL, 0),
    "keep": (F32, 2),
    "fill": (F32, 3),
}


def _input(name: str, elem: int, rank: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [f"{name}_{i}" for i in range(rank)])


def yuv_to_rgb() -> onnx.ModelProto:
    """Planes → RGB: per plane a window, a vertical then a horizontal weighted sum of taps (each gathering whole
    rows: the horizontal pass runs on the vertical one's output transposed) into the model's rows and columns, then
    the colour matrix on the three planes, the layout (transposed unless the frame is turned), the mask, rounding,
    uint8 and the channels last."""
    nodes: list[onnx.NodeProto] = []

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def resample(plane: str, table: str, cols: str) -> str:
        """One plane through its taps: ``[1, C, R]`` float."""
        window = node("Slice", [plane, f"{table}_start", f"{table}_stop", "rows_cols"], f"{plane}_part")
        down = node("Gather", [window, f"{table}_rows"], f"{plane}_vtaps", axis=0)  # [R, K, W] uint8
        wide = node("Cast", [down], f"{plane}_vtaps_f", to=F32)
        summed = node("MatMul", [f"{table}_row_weights", wide], f"{plane}_v")  # [R, 1, K] @ [R, K, W]: [R, 1, W]
        rows = node("Squeeze", [summed, "one"], f"{plane}_resampled_rows")  # [R, W]
        columns = node("Transpose", [rows], f"{plane}_vt", perm=[1, 0])  # [W, R]
        across = node("Gather", [columns, cols], f"{plane}_htaps", axis=0)  # [C, K, R]
        total = node("MatMul", [f"{table}_col_weights", across], f"{plane}_h")  # [C, 1, K] @ [C, K, R]: [C, 1, R]
        return node("Transpose", [total], f"{plane}_grid", perm=[1, 0, 2])  # [1, C, R]

    channels = [resample("y", "y", "y_cols"), resample("u", "c", "u_cols"), resample("v", "c", "v_cols")]
    yuv = node("Concat", channels, "yuv", axis=0)  # [3, C, R]
    centred = node("Sub", [yuv, "offset"], "yuv_centred")
    flat = node("Reshape", [centred, "three_rows"], "yuv_flat")  # [3, C * R]
    mixed = node("MatMul", ["matrix", flat], "rgb_flat")
    grid = node("Reshape", [mixed, node("Shape", [yuv], "grid_shape")], "rgb_grid")  # [3, C, R]
    # The grid's first axis is the model's columns, unless the frame is turned (then it is its rows already).
    as_is = helper.make_graph([helper.make_node("Identity", [grid], ["rgb_as_is"])], "as_is", [],
                              [helper.make_tensor_value_info("rgb_as_is", F32, None)])  # fmt: skip
    swapped = helper.make_graph([helper.make_node("Transpose", [grid], ["rgb_swapped"], perm=[0, 2, 1])], "swapped",
                                [], [helper.make_tensor_value_info("rgb_swapped", F32, None)])  # fmt: skip
    laid = node("If", ["turned"], "rgb_laid", then_branch=as_is, else_branch=swapped)  # [3, H, W]
    rounded = node("Round", [laid], "rgb_rounded")
    clipped = node("Clip", [rounded, "black", "white"], "rgb_clipped")
    kept = node("Mul", [clipped, "keep"], "rgb_kept")
    filled = node("Add", [kept, "fill"], "rgb_filled")
    planar = node("Cast", [filled], "rgb_planar", to=U8)
    node("Transpose", [planar], OUTPUT, perm=[1, 2, 0])  # [H, W, 3]

    constants = [
        helper.make_tensor("one", I64, [1], [1]),
        helper.make_tensor("rows_cols", I64, [2], [0, 1]),
        helper.make_tensor("three_rows", I64, [2], [3, -1]),
        helper.make_tensor("black", F32, [], [0.0]),
        helper.make_tensor("white", F32, [], [255.0]),
    ]
    inputs = [_input(p, U8, 2) for p in PLANES] + [_input(t, *TABLE_TYPES[t]) for t in TABLES]
    output = helper.make_tensor_value_info(OUTPUT, U8, ["height", "width", 3])
    graph = helper.make_graph(nodes, "yuv_to_rgb", inputs, [output], initializer=constants)
    return _model(graph)


def take_rows() -> onnx.ModelProto:
    """``out = data[indices]``: uint8 rows gathered from one buffer into another."""
    data = helper.make_tensor_value_info("data", U8, ["rows", "row_bytes"])
    indices = helper.make_tensor_value_info("indices", I64, ["taken"])
    out = helper.make_tensor_value_info("out", U8, ["taken", "row_bytes"])
    gather = helper.make_node("Gather", ["data", "indices"], ["out"], name="out", axis=0)
    return _model(helper.make_graph([gather], "take_rows", [data, indices], [out]))


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="actionstream", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model, full_check=True)
    return model


GRAPHS = {YUV_TO_RGB: yuv_to_rgb, TAKE_ROWS: take_rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = p.parse_args(argv)
    stale = []
    for path, build in GRAPHS.items():
        data = build().SerializeToString()
        if args.check:
            if not path.is_file() or path.read_bytes() != data:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {path} ({len(data)} bytes)")
    for path in stale:
        print(f"{path}: differs from what export/graphs.py writes (run python -m export.graphs)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
