"""agent.live.evidence: the SQLite store (retention, recovery), the packet ring and its clips (remuxed from a real
H.264 file, read by ffprobe), snapshots with a person's box."""

from __future__ import annotations

import io
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from agent.config import StorageConfig
from agent.live.evidence.recorder import Finished, Recorder
from agent.live.evidence.snapshots import encode_jpeg
from agent.live.evidence.store import Action, Store, evidence_path, write_file
from agent.metrics import Metrics
from tests.videos import pattern_video

T0 = 1_764_254_400.0


def action(n: int, start: float, end: float | None = None, camera: str = "dock1") -> Action:
    return Action(f"{camera}-run-{n:06d}", camera, "falling", None, "m", start, end, 0.9, None, 0, None, 0, False)


def with_files(store: Store, a: Action, size: int) -> None:
    """Gives an action a snapshot and a clip of ``size`` bytes each, as the keeper does."""
    for kind in ("snapshot", "clip"):
        relative = evidence_path(kind, a.camera, a.action_id)
        write_file(store.path_of(relative), b"\0" * size)
        store.attach(a.action_id, kind, relative, size).result()


def test_retention_deletes_the_oldest_evidence_first_and_keeps_the_newest(tmp_path):
    metrics = Metrics()
    store = Store(StorageConfig(path=tmp_path, max_gb=0.00035, keep_days=30), metrics)  # 350 kB
    store.open()
    actions = [action(i, T0 + 10 * i, T0 + 10 * i + 5) for i in range(6)]
    for a in actions:
        store.insert(a)
        with_files(store, a, 50_000)  # 100 kB per action: 600 kB in all
    left = store.retain(now=T0 + 100).result()
    assert left <= 350_000
    rows = {a.action_id: a for a in store.actions(limit=100).result()}
    kept = [a.action_id for a in actions if rows[a.action_id].clip is not None]
    assert kept == [a.action_id for a in actions[-3:]], "the newest three fit, the oldest went first"
    for a in actions[:3]:  # rows stay, their files are gone
        assert rows[a.action_id].snapshot is None and rows[a.action_id].snapshot_bytes == 0
        assert not store.path_of(evidence_path("clip", a.camera, a.action_id)).exists()
    for a in actions[-3:]:
        assert store.path_of(rows[a.action_id].clip).stat().st_size == 50_000
    assert metrics.value("actionstream_evidence_dropped_total", kind="clip", reason="max_gb") == 3
    assert metrics.value("actionstream_evidence_bytes") == left == 300_000
    store.close()


def test_retention_by_age_and_never_an_open_or_busy_action(tmp_path):
    store = Store(StorageConfig(path=tmp_path, keep_days=1, max_gb=1e-6), Metrics())  # 1 kB: everything is over
    store.open()
    old, busy, open_, new = (
        action(1, T0, T0 + 5),
        action(2, T0 + 1, T0 + 6),
        action(3, T0 + 2),
        action(4, T0 + 9, T0 + 10),
    )
    for a in (old, busy, open_, new):
        store.insert(a)
        with_files(store, a, 1000)
    store.retain(busy=frozenset({busy.action_id}), now=T0 + 86400 + 1.5).result()
    rows = {a.action_id: a for a in store.actions().result()}
    assert old.action_id not in rows, "older than keep_days: deleted, row and files"
    assert rows[busy.action_id].clip is not None, "still being written: untouched"
    assert rows[open_.action_id].clip is not None, "still open: untouched"
    assert rows[new.action_id].clip is None, "over max_gb: its files went"
    store.close()


def test_a_restart_closes_open_actions_removes_partial_files_and_forgets_missing_ones(tmp_path):
    store = Store(StorageConfig(path=tmp_path), Metrics())
    store.open()
    done, open_ = action(1, T0, T0 + 3), action(2, T0 + 4)
    store.insert(done, now=T0 + 3)
    store.insert(open_, now=T0 + 6)
    with_files(store, done, 100)
    store.update(open_.action_id, top_score=0.95).result()
    partial = store.path_of(evidence_path("clip", "dock1", open_.action_id) + ".part")
    partial.write_bytes(b"half a clip")
    store.path_of(evidence_path("snapshot", "dock1", done.action_id)).unlink()
    last = sqlite3.connect(tmp_path / "actions.db").execute("SELECT MAX(updated) FROM actions").fetchone()[0]
    store._writer.submit(store._close).result()  # as a crash would leave it: no clean close
    again = Store(StorageConfig(path=tmp_path), Metrics())
    found = again.open()
    assert (found.partial_files, found.closed, found.missing) == (1, 1, 1)
    assert not partial.exists()
    rows = {a.action_id: a for a in again.actions().result()}
    assert rows[open_.action_id].interrupted and rows[open_.action_id].end_time == pytest.approx(last)
    assert not rows[done.action_id].interrupted and rows[done.action_id].snapshot is None
    assert rows[done.action_id].clip is not None
    again.close()


