"""A camera's evidence video: a ring of its compressed packets, and the clips remuxed from it.

:class:`Recorder` is a :class:`~agent.live.sources.PacketTap`: the source's thread hands it every packet it reads
(the model's stream, or ``record_url``'s, read by an :class:`EvidenceStream` of its own). Nothing is decoded or
encoded to record: packets are copied into the ring and written into MP4 files as they are (a remux).

The ring keeps the packets from the last keyframe at least ``history_s`` old (``pre_s`` plus the time the event
tracker takes to decide that an action started), and at most ``evidence.ring_mb`` of them (whole groups of
pictures are dropped from the front beyond that). :meth:`Recorder.start` opens a clip with the ring's packets from
the last keyframe at or before ``since``; each packet read after that is appended, until a packet received after
the clip's ``until`` (the action's end plus ``post_s``, set by :meth:`Recorder.end`) or its cap (``max_clip_s``
after its start). The clip is written as ``NAME.mp4.part`` and renamed to ``NAME.mp4`` when it is complete;
``done`` is called (in whichever thread completed it) with the outcome.

A new connection (a reconnect, a looping file starting again) may bring other codec parameters: it closes the
clips in progress (they end where the old connection did) and empties the ring. :meth:`Recorder.sweep` closes the
clips whose stream sends nothing any more.

:meth:`Recorder.frame_at` decodes the frame received at or just before a given time from the ring (from the keyframe
before it), for snapshots of an evidence stream, whose frames are otherwise never decoded.

Everything that touches the ring or a clip holds the recorder's lock: the source's thread (each packet), and the
evidence worker threads (start, end, sweep, frame_at's copy of the packets).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from agent.config import SourceConfig
from agent.live.sources import FrameSource
from agent.metrics import Metrics

log = logging.getLogger("actionstream.evidence")
SWEEP_GRACE_S = 2.0  # a clip whose stream sent nothing this long after it was due is closed by sweep()


@dataclass(frozen=True)
class _Packet:
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool
    received_at: float  # UNIX s


@dataclass(frozen=True)
class Finished:
    """A clip's outcome: ``path`` (the final file) and ``size`` when written, else ``reason`` why not."""

    camera: str
    action_id: str
    path: Path | None
    size: int
    start: float  # UNIX s of its first packet (0 when none)
    end: float  # UNIX s of its last packet
    reason: str = ""  # "" when complete; "max_length" when capped; else why there is no file


class _Clip:
    """One MP4 being written (under the recorder's lock)."""

    def __init__(
        self, action_id: str, final: Path, stream: av.video.stream.VideoStream, time_base: Fraction, cap: float
    ) -> None:
        self.action_id, self.final = action_id, final
        self.camera = ""  # the camera entry whose action this is
        self.part = final.with_name(final.name + ".part")
        final.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.part), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream_from_template(stream)
        self.time_base = time_base
        self.until = math.inf
        self.cap = cap
        self.origin: int | None = None  # first dts (or pts): the clip's time 0
        self.last_dts: int | None = None
        self.first_at = self.last_at = 0.0
        self.packets = 0

    def write(self, p: _Packet) -> None:
        dts = p.dts if p.dts is not None else p.pts
        if dts is None:
            return
        if self.origin is None:
            if not p.keyframe:
                return  # a clip starts at a keyframe
            self.origin, self.first_at = dts, p.received_at
        if self.last_dts is not None and dts <= self.last_dts:
            return  # a timestamp going back (a camera's clock step): MP4 needs increasing ones
        packet = av.Packet(p.data)
        packet.dts = dts - self.origin
        packet.pts = (p.pts if p.pts is not None else dts) - self.origin
        packet.duration = p.duration
        packet.time_base = self.time_base
        packet.is_keyframe = p.keyframe
        packet.stream = self.stream
        self.container.mux(packet)
        self.last_dts, self.last_at = dts, p.received_at
        self.packets += 1

    def finish(self, camera: str, reason: str = "") -> Finished:
        """Closes the file; renames it to its final name when it holds video."""
        try:
            self.container.close()
        except Exception as e:  # a full disk, say
            self.discard()
            return Finished(camera, self.action_id, None, 0, self.first_at, self.last_at, f"error: {e}")
        if not self.packets:
            self.discard()
            return Finished(camera, self.action_id, None, 0, 0.0, 0.0, reason or "no_video")
        os.replace(self.part, self.final)
        size = self.final.stat().st_size
        return Finished(camera, self.action_id, self.final, size, self.first_at, self.last_at, reason)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()
        with contextlib.suppress(OSError):
            self.part.unlink()


