"""agent.live.device: buffers in the model's device memory and the copies between them (a converted frame into the
clip ring, a clip out of it, clips into a batch), and the model reading a batch where it is. CUDA is not needed:
the same code runs with ONNX Runtime's CPU device, which is what ``convert: graph`` on CUDA runs through."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import ModelConfig
from agent.demo.run import DEMO_MODEL
from agent.live.backends import batch_buckets
from agent.live.clips import ClipBuffer
from agent.live.device import HOST, DeviceArray, DeviceRing, copy_rows, ring_factory
from agent.live.runtime import ModelRuntime
from tests.specs import SLOWFAST, make_spec


def test_arrays_views_and_copies():
    host = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)
    array = DeviceArray.from_numpy(host, HOST)
    assert array.shape == (4, 2, 3) and len(array) == 4 and array.capacity == 4
    np.testing.assert_array_equal(array.numpy(), host)
    np.testing.assert_array_equal(array[2].numpy(), host[2])
    np.testing.assert_array_equal(array.take([3, 0, 3]).numpy(), host[[3, 0, 3]])
    np.testing.assert_array_equal(array.reshape((2, 12)).numpy(), host.reshape(2, 12))
    assert array[1].rows(3).shape == (3, 3) and array.rows(2).shape == (2, 2, 3)
    with pytest.raises(ValueError):
        array.rows(5)
    out = np.zeros((6, 2, 3), np.uint8)
    copy_rows(array, np.array([1, 2], np.int64), out, at=3)  # into host memory, at a row offset
    np.testing.assert_array_equal(out[3:5], host[1:3])
    assert not out[:3].any() and not out[5:].any()


def test_a_ring_in_device_memory_gives_the_same_clips():
    """ClipBuffer with ``ring=`` a device ring: the same sampling, the same pixels, clips as device arrays."""
    spec = make_spec(SLOWFAST, size=8)
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(120)]

    def convert_host(frame: int) -> np.ndarray:
        return frames[frame]

    def convert_device(frame: int) -> DeviceArray:
        return DeviceArray.from_numpy(frames[frame], HOST)

    host = ClipBuffer(spec, convert_host, every_s=0.5)
    device = ClipBuffer(spec, convert_device, every_s=0.5, ring=ring_factory(HOST))
    clips = 0
    for i in range(120):
        t = i / 25  # a 25 fps camera: the fast input (15 fps) repeats no frame, skips some
        a, b = host.push(i, t, 1000 + t), device.push(i, t, 1000 + t)
        assert (a is None) == (b is None)
        if a is None:
            continue
        clips += 1
        assert isinstance(device.ring, DeviceRing) and (a.start, a.end) == (b.start, b.end)
        for name in ("slow", "fast"):
            assert isinstance(b.inputs[name], DeviceArray)
            np.testing.assert_array_equal(b.inputs[name].numpy(), a.inputs[name])
    assert clips >= 5


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime("m", ModelConfig(path=DEMO_MODEL, device="cpu", max_batch=6))


def test_the_model_reads_a_batch_stacked_in_device_memory(runtime):
    """runtime.stack of device clips: a device buffer with the bucket's rows; the session binds it by address; the
    scores are those of the same clips from host memory, one row per clip (padding dropped)."""
    rng = np.random.default_rng(0)
    size = runtime.spec.size
    clips = [
        {i.name: rng.integers(0, 256, (i.frames, size, size, 3), dtype=np.uint8) for i in runtime.spec.inputs}
        for _ in range(3)
    ]
    plain = runtime.infer({n: np.stack([c[n] for c in clips]) for n in runtime.input_names})
    on_device = [{n: DeviceArray.from_numpy(a, HOST) for n, a in c.items()} for c in clips]
    stacked = {n: runtime.stack(n, [c[n] for c in on_device]) for n in runtime.input_names}
    assert all(isinstance(v, DeviceArray) and len(v) == 3 for v in stacked.values())
    np.testing.assert_allclose(runtime.infer(stacked), plain, atol=1e-6)
    runtime.buckets = batch_buckets(6)  # as on CUDA: padded to 4 rows, in the same device buffer
    try:
        stacked = {n: runtime.stack(n, [c[n] for c in on_device]) for n in runtime.input_names}
        assert all(v.capacity == 4 for v in stacked.values())
        np.testing.assert_allclose(runtime.infer(stacked), plain, atol=1e-6)
    finally:
        runtime.buckets = []
