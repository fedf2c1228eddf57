"""Model specs for tests that need only the sampling part of a model file (no ONNX graph)."""

from __future__ import annotations

from agent.spec import ModelSpec

TSN = [{"name": "clip", "frames": 8, "stride_s": 0.5}]
I3D = [{"name": "clip", "frames": 32, "stride_s": 2 / 30}]
SLOWFAST = [{"name": "slow", "frames": 4, "stride_s": 16 / 30}, {"name": "fast", "frames": 32, "stride_s": 2 / 30}]


def make_spec(inputs: list[dict], *, size: int = 8, resize_short: int | None = None) -> ModelSpec:
    return ModelSpec(
        arch="test",
        labels=["a", "b"],
        inputs=inputs,
        size=size,
        resize_short=resize_short or size,
        mean=(0, 0, 0),
        std=(1, 1, 1),
        source={"exported_by": "test"},
    )