class Recorder:
    """One camera's ring and clips (see the module docstring)."""

    def __init__(
        self,
        camera: str,
        *,
        history_s: float,
        ring_bytes: int,
        max_clip_s: float,
        done: Callable[[Finished], None],
    ) -> None:
        self.camera, self.history_s, self.ring_bytes, self.max_clip_s = camera, history_s, ring_bytes, max_clip_s
        self.done = done
        self._lock = threading.Lock()
        self._ring: deque[_Packet] = deque()
        self._keys: deque[_Packet] = deque()  # the ring's keyframes, oldest first (ring[0] is keys[0])
        self._bytes = 0
        self._stream: av.video.stream.VideoStream | None = None
        self._time_base: Fraction | None = None
        self._codec: tuple[str, bytes | None] | None = None  # decoder name and extradata, for frame_at
        self._clips: dict[str, _Clip] = {}
        self.size: tuple[int, int] | None = None  # the stream's width and height

    # -- PacketTap: the source's thread ----------------------------------------------------------------------------

    def opened(self, stream: av.video.stream.VideoStream) -> None:
        with self._lock:
            finished = self._finish_all("stream_restarted")
            self._clear()
            self._stream = stream
            self._time_base = stream.time_base or Fraction(1, 90000)
            context = stream.codec_context
            self._codec = (context.name, bytes(context.extradata) if context.extradata else None)
            self.size = (context.width, context.height)
        self._report(finished)

    def packet(self, packet: av.Packet, received_at: float) -> None:
        record = _Packet(
            bytes(packet), packet.pts, packet.dts, packet.duration or 0, packet.is_keyframe, received_at
        )  # fmt: skip
        finished = []
        with self._lock:
            self._append(record)
            self._trim(received_at)
            if not self._clips:
                return
            for action_id, clip in list(self._clips.items()):
                if received_at > clip.until or received_at > clip.cap:
                    del self._clips[action_id]
                    finished.append(clip.finish(clip.camera, "" if received_at > clip.until else "max_length"))
                    continue
                try:
                    clip.write(record)
                except Exception as e:
                    del self._clips[action_id]
                    clip.discard()
                    finished.append(Finished(clip.camera, action_id, None, 0, 0.0, 0.0, f"error: {e}"))
        self._report(finished)

    def closed(self) -> None:
        with self._lock:
            finished = self._finish_all("stream_lost")
            self._stream = None
            self._clear()
        self._report(finished)

    def _clear(self) -> None:
        self._ring.clear()
        self._keys.clear()
        self._bytes = 0

    def _append(self, record: _Packet) -> None:
        if not self._ring and not record.keyframe:
            return  # nothing decodes before the first keyframe
        self._ring.append(record)
        self._bytes += len(record.data)
        if record.keyframe:
            self._keys.append(record)

    def _trim(self, now: float) -> None:
        """Drops whole groups of pictures from the front while the next keyframe is old enough, or the ring holds
        too much (amortised O(1) a packet)."""
        ring, keys = self._ring, self._keys
        while len(keys) >= 2 and (keys[1].received_at <= now - self.history_s or self._bytes > self.ring_bytes):
            keys.popleft()
            while ring[0] is not keys[0]:
                self._bytes -= len(ring.popleft().data)
        if self._bytes > self.ring_bytes:  # one group of pictures larger than the ring: keep none
            self._clear()

    # -- the evidence workers --------------------------------------------------------------------------------------

    def available(self) -> bool:
        """Whether the stream is open (a clip started now records)."""
        return self._stream is not None

    def start(self, action_id: str, since: float, final: Path, camera: str | None = None) -> bool:
        """Opens a clip from the last keyframe at or before ``since`` (the oldest one held, if none is that old) for
        ``camera``'s action (default: the recorder's; camera entries that share a stream share its recorder); False
        when the stream is not open (or the file cannot be opened)."""
        with self._lock:
            if self._stream is None or self._time_base is None or action_id in self._clips:
                return False
            try:
                clip = _Clip(action_id, final, self._stream, self._time_base, since + self.max_clip_s)
                clip.camera = camera or self.camera
            except Exception as e:
                log.error("camera %s: cannot write clip %s: %s", camera or self.camera, final, e)
                return False
            ring = list(self._ring)
            keys = [i for i, p in enumerate(ring) if p.keyframe]
            at = [ring[i].received_at for i in keys]
            first = keys[max(0, bisect.bisect_right(at, since) - 1)] if keys else len(ring)
            try:
                for p in ring[first:]:
                    clip.write(p)
            except Exception as e:
                clip.discard()
                log.error("camera %s: clip %s: %s", clip.camera, final.name, e)
                return False
            self._clips[action_id] = clip
            return True

    def end(self, action_id: str, until: float) -> None:
        """The clip takes packets received up to ``until`` (then it is complete)."""
        with self._lock:
            clip = self._clips.get(action_id)
            if clip is not None:
                clip.until = min(clip.until, until)

    def sweep(self, now: float | None = None) -> None:
        """Closes the clips that are due while their stream sends nothing."""
        now = time.time() if now is None else now
        finished = []
        with self._lock:
            for action_id, clip in list(self._clips.items()):
                if min(clip.until, clip.cap) < now - SWEEP_GRACE_S:
                    del self._clips[action_id]
                    finished.append(clip.finish(clip.camera, "" if clip.until <= clip.cap else "max_length"))
        self._report(finished)

    def stop(self) -> None:
        """The agent stops: every clip ends where it is."""
        with self._lock:
            finished = self._finish_all("")
        self._report(finished)

    @property
    def recording(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._clips)

    def frame_at(self, at: float) -> av.VideoFrame | None:
        """The frame received at or just before ``at`` (the oldest held, if none is that old), decoded from the
        ring; None when the ring holds no keyframe."""
        with self._lock:
            ring, codec, time_base = list(self._ring), self._codec, self._time_base
        if codec is None or time_base is None:
            return None
        keys = [i for i, p in enumerate(ring) if p.keyframe]
        if not keys:
            return None
        received = [p.received_at for p in ring]
        last = max(bisect.bisect_right(received, at) - 1, keys[0])
        first = keys[max(0, bisect.bisect_right([received[i] for i in keys], at) - 1)]
        decoder: av.VideoCodecContext = av.CodecContext.create(codec[0], "r")  # type: ignore[assignment]
        if codec[1]:
            decoder.extradata = codec[1]
        newest = None
        for p in ring[first : last + 1]:
            packet = av.Packet(p.data)
            packet.pts, packet.dts, packet.time_base = p.pts, p.dts, time_base
            try:
                for frame in decoder.decode(packet):
                    newest = frame
            except av.InvalidDataError:
                continue
        with contextlib.suppress(av.FFmpegError):
            for frame in decoder.decode(None):
                newest = frame
        return newest

    def _finish_all(self, reason: str) -> list[Finished]:
        finished = [clip.finish(clip.camera, reason) for clip in self._clips.values()]
        self._clips.clear()
        return finished

    def _report(self, finished: list[Finished]) -> None:
        for f in finished:
            try:
                self.done(f)
            except Exception:
                log.exception("camera %s: clip %s: reporting it failed", self.camera, f.action_id)


class EvidenceStream:
    """``record_url``: a second stream of a camera, read only for its evidence (packets into its recorder; nothing
    decoded). Its own thread, reconnecting with backoff like a camera; its URL is shown redacted."""

    def __init__(self, config: SourceConfig, recorder: Recorder) -> None:
        self.config = config
        # Its own metrics registry: the camera's frame counters and stream_up are the model stream's.
        self.source = FrameSource(config, _ignore_frame, Metrics(), on_reset=_nothing, decode=False)
        self.source.taps.append(recorder)

    @property
    def up(self) -> bool:
        return self.source.up

    def start(self) -> None:
        self.source.start()

    def stop(self) -> None:
        self.source.stop()

    def join(self, timeout: float) -> None:
        self.source.join(timeout)


def _ignore_frame(frame: av.VideoFrame, t: float, received: float, mono: float) -> None:
    pass


def _nothing() -> None:
    pass
