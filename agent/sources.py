"""Camera sources: decode with PyAV in one thread per camera, keep the clip buffer fresh, reconnect forever.

Why a thread per source (not a process, not the event loop): PyAV releases the GIL while demuxing, decoding and
scaling, so threads decode in parallel; frames then land in the clip buffer without crossing a process boundary
(no copies), and the event loop never waits on FFmpeg. One bad camera only ever stalls its own thread.

Hardware decoding (``hwaccel``): NVDEC through PyAV's hwaccel, frames copied back to host memory (only the sampled
ones are then converted). Whether the device works is probed once per process; when it does not, cameras decode
in software and say so once.

Watchdog: PyAV's read timeout interrupts a blocked read; a stream that keeps sending packets but yields no frame
for ``stall_s`` is closed too. Either way the source reconnects with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import av
from av.codec.hwaccel import HWAccel
from av.video.reformatter import VideoReformatter

from agent.clips import Clip, ClipBuffer
from agent.config import SourceConfig
from agent.frames import BestEffortTimestamp, to_model_rgb
from agent.metrics import Metrics
from agent.redact import Redactor
from agent.spec import ModelSpec

log = logging.getLogger("actionstream.sources")

# Every camera decodes in the device's primary CUDA context (ONNX Runtime's too), not in a context of its own.
HW_OPTIONS = {"primary_ctx": "1"}
FrameSink = Callable[[av.VideoFrame, float, float], None]  # frame, stream time (s), received at (UNIX s)


class Stalled(Exception):
    pass


@functools.cache
def hw_unavailable(device: str) -> str | None:
    """Why ``device`` (e.g. ``cuda``) cannot decode H.264 here, or None when it can (probed once per process)."""
    try:
        HWAccel(device, options=HW_OPTIONS).create(av.Codec("h264", "r"))
    except Exception as e:  # no GPU, no driver, FFmpeg built without it: each raises something else
        return f"{type(e).__name__}: {e}"
    return None


def hw_device(choice: str, camera: str) -> str | None:
    """The device to decode ``camera`` on for a ``hwaccel`` setting, or None for software."""
    if choice == "off":
        return None
    device = "cuda"
    reason = hw_unavailable(device)
    if reason is None:
        log.info("camera %s: decoding on %s", camera, device)
        return device
    level = logging.INFO if choice == "auto" else logging.WARNING
    log.log(level, "camera %s: hwaccel %s: %s decoding unavailable (%s); decoding in software", camera, choice,
            device, reason)  # fmt: skip
    return None


class _Throttle:
    """Logs the first few occurrences, then one in ``every`` (each line says which attempt it is)."""

    def __init__(self, first: int = 3, every: int = 10) -> None:
        self.first, self.every = first, every

    def __call__(self, attempt: int) -> bool:
        return attempt <= self.first or attempt % self.every == 0


class FrameSource:
    """Decodes one camera in a background thread and hands every frame to ``sink``."""

    def __init__(self, config: SourceConfig, sink: FrameSink, metrics: Metrics, on_reset: Callable[[], None]) -> None:
        self.config, self.sink, self.metrics, self.on_reset = config, sink, metrics, on_reset
        self._url = config.url.get_secret_value()
        self.redact = Redactor(self._url)
        self.is_file = Path(self._url).is_file()
        self.up = False
        self.finished = False  # a non-looping file reached its end
        self.last_frame_at = 0.0  # monotonic
        self._ever_up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{config.name}", daemon=True)
        self._throttle = _Throttle()
        self._labels = {"camera": config.name}
        self._decoded = metrics.frames_decoded.labels(**self._labels)  # bound once: these count every frame
        self.hw_device = hw_device(config.hwaccel, config.name)

    def start(self) -> None:
        self.metrics.stream_up.labels(**self._labels).set(0)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        offset = 0.0  # looping files: stream time continues across restarts
        while not self._stop.is_set():
            try:
                offset = self._stream_once(offset)
                if self.is_file and not self.config.loop:
                    self.finished = True
                    log.info("camera %s: end of file", self.config.name)
                    break
                if self.is_file:
                    attempt = 0
                    continue  # loop: reopen at once; the stream stays up (not a reconnect), the clip buffer restarts
                reason = "end of stream"
            except Stalled as e:
                reason = str(e)
            except Exception as e:  # the thread must survive anything the source throws
                reason = self.redact(f"{type(e).__name__}: {e}")
            self._set_down()
            if self._stop.is_set():
                break
            attempt = 0 if self.last_frame_at and time.monotonic() - self.last_frame_at < 1.0 else attempt
            attempt += 1
            delay = self._backoff(attempt)
            if self._throttle(attempt):
                log.warning(
                    "camera %s (%s): %s; reconnect attempt %d in %.1f s",
                    self.config.name,
                    self.redact.safe,
                    reason,
                    attempt,
                    delay,
                )
            self._stop.wait(delay)
        self._set_down()

    def _backoff(self, attempt: int) -> float:
        base = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (attempt - 1))
        return base * random.uniform(0.8, 1.2)

    def _open(self) -> av.container.InputContainer:
        cfg = self.config
        # A codec the device cannot decode (MJPEG on NVDEC, say) falls back to software inside FFmpeg.
        hw = HWAccel(self.hw_device, allow_software_fallback=True, options=HW_OPTIONS) if self.hw_device else None
        timeout = (cfg.open_timeout_s, cfg.read_timeout_s)
        if self._url.startswith(("rtsp://", "rtsps://")):
            transports = ["tcp", "udp"] if cfg.transport == "auto" else [cfg.transport]
            for i, transport in enumerate(transports):
                try:
                    return av.open(self._url, options={"rtsp_transport": transport}, timeout=timeout, hwaccel=hw)
                except av.FFmpegError:
                    if i == len(transports) - 1:
                        raise
            raise AssertionError("unreachable")
        fmt = "v4l2" if self._url.startswith("/dev/video") else None
        return av.open(self._url, format=fmt, timeout=timeout, hwaccel=hw)

    def _stream_once(self, offset: float) -> float:
        """Decode until the stream ends; returns the stream-time offset for the next loop of a file."""
        container = self._open()
        try:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            if self.config.decode_threads:
                stream.thread_count = self.config.decode_threads
            time_base = float(stream.time_base or 0)
            best_effort = BestEffortTimestamp()
            self.on_reset()
            pace_origin: tuple[float, float] | None = None  # (stream time, monotonic) of the first frame
            clock_origin = time.monotonic()
            last_t = offset
            self.last_frame_at = opened_at = time.monotonic()
            for packet in container.demux(stream):
                if self._stop.is_set():
                    break
                if time.monotonic() - max(self.last_frame_at, opened_at) > self.config.stall_s:
                    raise Stalled(f"no frame for {self.config.stall_s:g} s")
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    self.metrics.frames_dropped.labels(reason="decode_error", **self._labels).inc()
                    continue
                for frame in frames:
                    received = time.time()
                    self.last_frame_at = time.monotonic()
                    self._set_up()
                    self._decoded.inc()
                    ticks = best_effort(frame.pts, frame.dts)
                    t = offset + (ticks * time_base if ticks is not None else self.last_frame_at - clock_origin)
                    if self.is_file and self.config.realtime:
                        pace_origin = pace_origin or (t, time.monotonic())
                        wait = pace_origin[1] + (t - pace_origin[0]) - time.monotonic()
                        if wait > 0 and self._stop.wait(wait):
                            return t
                        received = time.time()  # played as if live: the frame "arrives" now, not when decoded
                    self.sink(frame, t, received)
                    self.last_frame_at = time.monotonic()  # a sink that waited (see Camera) is not a stall
                    last_t = t
            rate = float(stream.average_rate or 25)
            return last_t + 1.0 / rate
        finally:
            container.close()

    def _set_up(self) -> None:
        if not self.up:
            self.up = True
            self.metrics.stream_up.labels(**self._labels).set(1)
            if self._ever_up:
                self.metrics.stream_reconnects.labels(**self._labels).inc()
            self._ever_up = True
            log.info("camera %s (%s): stream up", self.config.name, self.redact.safe)

    def _set_down(self) -> None:
        if self.up:
            self.up = False
            self.metrics.stream_up.labels(**self._labels).set(0)


class Camera:
    """One camera as an async context manager: ``async for clip in camera.clips()`` at the camera's cadence.

    The consumer always gets the newest clip: when it is slower than the camera, the older pending clip is
    dropped and counted (``frames_dropped_total{reason="stale_clip"}``). A file played as fast as it decodes
    (``realtime: false``) has no live edge to keep up with: its thread waits for the consumer to take the pending
    clip instead, so no clip is dropped and decoding uses only the CPU that inference leaves.
    """

    def __init__(self, config: SourceConfig, spec: ModelSpec, metrics: Metrics) -> None:
        self.config, self.spec, self.metrics = config, spec, metrics
        self.buffer = ClipBuffer(spec, self._convert, camera=config.name, every_s=config.every_s)
        self.source = FrameSource(config, self._on_frame, metrics, on_reset=self.buffer.reset)
        self._labels = {"camera": config.name}
        self._sampled = metrics.frames_sampled.labels(**self._labels)
        self._reformatter = VideoReformatter()  # used by the source thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Queue[Clip] = asyncio.Queue(maxsize=1)
        self._counted = (0, 0)
        self.paced_by_consumer = self.source.is_file and not config.realtime
        self._room = threading.Event()  # set while no clip is pending (waited on when paced by the consumer)
        self._room.set()

    def _convert(self, frame: av.VideoFrame):
        spec = self.spec
        return to_model_rgb(
            frame, resize_short=spec.resize_short, size=spec.crop_size, reformatter=self._reformatter, threads=1
        )

    def _on_frame(self, frame: av.VideoFrame, t: float, received: float) -> None:  # source thread
        clip = self.buffer.push(frame, t, received)
        converted, dropped = self.buffer.converted, self.buffer.dropped
        if converted != self._counted[0]:
            self._sampled.inc(converted - self._counted[0])
        if dropped != self._counted[1]:
            self.metrics.frames_dropped.labels(reason="out_of_order", **self._labels).inc(dropped - self._counted[1])
        self._counted = (converted, dropped)
        if clip is not None and self._loop is not None:
            if self.paced_by_consumer:
                while not self._room.wait(0.1) and not self.source.stopping:
                    pass
                self._room.clear()
            self._loop.call_soon_threadsafe(self._offer, clip)

    def _offer(self, clip: Clip) -> None:  # event loop
        if self._pending.full():
            self._pending.get_nowait()
            self.metrics.frames_dropped.labels(reason="stale_clip", **self._labels).inc()
        self._pending.put_nowait(clip)

    @property
    def up(self) -> bool:
        return self.source.up

    async def __aenter__(self) -> Camera:
        self._loop = asyncio.get_running_loop()
        self.source.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.source.stop()
        await asyncio.to_thread(self.source.join, self.config.read_timeout_s + 5)

    async def clips(self) -> AsyncIterator[Clip]:
        """Ready clips (newest only, or every one for a consumer-paced file); ends when a non-looping file has been
        played and its clips taken."""
        while True:
            if self.source.finished and self._pending.empty():
                await asyncio.sleep(0)  # the last clip's offer was queued on this loop before the end was flagged
                if self._pending.empty():
                    return
            if not self._pending.empty():  # the usual case under load
                clip = self._pending.get_nowait()
                self._room.set()
                yield clip
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the clip and loses a cancel that arrives
            # as the clip does (CPython gh-86296); the camera's task then never stops and neither does the agent.
            try:
                async with asyncio.timeout(0.5):
                    clip = await self._pending.get()
            except TimeoutError:
                continue
            self._room.set()
            yield clip
