"""bench.model's exported models: ``width`` gives a ResNet-18 of that base width, cached apart from the others."""

from __future__ import annotations

import onnx

from bench import model


def test_model_file_exports_a_resnet18_of_the_asked_width(tmp_path, monkeypatch):
    monkeypatch.setattr(model, "CACHE", tmp_path)
    narrow = model.model_file("tsn_r50", size=32, num_classes=3, width=4)
    wide = model.model_file("tsn_r50", size=32, num_classes=3, width=8)
    assert narrow != wide and model.model_file("tsn_r50", size=32, num_classes=3, width=4) == narrow

    def stem_channels(path) -> int:  # the first convolution's output channels = the base width
        graph = onnx.load(path).graph
        weights = {init.name: init for init in graph.initializer}
        conv = next(node for node in graph.node if node.op_type == "Conv")
        return weights[conv.input[1]].dims[0]

    assert (stem_channels(narrow), stem_channels(wide)) == (4, 8)
