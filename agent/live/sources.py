"""Camera sources: decode with PyAV in one thread per camera, keep the clip buffer fresh, reconnect forever.

Why a thread per source (not a process, not the event loop): PyAV releases the GIL while demuxing, decoding and
scaling, so threads decode in parallel; frames then land in the clip buffer without crossing a process boundary
(no copies), and the event loop never waits on FFmpeg. One bad camera only ever stalls its own thread.

Hardware decoding (``hwaccel``): NVDEC through PyAV's hwaccel, frames copied back to host memory (only the sampled
ones are then converted); when an entry of the stream converts with the graph on CUDA (``convert: graph``,
:mod:`agent.live.graphconvert`), the frames stay in GPU memory instead and only what is converted on the CPU is
downloaded. Whether the device works is probed once per process; when it does not, cameras decode in software and
say so once.

One decode per stream: camera entries that name the same stream (:func:`agent.config.stream_key`) share one
:class:`Stream`: one connection, one thread, one decoder. Each decoded frame is handed to every entry (a
:class:`Camera`: its own region, mask, model, clip buffer and ``every_s``), which converts only the frames its clips
sample. The stream's reconnects and status are every entry's (``stream_up`` and ``stream_reconnects_total`` are set
for each entry's name); frames are decoded, and counted in ``frames_decoded_total``, once, under the name of the
stream's first entry.

Watchdog: PyAV's read timeout interrupts a blocked read; a stream that keeps sending packets but yields no frame
for ``stall_s`` is closed too. Either way the source reconnects with exponential backoff and jitter; the backoff
starts afresh only after the stream stayed up for :data:`STABLE_S`, so a camera that accepts, sends a few frames and
drops is not redialled every second.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import av
from av.codec.hwaccel import HWAccel

from agent.config import SourceConfig
from agent.frames import BestEffortTimestamp, Converter
from agent.live.clips import Clip, ClipBuffer
from agent.live.device import ring_factory
from agent.live.flowclips import FlowBuffer
from agent.live.graphconvert import CPU, Conversion, GraphConverter
from agent.metrics import Metrics
from agent.spec import ModelSpec
from agent.urls import Redactor

log = logging.getLogger("actionstream.sources")

# Every camera decodes in the device's primary CUDA context (ONNX Runtime's too), not in a context of its own.
HW_OPTIONS: dict[str, object] = {"primary_ctx": "1"}
STOP_S = 5.0  # a stopping camera waits this long for its thread
SYSTEM_CA_FILES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
FPS_WINDOW_S = 2.0  # a camera's decoded frame rate is measured over windows this long
STABLE_S = 30.0  # a stream that stayed up this long starts its reconnect backoff afresh when it drops
# frame, stream time (s), received at: UNIX s and the same instant on the monotonic clock
FrameSink = Callable[[av.VideoFrame, float, float, float], None]


class PacketTap(Protocol):
    """Sees the compressed packets of a source's stream as they are read (evidence clips), in its thread."""

    def opened(self, stream: av.video.stream.VideoStream) -> None:
        """A connection opened (again): packets from now on belong to ``stream``."""
        ...

    def packet(self, packet: av.Packet, received_at: float) -> None:
        """One packet of the stream, read at ``received_at`` (UNIX s)."""
        ...

    def closed(self) -> None:
        """The connection ended (or the stream restarts: a looping file)."""
        ...


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


def local_path(url: str) -> str | None:
    """The file a ``file://`` URL names (percent-decoded), or None for any other URL."""
    if url[:7].lower() != "file://":
        return None
    parts = urlsplit(url)
    return unquote(parts.path) if parts.netloc in ("", "localhost") else f"//{parts.netloc}{unquote(parts.path)}"


def tls_options(url: str, config: SourceConfig) -> dict[str, str]:
    """FFmpeg's TLS options for an ``rtsps://`` or ``https://`` camera: the certificate is verified (against
    ``ca_file``, else the system's CA bundle) unless ``tls_insecure``; nothing for other URLs."""
    if not url.lower().startswith(("rtsps://", "https://")):
        return {}
    if config.tls_insecure:
        return {"tls_verify": "0"}
    ca_file = config.ca_file or next((p for p in SYSTEM_CA_FILES if Path(p).is_file()), None)
    return {"tls_verify": "1"} | ({"ca_file": str(ca_file)} if ca_file else {})


