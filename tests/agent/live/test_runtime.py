"""Model runtimes (ONNX Runtime here; tests/agent/live/test_openvino.py runs OpenVINO) and cross-camera batching."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import numpy as np
import pytest

from agent.config import DetectorConfig, ModelConfig
from agent.live.backends import batch_buckets
from agent.live.batcher import Batcher, piece_rows
from agent.live.clips import Clip
from agent.live.people import PersonDetector
from agent.live.runtime import ModelRuntime
from agent.metrics import Metrics
from agent.spec import SpecError
from tests.onnx_runs import record_runs
from tests.person_graphs import constant_detector


def _clip(runtime: ModelRuntime, camera: str, seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    spec = runtime.spec
    inputs = {i.name: rng.integers(0, 256, (i.frames, spec.size, spec.size, 3), dtype=np.uint8) for i in spec.inputs}
    return Clip(camera=camera, seq=1, inputs=inputs, start=0.0, end=2.0, received_at=1000.0)


@pytest.mark.parametrize("workers", [1, 2])
def test_four_cameras_are_batched_and_match_unbatched(tiny_model, workers):
    metrics = Metrics()
    config = ModelConfig(path=tiny_model, device="cpu", max_batch=8, max_wait_ms=200, workers=workers)
    runtime = ModelRuntime("tiny", config)
    batcher = Batcher(runtime, metrics)
    clips = [_clip(runtime, f"cam{i}", seed=i) for i in range(4)]

    async def scenario():
        worker = asyncio.create_task(batcher.run())
        results = await asyncio.gather(*(batcher.infer(c) for c in clips))
        worker.cancel()
        return results

    results = asyncio.run(scenario())
    assert metrics.value("actionstream_batch_size_count", model="tiny") == 1  # one run...
    assert metrics.value("actionstream_batch_size_sum", model="tiny") == 4  # ...of all four clips
    assert metrics.value("actionstream_clips_inferred_total", model="tiny") == 4
    assert metrics.value("actionstream_inference_seconds_count", model="tiny") == 1
    for clip, (scores, ms) in zip(clips, results, strict=True):
        alone = runtime.infer({name: frames[None] for name, frames in clip.inputs.items()})[0]
        np.testing.assert_allclose(scores, alone, atol=1e-5)
        assert ms > 0
    assert not np.allclose(results[0][0], results[1][0]), "different clips should score differently"


def test_batches_respect_max_batch(tiny_model):
    metrics = Metrics()
    runtime = ModelRuntime("tiny", ModelConfig(path=tiny_model, device="cpu", max_batch=3, max_wait_ms=200))
    batcher = Batcher(runtime, metrics)

    async def scenario():
        worker = asyncio.create_task(batcher.run())
        await asyncio.gather(*(batcher.infer(_clip(runtime, f"c{i}", i)) for i in range(7)))
        worker.cancel()

    asyncio.run(scenario())
    assert metrics.value("actionstream_batch_size_sum", model="tiny") == 7
    assert metrics.value("actionstream_batch_size_count", model="tiny") == 3  # 3 + 3 + 1


def test_cuda_requested_without_cuda_is_a_clear_error(tiny_model):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        try:
            ModelRuntime("tiny", ModelConfig(path=tiny_model, device="cuda"))
        except SpecError as e:
            assert "cuda" in str(e).lower() and str(tiny_model) in str(e)
            return
        pytest.skip("a CUDA device is present: the CUDA provider loaded")
    with pytest.raises(SpecError, match="cuda"):
        ModelRuntime("tiny", ModelConfig(path=tiny_model, device="cuda"))


def test_auto_device_runs_here(tiny_model):
    runtime = ModelRuntime("tiny", ModelConfig(path=tiny_model))
    assert runtime.device in ("cpu", "cuda", "openvino")
    scores = runtime.infer({i.name: np.zeros((2, i.frames, 64, 64, 3), np.uint8) for i in runtime.spec.inputs})
    assert scores.shape == (2, 5) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_bound_path_pads_to_buckets_and_returns_only_real_rows(tiny_model):
    """The CUDA path (IO binding, device buffers reused per shape, batches padded to buckets), exercised with
    CPU-resident buffers: same scores as a plain run, one row per clip, one buffer per bucket."""
    runtime = ModelRuntime("m", ModelConfig(path=tiny_model, device="cpu", max_batch=6))
    rng = np.random.default_rng(0)
    size = runtime.spec.size
    inputs = {i.name: rng.integers(0, 256, (3, i.frames, size, size, 3), dtype=np.uint8) for i in runtime.spec.inputs}
    plain = runtime.infer(inputs)
    runtime.backend.device, runtime.backend.bound_device = "cuda", ("cpu", 0)  # type: ignore[attr-defined]
    runtime.buckets = batch_buckets(6)
    assert runtime.buckets == [1, 2, 4, 6] and runtime.bucket(3) == 4 and runtime.bucket(6) == 6
    for _ in range(2):  # the second run reuses the buffers
        np.testing.assert_allclose(runtime.infer(inputs), plain, atol=1e-6)
    two = runtime.infer({k: v[:2] for k, v in inputs.items()})
    np.testing.assert_allclose(two, plain[:2], atol=1e-6)
    stacked = {k: runtime.stack(k, list(v)) for k, v in inputs.items()}  # what the batcher does: into the bucket
    assert all(v.shape == inputs[k].shape and v.base.shape[0] == 4 for k, v in stacked.items())
    np.testing.assert_allclose(runtime.infer(stacked), plain, atol=1e-6)
    runtime.warm_up([1, 5])
    shapes = {(name, shape[0]) for name, shape, _ in runtime.backend._device_inputs}  # type: ignore[attr-defined]
    assert shapes == {(i.name, b) for i in runtime.spec.inputs for b in (1, 2, 4, 6)}


def test_workers_share_a_batch_in_pieces_and_never_wait_for_each_other(tiny_model):
    """``workers: 2``: a batch is cut into pieces that both workers take; one slow piece (a preempted worker) holds
    back neither the other worker, which goes on with the rest and with the next batch, nor the results of the
    other pieces. Scores are those of each clip run alone."""
    metrics = Metrics()
    config = ModelConfig(path=tiny_model, device="cpu", max_batch=4, max_wait_ms=0, workers=2)
    runtime = ModelRuntime("tiny", config)
    clips = [_clip(runtime, f"cam{i}", seed=i) for i in range(12)]
    expected = {c.camera: runtime.infer({k: v[None] for k, v in c.inputs.items()})[0] for c in clips}
    backend_run, started = runtime.backend.run, itertools.count()
    others_done = threading.Event()  # the first piece is held until the other eleven clips have their scores

    def uneven(names, inputs):
        if next(started) == 0:
            others_done.wait(timeout=20)  # a batcher that waits for it fails below after these 20 s, not hangs
        return backend_run(names, inputs)

    runtime.backend.run = uneven  # type: ignore[method-assign]
    runs = record_runs(runtime)
    batcher = Batcher(runtime, metrics)
    done_at: dict[str, float] = {}

    async def one(clip):
        scores, _ = await batcher.infer(clip)
        done_at[clip.camera] = time.perf_counter()
        if len(done_at) == len(clips) - 1:
            others_done.set()
        return scores

    async def scenario():
        worker = asyncio.create_task(batcher.run())
        results = await asyncio.gather(*(one(c) for c in clips))
        worker.cancel()
        return results

    results = asyncio.run(scenario())
    for clip, scores in zip(clips, results, strict=True):
        np.testing.assert_allclose(scores, expected[clip.camera], atol=1e-5)
    assert sum(rows for _, rows, _, _ in runs) == 12 and {rows for _, rows, _, _ in runs} == {1}  # 4 ÷ (8 × 2) → 1
    assert len({thread for thread, *_ in runs}) == 2
    slow = max(runs, key=lambda r: r[3] - r[2])
    assert all(r[3] < slow[3] for r in runs if r is not slow), "the other worker waited for the slow piece"
    *others, last = sorted(done_at.values())
    assert max(others) < slow[3] <= last, "results of the other pieces waited for the slow one"
    assert metrics.value("actionstream_batch_size_count", model="tiny") == 3  # 4 + 4 + 4: metrics per batch
    assert metrics.value("actionstream_clips_inferred_total", model="tiny") == 12


def test_workers_go_from_piece_to_piece_while_the_event_loop_is_busy(tiny_model):
    """Between two pieces a worker does not wait for the event loop: with the loop held up (say, by the trackers of
    the clips just scored), both workers go on with the batch's remaining pieces."""
    config = ModelConfig(path=tiny_model, device="cpu", max_batch=8, max_wait_ms=0, workers=2)
    runtime = ModelRuntime("tiny", config)
    backend_run = runtime.backend.run

    def slow(names, inputs):
        time.sleep(0.05)
        return backend_run(names, inputs)

    runtime.backend.run = slow  # type: ignore[method-assign]
    runs = record_runs(runtime)
    batcher = Batcher(runtime, Metrics())
    blocked: list[float] = []

    async def scenario():
        worker = asyncio.create_task(batcher.run())
        futures = [batcher.submit(_clip(runtime, f"cam{i}", seed=i)) for i in range(8)]  # 8 pieces of one clip
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        blocked.append(time.perf_counter())
        time.sleep(0.4)  # the event loop does nothing else for 0.4 s
        blocked.append(time.perf_counter())
        await asyncio.gather(*futures)
        worker.cancel()

    asyncio.run(scenario())
    assert sum(rows for _, rows, _, _ in runs) == 8 and len({thread for thread, *_ in runs}) == 2
    started = [(thread, t0) for thread, _, t0, _ in runs if blocked[0] < t0 < blocked[1]]
    assert len({thread for thread, _ in started}) == 2 and len(started) >= 4, f"pieces started while blocked: {started}"


