"""Model runtime: one ONNX Runtime session per model file, and cross-camera dynamic batching.

Providers: ``device: auto`` takes the CUDA execution provider when it loads (onnxruntime-gpu with CUDA and cuDNN
present), else the CPU; ``cuda`` requires it; ``cpu`` never tries. On CUDA, inputs go through IO binding.
Inference runs in one worker thread per model, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from agent.clips import Clip
from agent.config import ModelConfig
from agent.metrics import Metrics
from agent.spec import ModelSpec, SpecError, open_session, read_spec

log = logging.getLogger("actionstream.runtime")


def _providers(config: ModelConfig) -> list:
    cpu = "CPUExecutionProvider"
    if config.device == "cpu" or "CUDAExecutionProvider" not in ort.get_available_providers():
        if config.device == "cuda":
            raise SpecError(f"{config.path}: device 'cuda' requested but this onnxruntime has no CUDA provider")
        return [cpu]
    cuda_options = {"device_id": config.device_id, "cudnn_conv_algo_search": config.cudnn_conv_algo_search}
    return [("CUDAExecutionProvider", cuda_options), cpu]


class ModelRuntime:
    """A loaded model: its spec, its session and a blocking :meth:`infer`."""

    def __init__(self, name: str, config: ModelConfig) -> None:
        self.name, self.config = name, config
        options = ort.SessionOptions()
        if config.threads:
            options.intra_op_num_threads = config.threads
        providers = _providers(config)
        ort.set_default_logger_severity(4)  # a failing CUDA load is reported below, in one line
        try:
            self.session = open_session(config.path, providers, options)
        finally:
            ort.set_default_logger_severity(2)
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        if config.device == "cuda" and self.device != "cuda":
            raise SpecError(f"{config.path}: device 'cuda' requested but the CUDA provider did not load")
        if config.device == "auto" and len(providers) > 1 and self.device == "cpu":
            # Loud only where a GPU is visible: onnxruntime-gpu is the default install on CPU-only boxes too.
            level = logging.WARNING if Path("/dev/nvidia0").exists() else logging.INFO
            log.log(level, "model %s: the CUDA provider did not load (CUDA/cuDNN missing?); running on the CPU", name)
        self.spec: ModelSpec = read_spec(self.session, str(config.path))
        self.input_names = [i.name for i in self.spec.inputs]

    def infer(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """``inputs``: name → uint8 ``[N, T, S, S, 3]``; returns float32 scores ``[N, K]``."""
        if self.device == "cuda":
            binding = self.session.io_binding()
            for name in self.input_names:
                binding.bind_cpu_input(name, np.ascontiguousarray(inputs[name]))
            binding.bind_output(self.spec.output.name, "cpu")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0]
        return self.session.run([self.spec.output.name], inputs)[0]

    def warm_up(self, batch_sizes: list[int]) -> None:
        for n in sorted(set(batch_sizes)):
            self.infer(
                {i.name: np.zeros((n, i.frames, self.spec.size, self.spec.size, 3), np.uint8) for i in self.spec.inputs}
            )


@dataclass
class _Request:
    clip: Clip
    future: asyncio.Future


class Batcher:
    """Collects clips for one model from all cameras: a batch runs when ``max_batch`` clips are waiting or the
    oldest has waited ``max_wait_ms``. Each camera awaits its own result, so at most one clip per camera is queued
    here; cameras drop stale clips before they reach this queue (see :class:`agent.sources.Camera`).
    """

    def __init__(self, runtime: ModelRuntime, metrics: Metrics) -> None:
        self.runtime, self.metrics = runtime, metrics
        self.max_batch = runtime.config.max_batch
        self.max_wait = runtime.config.max_wait_ms / 1000
        self.queue: asyncio.Queue[_Request] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{runtime.name}")
        self._depth = metrics.queue_depth.labels(stage=f"inference:{runtime.name}")

    async def infer(self, clip: Clip) -> tuple[np.ndarray, float]:
        """Scores for one clip and the duration (ms) of the batch that computed them."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Request(clip, future))
        self._depth.set(self.queue.qsize())
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = [await self.queue.get()]
                deadline = loop.time() + self.max_wait
                while len(batch) < self.max_batch:
                    try:
                        batch.append(self.queue.get_nowait())
                        continue
                    except asyncio.QueueEmpty:
                        pass
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                    except TimeoutError:
                        break
                self._depth.set(self.queue.qsize())
                await self._run_batch(loop, batch)
        finally:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        name = self.runtime.name
        inputs = {n: np.stack([r.clip.inputs[n] for r in batch]) for n in self.runtime.input_names}
        t0 = time.perf_counter()
        try:
            scores = await loop.run_in_executor(self.executor, self.runtime.infer, inputs)
        except Exception as e:  # a model error fails this batch, not the agent
            log.error("model %s: inference failed: %s", name, e)
            for r in batch:
                if not r.future.done():
                    r.future.set_exception(e)
            return
        seconds = time.perf_counter() - t0
        self.metrics.inference_seconds.labels(model=name).observe(seconds)
        self.metrics.batch_size.labels(model=name).observe(len(batch))
        self.metrics.clips_inferred.labels(model=name).inc(len(batch))
        for r, row in zip(batch, scores, strict=True):
            if not r.future.done():
                r.future.set_result((row, seconds * 1000))