def test_queries_filter_and_sort_newest_first(tmp_path):
    store = Store(StorageConfig(path=tmp_path), Metrics())
    store.open()
    for i in range(5):
        store.insert(action(i, T0 + i, T0 + i + 0.5, camera="a" if i % 2 else "b")).result()  # reads see writes done
    assert [a.start_time for a in store.actions().result()] == [T0 + 4, T0 + 3, T0 + 2, T0 + 1, T0]
    assert [a.camera for a in store.actions(camera="a").result()] == ["a", "a"]
    assert len(store.actions(since=T0 + 1, until=T0 + 3, limit=2).result()) == 2
    assert store.action("nope").result() is None
    store.close()


# --- the ring and its clips ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """20 s at 25 fps, a keyframe every 25 frames (one a second)."""
    path = tmp_path_factory.mktemp("ring") / "camera.mp4"
    return pattern_video(path, 20, size="320x240", fps=25, options=["-g", "25", "-keyint_min", "25", "-bf", "2"])


def feed(recorder: Recorder, video: Path, until_s: float = 1e9, *, t0: float = T0) -> list[tuple[float, bool]]:
    """Hands the file's packets to the recorder as a camera's source would, received at T0 + their time."""
    seen = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        recorder.opened(stream)
        for packet in container.demux(stream):
            if not packet.size:
                continue
            t = float(packet.dts * stream.time_base) + 0.08  # dts starts at -2 frames (B-frames)
            if t > until_s:
                break
            recorder.packet(packet, t0 + t)
            seen.append((t, packet.is_keyframe))
        recorder.closed()
    return seen