def test_one_worker_runs_each_batch_whole(tiny_model):
    """The default (and CUDA): one run per batch, so the GPU sees the whole batch."""
    runtime = ModelRuntime("tiny", ModelConfig(path=tiny_model, device="cpu", max_batch=8, max_wait_ms=100))
    runs = record_runs(runtime)
    batcher = Batcher(runtime, Metrics())

    async def scenario():
        worker = asyncio.create_task(batcher.run())
        await asyncio.gather(*(batcher.infer(_clip(runtime, f"c{i}", i)) for i in range(5)))
        worker.cancel()

    asyncio.run(scenario())
    assert [rows for _, rows, _, _ in runs] == [5]
    assert piece_rows(64, 1) == 64 and piece_rows(64, 2) == 4 and piece_rows(3, 2) == 1


def test_a_cancel_arriving_with_a_clip_stops_the_batcher(tiny_model):
    """The batcher waiting ``max_wait_ms`` for more clips: a clip landing as the agent stops must not swallow the
    cancel (Python 3.11's wait_for did, and the batcher then waited forever)."""
    runtime = ModelRuntime("tiny", ModelConfig(path=tiny_model, device="cpu", max_wait_ms=5000))
    batcher = Batcher(runtime, Metrics())

    async def scenario() -> bool:
        task = asyncio.create_task(batcher.run())
        first = asyncio.create_task(batcher.infer(_clip(runtime, "cam0", 0)))
        await asyncio.sleep(0.05)  # the batch is open, waiting for more clips
        second = asyncio.create_task(batcher.infer(_clip(runtime, "cam1", 1)))
        await asyncio.sleep(0)  # the second clip is queued and handed over...
        task.cancel()  # ...as the stop arrives
        done, _ = await asyncio.wait([task], timeout=2)
        first.cancel()
        second.cancel()
        return task in done and task.cancelled()

    assert asyncio.run(scenario()), "the batcher ignored the cancel"