class _Throttle:
    """Logs the first few occurrences, then one in ``every`` (each line says which attempt it is)."""

    def __init__(self, first: int = 3, every: int = 10) -> None:
        self.first, self.every = first, every

    def __call__(self, attempt: int) -> bool:
        return attempt <= self.first or attempt % self.every == 0


class FrameSource:
    """Decodes one stream in a background thread and hands every frame to ``sink``. ``cameras``: the names of the
    camera entries that use the stream (default: ``config.name``); its status and reconnects are set for each of
    them, its frames counted under the first."""

    def __init__(
        self,
        config: SourceConfig,
        sink: FrameSink,
        metrics: Metrics,
        on_reset: Callable[[], None],
        next_clip_t: Callable[[], float | None] = lambda: None,
        *,
        decode: bool = True,
        cameras: Sequence[str] | None = None,
    ) -> None:
        self.config, self.sink, self.metrics, self.on_reset = config, sink, metrics, on_reset
        self.cameras = list(cameras or [config.name])
        self.name = ", ".join(self.cameras)  # in logs
        self.decode = decode  # False: read packets for the tap only (an evidence stream), decode nothing
        self.taps: list[PacketTap] = []
        self.next_clip_t = next_clip_t  # stream time of the frame the next clip waits for (see _Pacer)
        url = config.stream_url()
        self.redact = Redactor(url)
        self._url = local_path(url) or url
        self.is_file = Path(self._url).is_file()
        self.transport: str | None = None  # RTSP: the transport the stream opened with
        self.codec: str | None = None  # the decoder of the stream as opened (h264, hevc, mjpeg...)
        self.frames_on_device = False  # NVDEC: frames stay in GPU memory (set by an entry converting there)
        self.up = False
        self.finished = False  # a non-looping file reached its end
        self.last_frame_at = 0.0  # monotonic
        self._ever_up = False
        self._up_since = 0.0  # monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"source-{config.name}", daemon=True)
        self._throttle = _Throttle()
        self._labels = {"camera": self.cameras[0]}  # the stream's own counters: under its first entry's name
        self._decoded = metrics.frames_decoded.labels(**self._labels)  # bound once: these count every frame
        self._up = [metrics.stream_up.labels(camera=name) for name in self.cameras]
        self._reconnects = [metrics.stream_reconnects.labels(camera=name) for name in self.cameras]
        self.hw_device = hw_device(config.hwaccel, self.name)

    def start(self) -> None:
        for gauge in self._up:
            gauge.set(0)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        attempt = 0
        offset = 0.0  # looping files: stream time continues across restarts
        while not self._stop.is_set():
            try:
                offset = self._stream_once(offset)
                if self._stop.is_set():
                    break
                if self.is_file and not self.config.loop:
                    self.finished = True
                    log.info("camera %s: end of file", self.name)
                    break
                if self.is_file:
                    attempt = 0
                    continue  # loop: reopen at once; the stream stays up (not a reconnect), the clip buffer restarts
                reason = "end of stream"
            except Stalled as e:
                reason = str(e)
            except Exception as e:  # the thread must survive anything the source throws
                reason = self.redact(f"{type(e).__name__}: {e}")
            stayed_up = self._up_for()
            self._set_down()
            if self._stop.is_set():
                break
            attempt = 0 if stayed_up >= STABLE_S else attempt  # a stream that flaps keeps backing off
            attempt += 1
            delay = self._backoff(attempt)
            if self._throttle(attempt):
                log.warning(
                    "camera %s (%s): %s; reconnect attempt %d in %.1f s",
                    self.name,
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
        try:
            return self._open_stream()
        except av.FFmpegError as e:
            if tls_options(self._url, self.config).get("tls_verify") == "1":  # FFmpeg says only "Input/output error"
                hint = "is the camera's certificate trusted and for this host? cameras[].ca_file, or tls_insecure"
                raise ConnectionError(f"{e} ({hint})") from None
            raise

    def _open_stream(self) -> av.container.InputContainer:
        cfg = self.config
        # A codec the device cannot decode (MJPEG on NVDEC, say) falls back to software inside FFmpeg.
        hw = None
        if self.hw_device:
            hw = HWAccel(
                self.hw_device, allow_software_fallback=True, options=HW_OPTIONS, is_hw_owned=self.frames_on_device
            )
        timeout = (cfg.open_timeout_s, cfg.read_timeout_s)
        options = tls_options(self._url, cfg)
        if self._url.startswith(("rtsp://", "rtsps://")):
            transports = ["tcp", "udp"] if cfg.transport == "auto" else [cfg.transport]
            for i, transport in enumerate(transports):
                try:
                    opts = options | {"rtsp_transport": transport}
                    container = av.open(self._url, options=opts, timeout=timeout, hwaccel=hw)
                    self.transport = transport
                    return container
                except av.FFmpegError:
                    if i == len(transports) - 1:
                        raise
            raise AssertionError("unreachable")
        fmt = "v4l2" if self._url.startswith("/dev/video") else None
        self.transport = None
        return av.open(self._url, format=fmt, options=options, timeout=timeout, hwaccel=hw)

    def _stream_once(self, offset: float) -> float:
        """Decode until the stream ends; returns the stream-time offset for the next loop of a file."""
        container = self._open()
        try:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            self.codec = stream.codec_context.name
            if self.config.decode_threads:
                stream.thread_count = self.config.decode_threads
            time_base = float(stream.time_base or 0)
            best_effort = BestEffortTimestamp()
            self.on_reset()
            for tap in self.taps:
                tap.opened(stream)
            pacer = self._pacer(1.0 / float(stream.average_rate or 25))
            clock_origin = time.monotonic()
            last_t = offset
            self.last_frame_at = opened_at = read_from = time.monotonic()
            for packet in container.demux(stream):
                fresh = time.monotonic() - read_from > pacer.frame_s / 4  # the read waited: the packet came just now
                if self._stop.is_set():
                    break
                if time.monotonic() - max(self.last_frame_at, opened_at) > self.config.stall_s:
                    raise Stalled(f"no frame for {self.config.stall_s:g} s")
                if not self.decode:  # an evidence stream: packets only (a file's at its own pace)
                    if packet.size:
                        t = offset + (packet.pts or 0) * time_base
                        if packet.pts is not None and self._pause(pacer.wait_before(t, time.monotonic())):
                            return last_t
                        self.last_frame_at = time.monotonic()
                        self._set_up()
                        self._tap(packet)
                        last_t = max(last_t, t)
                    read_from = time.monotonic()
                    continue
                if packet.size and self.taps:
                    self._tap(packet)
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    self.metrics.frames_dropped.labels(reason="decode_error", **self._labels).inc()
                    read_from = time.monotonic()
                    continue
                for frame in frames:
                    self.last_frame_at = now = time.monotonic()
                    self._set_up()
                    self._decoded.inc()
                    ticks = best_effort(frame.pts, frame.dts)
                    t = offset + (ticks * time_base if ticks is not None else now - clock_origin)
                    pacer.observe(t, now)
                    if self._pause(pacer.wait_before(t, now)):
                        return t
                    handed, wall = time.monotonic(), time.time()
                    lag = pacer.lag(t, handed, fresh)
                    self.sink(frame, t, wall - lag, handed - lag)
                    self.last_frame_at = time.monotonic()  # a sink that waited (see Camera) is not a stall
                    last_t, fresh = t, False
                    if self._pause(pacer.wait_after(t, self.last_frame_at)):
                        return t
                read_from = time.monotonic()
            return last_t + pacer.frame_s
        finally:
            for tap in self.taps:
                tap.closed()
            container.close()

    def _tap(self, packet: av.Packet) -> None:
        received = time.time()
        for tap in self.taps:
            tap.packet(packet, received)

    def _pacer(self, frame_s: float) -> _Pacer:
        cfg = self.config
        if self.is_file:
            mode = "file" if cfg.realtime else "off"
        else:  # a datagram lost to a full socket buffer is a broken frame: over UDP, every packet is read at once
            mode = "live" if self.transport != "udp" else "off"
        return _Pacer(mode, cfg.read_burst_s, self.next_clip_t, frame_s)

    def _pause(self, seconds: float) -> bool:
        """Sleeps ``seconds`` (if positive); True when the source was stopped meanwhile."""
        return seconds > 0 and self._stop.wait(seconds)

    def _up_for(self) -> float:
        """Seconds the stream has been up (0 while down)."""
        return self.last_frame_at - self._up_since if self.up else 0.0

    def _set_up(self) -> None:
        if not self.up:
            self.up = True
            self._up_since = time.monotonic()
            for gauge in self._up:
                gauge.set(1)
            if self._ever_up:
                for counter in self._reconnects:
                    counter.inc()
            self._ever_up = True
            log.info("camera %s (%s): stream up", self.name, self.redact.safe)

    def _set_down(self) -> None:
        if self.up:
            self.up = False
            for gauge in self._up:
                gauge.set(0)


class _Pacer:
    """When a source's thread hands each frame on, and when the frame counts as received (capture→publish starts
    there).

    ``file``: a file played in real time; frame ``t`` is due ``t - t0`` after the first and is not handed on before.
    ``live``: frames come when the camera sends them. ``off``: each frame as soon as it is read (files paced by their
    consumer; live streams over UDP).

    Frames that no clip is waiting for yet may stay in the buffer (the file, or the socket) for up to ``burst_s``
    and are then read in one go. Waking a camera's thread costs more than decoding a sub-stream frame (its caches go
    cold between wake-ups), so a few frames per wake-up cost clearly less CPU each. No clip waits for it: the thread
    is awake, and reads the frame at once, for the frame each clip ends on (``next_clip_t``: live, from a frame
    early). A frame read late counts as received when it was due (files) or when it most likely came (live: by the
    stream's clock, set by the frames whose packet the thread had to wait for, which came just then and count as
    received when they were read).

    Timestamps jump (an NTP step, an RTCP re-sync, a proxy switching sources): a step back or forward by more than
    :meth:`jump_s` re-bases the clock on the frame that made it, and no wait is ever longer than ``burst_s`` plus two
    frame intervals, so the thread (and the stall watchdog on it) never sleeps through a jump.
    """

    CREEP = 0.01

    def __init__(self, mode: str, burst_s: float, next_clip_t: Callable[[], float | None], frame_s: float) -> None:
        self.mode, self.burst_s, self.next_clip_t, self.frame_s = mode, burst_s, next_clip_t, frame_s
        self.offset: float | None = None  # monotonic clock − stream time at which frames come
        self.last_fresh: float | None = None  # live: stream time of the last frame whose packet was waited for
        self.fresh_at: float | None = None  # live: monotonic time at which that frame was read
        self.last_t: float | None = None  # stream time of the last frame seen
        self.max_wait = burst_s + 2 * frame_s

    @property
    def jump_s(self) -> float:
        """A step forward between two frames longer than this is a jump, not a gap: 1 s, or four frame intervals."""
        return max(1.0, 4 * self.frame_s)

    def observe(self, t: float, now: float) -> None:
        """Frame ``t`` was read at monotonic ``now``: a jump from the last one re-bases the clock."""
        last, self.last_t = self.last_t, t
        if last is not None and abs(t - last) > self.jump_s:
            self.offset = now - t if self.mode == "file" else None  # live: the next fresh frame sets it
            self.last_fresh = self.fresh_at = None

    def _hold_until(self, t: float, lead: float) -> float:
        """Stream time until which frame ``t``, and those after it, may wait."""
        due = self.next_clip_t()
        return t if due is None or not self.burst_s else max(t, min(due - lead, t + self.burst_s))

    def wait_before(self, t: float, now: float) -> float:
        """Seconds to wait before handing frame ``t`` on (files in real time): none once it is due, else until it
        and the frames after it that no clip waits for are."""
        if self.mode != "file":
            return 0.0
        if self.offset is None:
            self.offset = now - t
        if self.offset + t <= now:
            return 0.0
        return min(self.offset + self._hold_until(t, 0.0) - now, self.max_wait)

    def wait_after(self, t: float, now: float) -> float:
        """Seconds to leave the next frames in the buffer after handing frame ``t`` on (live): none while the next
        one should be there already."""
        if self.mode != "live" or self.offset is None or self.offset + t + self.frame_s <= now:
            return 0.0
        return min(self.offset + self._hold_until(t, self.frame_s) - now, self.max_wait)

    def lag(self, t: float, now: float, fresh: bool) -> float:
        """How long before monotonic ``now`` (when it is handed on) frame ``t`` counts as received. ``fresh``: its
        packet was waited for, so it came just now (live: it also sets the stream clock)."""
        if self.mode == "live" and fresh:
            lag, last = now - t, self.last_fresh
            if last is None or self.offset is None or t < last or lag > self.offset + 1.0:
                self.offset = lag  # the first, or the stream's clock jumped back
            else:  # the lowest lag (jitter only ever adds some), rising 10 ms a second while none is as low
                self.offset = min(lag, self.offset + self.CREEP * (t - last))
            self.last_fresh, self.fresh_at = t, now
            return 0.0
        if self.offset is None:
            return 0.0
        lag = max(0.0, now - (self.offset + t))
        # A frame read from the buffer came after the last one the thread waited for, never before it.
        return lag if self.fresh_at is None else min(lag, max(0.0, now - self.fresh_at))


class Stream:
    """One stream decoded once for every camera entry that names it (see the module docstring): its
    :class:`FrameSource` hands each frame to each entry, restarts their clip buffers together, and reads the next
    frame as soon as any entry's next clip waits for it. Its thread runs while any entry is entered."""

    def __init__(self, config: SourceConfig, metrics: Metrics, cameras: Sequence[str] | None = None) -> None:
        self.entries: list[Camera] = []
        self.source = FrameSource(
            config, self._on_frame, metrics, on_reset=self._reset, next_clip_t=self._next_clip_t, cameras=cameras
        )
        self._users = 0

    def add(self, camera: Camera) -> None:
        self.entries.append(camera)

    def open(self) -> None:
        """An entry starts: the first one starts the thread."""
        self._users += 1
        if self._users == 1:
            self.source.start()

    def close(self, camera: Camera) -> bool:
        """An entry stops (it gets no more frames); True when it was the last one (the thread is told to stop)."""
        self.entries = [e for e in self.entries if e is not camera]  # a new list: the thread may be iterating
        self._users -= 1
        if self._users == 0:
            self.source.stop()
            return True
        return False

    def _on_frame(self, frame: av.VideoFrame, t: float, received: float, received_mono: float) -> None:  # source
        for entry in self.entries:
            entry._on_frame(frame, t, received, received_mono)

    def _reset(self) -> None:
        for entry in self.entries:
            entry.reset()

    def _next_clip_t(self) -> float | None:
        """The stream time of the frame the next clip of any entry ends at (None while any entry has no frame)."""
        return earliest(entry.next_clip_t() for entry in self.entries)


def earliest(dues: Iterable[float | None]) -> float | None:
    """The earliest of ``dues``, or None when any is None (a clip buffer before its first frame)."""
    due: float | None = None
    for t in dues:
        if t is None:
            return None
        due = t if due is None else min(due, t)
    return due


class Camera:
    """One camera entry as an async context manager: ``async for clip in camera.clips()`` at the entry's cadence.

    Its frames come from ``stream`` (shared with the other entries that name it), or from a stream of its own. Each
    sampled frame is converted for the entry's model: its ``region`` cut out, resized and cropped, its ``mask``
    filled, by swscale (:class:`agent.frames.Converter`) or, with a ``conversion`` of mode graph, by the conversion
    graph (:class:`agent.live.graphconvert.GraphConverter`; its clips then may live in GPU memory); each clip carries
    the region it shows.

    The consumer always gets the newest clip: when it is slower than the camera, the older pending clip is
    dropped and counted (``frames_dropped_total{reason="stale_clip"}``). A file played as fast as it decodes
    (``realtime: false``) has no live edge to keep up with: its thread waits for the consumer to take the pending
    clip instead, so no clip is dropped and decoding uses only the CPU that inference leaves.

    A camera may feed several models (``spec``: a mapping of model name to spec; fusion): one clip buffer each, the
    newest clip of each model pending, its clips named by ``Clip.model``. A flow model's buffer keeps grey whole
    frames (:class:`agent.live.flowclips.FlowBuffer`): its flow is computed later, in the camera's flow thread.
    """

    def __init__(
        self,
        config: SourceConfig,
        spec: ModelSpec | Mapping[str, ModelSpec],
        metrics: Metrics,
        stream: Stream | None = None,
        *,
        conversion: Conversion = CPU,
    ) -> None:
        specs: dict[str | None, ModelSpec] = {None: spec} if isinstance(spec, ModelSpec) else dict(spec.items())
        self.config, self.spec, self.metrics = config, next(iter(specs.values())), metrics
        self.conversion = conversion
        if conversion.mode == "graph" and (len(specs) > 1 or self.spec.flow_input is not None):
            raise ValueError("the conversion graph converts for one RGB model; fused cameras and flow models: cpu")
        self.stream = stream or Stream(config, metrics)
        self.stream.add(self)
        self.source = self.stream.source
        region, mask = getattr(config, "region", None), getattr(config, "mask", [])
        # One converter per model (each its own size), used by the source thread only. A flow model's frames are
        # of the whole region, not cropped: its flow is computed on them and cropped after.
        self.converters: dict[str | None, Converter | GraphConverter] = {}
        self.buffers: dict[str | None, ClipBuffer | FlowBuffer] = {}
        source = self.source
        for name, one in specs.items():
            if conversion.mode == "graph":
                converter: Converter | GraphConverter = GraphConverter(
                    one, conversion, region=region, mask=mask, codec=lambda: source.codec
                )
                source.frames_on_device |= conversion.device == "cuda"
            else:
                converter = Converter(one, region=region, mask=mask, threads=1, crop=one.flow_input is None)
            self.converters[name] = converter
            if one.flow_input is not None:
                self.buffers[name] = FlowBuffer(one, converter, camera=config.name, every_s=config.every_s)
            else:
                ring = ring_factory(conversion.where) if conversion.on_device else None
                self.buffers[name] = ClipBuffer(one, converter, camera=config.name, every_s=config.every_s, ring=ring)
        self._labels = {"camera": config.name}
        self._sampled = metrics.frames_sampled.labels(**self._labels)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Queue[Clip] = asyncio.Queue(maxsize=len(self.buffers))  # the newest of each model
        self._counted = dict.fromkeys(self.buffers, (0, 0))
        self.paced_by_consumer = self.source.is_file and not config.realtime
        self._room = threading.Event()  # set while no clip is pending (waited on when paced by the consumer)
        self._room.set()
        self.latest: tuple[av.VideoFrame, float] | None = None  # the newest decoded frame and its receive time
        self.fps = 0.0  # decoded frames per second, over the last few seconds
        self._fps_window = (0.0, 0)  # (monotonic start, frames since)

    def reset(self) -> None:  # source
        for buffer in self.buffers.values():
            buffer.reset()

    def next_clip_t(self) -> float | None:  # source
        """The stream time of the frame the next clip of any of its models ends at (None before the first frame)."""
        return earliest(buffer.next_clip_t() for buffer in self.buffers.values())

    def _on_frame(self, frame: av.VideoFrame, t: float, received: float, received_mono: float) -> None:  # source
        self.latest = (frame, received)
        since, count = self._fps_window
        if received_mono - since >= FPS_WINDOW_S:
            self.fps = count / (received_mono - since) if since else 0.0
            self._fps_window = (received_mono, 1)
        else:
            self._fps_window = (since, count + 1)
        for model, buffer in self.buffers.items():
            clip = buffer.push(frame, t, received, received_mono)
            (was_converted, was_dropped), converted, dropped = self._counted[model], buffer.converted, buffer.dropped
            if converted != was_converted:
                self._sampled.inc(converted - was_converted)
            if dropped != was_dropped:
                self.metrics.frames_dropped.labels(reason="out_of_order", **self._labels).inc(dropped - was_dropped)
            self._counted[model] = (converted, dropped)
            if clip is not None and self._loop is not None:
                if model is not None:
                    clip = replace(clip, model=model)
                if self.converters[model].region is not None:
                    clip = replace(clip, region=self.converters[model].region_of(frame))
                if self.paced_by_consumer:
                    while not self._room.wait(0.1) and not self.source.stopping:
                        pass
                    self._room.clear()
                self._loop.call_soon_threadsafe(self._offer, clip)

    def _offer(self, clip: Clip) -> None:  # event loop
        for _ in range(self._pending.qsize()):  # an older clip of the same model gives way; the others keep waiting
            waiting = self._pending.get_nowait()
            if waiting.model == clip.model:
                self.metrics.frames_dropped.labels(reason="stale_clip", **self._labels).inc()
            else:
                self._pending.put_nowait(waiting)
        self._pending.put_nowait(clip)

    @property
    def up(self) -> bool:
        return self.source.up

    async def __aenter__(self) -> Camera:
        self._loop = asyncio.get_running_loop()
        self.stream.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stops the source and waits for its thread, at most :data:`STOP_S` (a thread stuck opening a stream is
        left behind: it ends with the process). Many cameras stop in parallel: this waits on the event loop, not in
        a thread of its own."""
        self._room.set()  # a consumer-paced file's thread may wait for this entry's consumer: no more
        if not self.stream.close(self):
            return  # other entries still use the stream
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_S
        while self.source.alive and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self.source.alive:
            log.warning(
                "camera %s: its stream is still busy after %.0f s; not waiting for it", self.source.name, STOP_S
            )

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
