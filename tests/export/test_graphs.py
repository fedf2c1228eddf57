"""export/graphs.py: the agent's shipped graphs (agent/graphs/*.onnx) are exactly what it writes, and valid ONNX that
names the inputs the agent binds."""

from __future__ import annotations

import subprocess
import sys

import onnx

from agent import yuvgraph
from export import graphs
from tests.conftest import ROOT


def test_the_shipped_graphs_are_what_export_graphs_writes():
    for path, build in graphs.GRAPHS.items():
        assert path.is_file(), f"{path} is missing: python -m export.graphs"
        assert path.read_bytes() == build().SerializeToString(), f"{path} is stale: python -m export.graphs"
    check = subprocess.run([sys.executable, "-m", "export.graphs", "--check"], cwd=ROOT, capture_output=True)
    assert check.returncode == 0, check.stderr


def test_the_conversion_graph_takes_the_planes_and_tables_the_agent_binds():
    model = onnx.load(str(yuvgraph.YUV_TO_RGB))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [*yuvgraph.PLANES, *yuvgraph.TABLES]
    assert [o.name for o in model.graph.output] == [yuvgraph.OUTPUT]
    assert model.opset_import[0].version == yuvgraph.OPSET
    # Operators with kernels on ONNX Runtime's CPU and CUDA providers for these types: nothing falls back.
    ops = {n.op_type for n in model.graph.node}
    assert ops <= {"Slice", "Gather", "Cast", "MatMul", "Squeeze", "Transpose", "Reshape", "Shape", "Concat", "Sub",
                   "If", "Round", "Clip", "Mul", "Add"}, ops  # fmt: skip
    take = onnx.load(str(yuvgraph.TAKE_ROWS))
    assert [i.name for i in take.graph.input] == ["data", "indices"] and {n.op_type for n in take.graph.node} == {
        "Gather"
    }