def duration_of(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(json.loads(out)["format"]["duration"])


def test_a_clip_spans_pre_s_before_the_start_to_post_s_after_the_end_from_a_keyframe(video, tmp_path):
    done: list[Finished] = []
    recorder = Recorder("dock1", history_s=3.0, ring_bytes=64_000_000, max_clip_s=300, done=done.append)
    final = tmp_path / "clip.mp4"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        recorder.opened(stream)
        started = False
        for packet in container.demux(stream):
            if not packet.size:
                continue
            t = float(packet.dts * stream.time_base) + 0.08
            recorder.packet(packet, T0 + t)
            if not started and t >= 8.0:  # the tracker decides at 8 s that an action started at 7.2 s
                assert recorder.start("dock1-run-000001", T0 + 7.2 - 2.0, final)  # pre_s 2
                assert (final.parent / "clip.mp4.part").exists() and not final.exists()
                started = True
            if t >= 11.0 and started:
                recorder.end("dock1-run-000001", T0 + 10.5 + 1.5)  # ended at 10.5 s, post_s 1.5
    (f,) = done
    assert f.path == final and f.reason == "" and f.size == final.stat().st_size
    # from the keyframe at or before 5.2 s (5.0 s) to 12.0 s: 7 s, within the B-frames' delay
    assert duration_of(final) == pytest.approx(7.0, abs=0.2)
    assert f.start == pytest.approx(T0 + 5.0, abs=0.1) and f.end == pytest.approx(T0 + 12.0, abs=0.1)
    with av.open(str(final)) as clip:
        frames = sum(1 for _ in clip.decode(video=0))
    assert frames == pytest.approx(7 * 25, abs=2)


def test_the_ring_keeps_a_keyframe_history_s_old_and_at_most_ring_bytes(video, tmp_path):
    recorder = Recorder("dock1", history_s=3.0, ring_bytes=64_000_000, max_clip_s=300, done=lambda f: None)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        recorder.opened(stream)
        for packet in container.demux(stream):
            if packet.size:
                recorder.packet(packet, T0 + float(packet.dts * stream.time_base) + 0.08)
        ring = list(recorder._ring)
    newest = ring[-1].received_at
    assert ring[0].keyframe and newest - 4.0 <= ring[0].received_at <= newest - 3.0  # one GOP of slack at most
    small = Recorder("dock1", history_s=3.0, ring_bytes=20_000, max_clip_s=300, done=lambda f: None)
    feed(small, video, until_s=10)
    assert small._bytes <= 20_000


def test_max_clip_s_caps_a_runaway_action_and_a_lost_stream_ends_its_clip(video, tmp_path):
    done: list[Finished] = []
    recorder = Recorder("dock1", history_s=1.0, ring_bytes=64_000_000, max_clip_s=4.0, done=done.append)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        recorder.opened(stream)
        for packet in container.demux(stream):
            if not packet.size:
                continue
            t = float(packet.dts * stream.time_base) + 0.08
            recorder.packet(packet, T0 + t)
            if 3.0 <= t < 3.04:
                recorder.start("capped", T0 + 3.0, tmp_path / "capped.mp4")
            if 12.0 <= t < 12.04:
                recorder.start("lost", T0 + 12.0, tmp_path / "lost.mp4")
            if t > 15:
                break
        recorder.closed()  # the stream went away while "lost" was recording
    outcome = {f.action_id: f for f in done}
    assert outcome["capped"].reason == "max_length" and duration_of(tmp_path / "capped.mp4") == pytest.approx(
        4, abs=0.2
    )
    assert outcome["lost"].reason == "stream_lost" and outcome["lost"].path == tmp_path / "lost.mp4"
    assert duration_of(tmp_path / "lost.mp4") == pytest.approx(3, abs=0.3)
    assert not list(tmp_path.glob("*.part"))


def test_frame_at_decodes_the_frame_received_then(video):
    recorder = Recorder("dock1", history_s=5.0, ring_bytes=64_000_000, max_clip_s=300, done=lambda f: None)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        recorder.opened(stream)
        for packet in container.demux(stream):
            if packet.size and float(packet.dts * stream.time_base) < 10:
                recorder.packet(packet, T0 + float(packet.dts * stream.time_base) + 0.08)
    frame = recorder.frame_at(T0 + 8.5)
    assert frame is not None and (frame.width, frame.height) == (320, 240)
    assert float(frame.pts * time_base) == pytest.approx(8.5, abs=0.1)


# --- snapshots -------------------------------------------------------------------------------------------------------


def test_a_snapshot_is_the_frame_at_full_resolution_with_a_persons_box():
    image = np.full((720, 1280, 3), 40, np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    plain = Image.open(io.BytesIO(encode_jpeg(frame)))
    assert plain.size == (1280, 720) and plain.format == "JPEG"
    boxed = np.asarray(Image.open(io.BytesIO(encode_jpeg(frame, box=(0.25, 0.25, 0.75, 0.75), caption="falling 0.91"))))
    assert boxed[360, 320, 0] > 200 and boxed[360, 320, 2] < 100, "the box's left edge is drawn"
    assert abs(int(boxed[360, 640, 0]) - 40) < 10, "inside the box the frame is as it was"
    assert (boxed[150:180, 320:500] > 200).any(), "the caption sits above the box"


def test_written_files_appear_whole(tmp_path):
    target = tmp_path / "a" / "b.jpg"
    write_file(target, b"x" * 10)
    assert target.read_bytes() == b"x" * 10 and not list(tmp_path.rglob("*.part"))
    assert time.time() - target.stat().st_mtime < 60


def test_entries_that_share_a_stream_share_its_ring_and_its_evidence_stream(tmp_path, video):
    """Two camera entries on one stream: one recorder on the one source (the longest history either needs), one
    record_url stream; each action's clip is its own camera's."""
    from agent.config import parse_config
    from agent.live.evidence.keeper import Evidence
    from agent.live.sources import Camera, Stream
    from tests.specs import make_spec

    def keeper(**stream) -> tuple[Evidence, list[Camera]]:
        url = str(tmp_path / "cam.mp4")
        cameras = [{"name": "door", "url": url, "every_s": 1.0, **stream}, {"name": "yard", "url": url, "every_s": 3.0}]
        data = {
            "cameras": cameras,
            "models": {"m": {"path": "m.onnx"}},
            "evidence": {"enabled": True, "pre_s": 2},
            "storage": {"path": str(tmp_path / "store")},
        }
        config, metrics = parse_config(data), Metrics()
        stream_ = Stream(config.cameras[0], metrics, cameras=["door", "yard"])
        spec = make_spec([{"name": "clip", "frames": 2, "stride_s": 0.5}])
        cameras = [Camera(c, spec, metrics, stream_) for c in config.cameras]
        evidence = Evidence(config, metrics)
        for c, camera in zip(config.cameras, cameras, strict=True):
            evidence.attach(c, camera)
        return evidence, cameras

    evidence, (door, _) = keeper()
    assert evidence.recorders["door"] is evidence.recorders["yard"] and door.source.taps == [evidence.recorders["door"]]
    assert evidence.recorders["door"].history_s == 2 + (2 - 1) * 3.0 + 2  # yard's every_s: the longer
    assert evidence.streams == {}
    recorded, _ = keeper(record_url="rtsp://u:pw@127.0.0.1:9/main")
    assert recorded.streams["door"] is recorded.streams["yard"] and len(recorded._evidence_streams()) == 1
    # a clip of yard's action on the shared recorder is yard's
    done: list[Finished] = []
    recorder = Recorder("door", history_s=5.0, ring_bytes=64_000_000, max_clip_s=300, done=done.append)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        recorder.opened(stream)
        for i, packet in enumerate(p for p in container.demux(stream) if p.size):
            recorder.packet(packet, T0 + i / 25)
            if i == 60:
                assert recorder.start("yard-run-000001", T0, tmp_path / "yard.mp4", camera="yard")
        recorder.closed()
    (finished,) = done
    assert finished.camera == "yard" and finished.path == tmp_path / "yard.mp4"