def test_a_cameras_newer_clip_replaces_its_waiting_one_not_its_running_one(tiny_model):
    """``submit(replace=True)``: a camera's clip no batch has taken gives way to its newer one (the old future gives
    None and counts as stale, the newer clip keeps its place in line); one that is running is not touched; other
    cameras' clips and ``replace=False`` clips are never replaced."""
    metrics = Metrics()
    runtime = ModelRuntime("tiny", ModelConfig(path=tiny_model, device="cpu", max_batch=8, max_wait_ms=0))
    entered, release = threading.Event(), threading.Event()
    infer = runtime.infer

    def gated(inputs):
        entered.set()
        release.wait(10)
        return infer(inputs)

    clips = [_clip(runtime, "cam0", seed) for seed in range(4)]
    other = _clip(runtime, "cam1", 9)

    async def scenario():
        runtime.infer = gated
        old = batcher.submit(clips[0], replace=True)
        kept = batcher.submit(other, replace=True)
        new = batcher.submit(clips[1], replace=True)
        replaced = old.done() and old.result() is None
        worker = asyncio.create_task(batcher.run())
        await asyncio.to_thread(entered.wait, 10)  # the batch [clips[1], other] is running
        third = batcher.submit(clips[2], replace=True)
        fourth = batcher.submit(clips[3], replace=False)  # the same camera, not replacing: both run
        running_untouched = not new.done()
        release.set()
        results = await asyncio.gather(new, kept, third, fourth)
        worker.cancel()
        return replaced, running_untouched, results

    batcher = Batcher(runtime, metrics)
    replaced, running_untouched, results = asyncio.run(scenario())
    assert replaced and running_untouched
    assert metrics.value("actionstream_frames_dropped_total", camera="cam0", reason="stale_clip") == 1
    runtime.infer = infer
    for clip, (scores, _) in zip([clips[1], other, clips[2], clips[3]], results, strict=True):
        alone = runtime.infer({name: frames[None] for name, frames in clip.inputs.items()})[0]
        np.testing.assert_allclose(scores, alone, atol=1e-5)
    assert metrics.value("actionstream_batch_size_sum", model="tiny") == 4  # clips[0] never ran


def test_a_detector_on_the_bound_path_finds_what_a_plain_run_finds(tmp_path):
    """The person detector on CUDA goes through the same IO binding (its outputs, of data-dependent length, come
    back from the device): exercised with CPU-resident buffers, the same people as a plain run, in both layouts."""
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for layout, classes in (("torchvision", [1, 1, 2]), ("yolo", [0, 0, 1])):
        path = constant_detector(
            tmp_path / f"{layout}.onnx", [[16, 24, 112, 116], [100, 20, 150, 110], [5, 5, 20, 20]], [0.9, 0.8, 0.95],
            classes, layout=layout, image="uint8_nhwc", size=(120, 160),
        )  # fmt: skip
        plain = PersonDetector(DetectorConfig(path=path), "cpu").detect(frame)
        bound = PersonDetector(DetectorConfig(path=path), "cpu")
        bound.backend.device, bound.backend.bound_device = "cuda", ("cpu", 0)  # type: ignore[attr-defined]
        assert len(plain) == 2 and bound.detect(frame) == plain and bound.detect(frame) == plain
        assert len(bound.backend._device_inputs) == 1  # type: ignore[attr-defined]  # one buffer, reused
