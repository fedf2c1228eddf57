"""Evidence end to end: `actionstream run` on an RTSP camera (rtsp-server-perl fed by ffmpeg, H.264) playing the
demo model's scripted stream, with `record_url` on a second, larger stream of the same content; a real broker; the
HTTP API with a token; the status page in headless Chromium. One agent serves every test of this module."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from agent.demo.run import DEMO_EVENTS, DEMO_MODEL
from agent.demo.synthetic import write_scripted_stream
from tests.browser import Chromium, chromium_binary
from tests.mosquitto import Mosquitto, Subscriber
from tests.reliability.agentproc import AgentProcess
from tests.rtsp_server import RtspServer

TOKEN = "evidence-test-token"
PRE_S, POST_S = 2.0, 2.0
GOP_S = 1.0  # the RTSP publishers' GOP: 30 frames at 30 fps
SUB, MAIN = (160, 120), (480, 360)
STREAM_MINUTES = 0.5


def get(url: str, token: str | None = TOKEN, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of a GET; errors are answers too."""
    request = urllib.request.Request(url, headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                                   **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError:  # not listening (yet)
        return 0, {}, b""


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name,width,height", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The agent after the scripted stream has played through (it keeps running for the tests that follow)."""
    work = tmp_path_factory.mktemp("evidence")
    video = work / "stream.mp4"
    schedule = write_scripted_stream(video, work / "stream.json", minutes=STREAM_MINUTES, seed=7)
    broker = Mosquitto(work / "broker")
    broker.start()
    subscriber = Subscriber(broker, "actionstream/#").start()
    # The last frame stays for a few seconds (a still scene): the last action's clip gets its post_s.
    padded = work / "padded.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(video), "-vf", "tpad=stop_mode=clone:stop_duration=6", "-c:v", "libx264",
         "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(padded)],
        check=True,
    )  # fmt: skip
    sources = {"sub": (padded, None), "main": (padded, f"scale={MAIN[0]}:{MAIN[1]}")}
    camera = RtspServer("sub", fps=30, sources=sources)
    config = {
        "cameras": [
            {"name": "demo", "url": camera.url(path="sub"), "record_url": camera.url(path="main"),
             "transport": "udp", "every_s": 0.5, "backoff_initial_s": 0.3, "backoff_max_s": 0.6}
        ],
        "models": {"motion": {"path": str(DEMO_MODEL), "max_batch": 1}},
        "events": DEMO_EVENTS,
        "evidence": {"enabled": True, "pre_s": PRE_S, "post_s": POST_S},
        "storage": {"path": str(work / "data")},
        "mqtt": {"url": broker.url},
        "http": {"token": TOKEN},
    }  # fmt: skip
    agent = AgentProcess(work / "agent", config).start()
    base = agent.metrics_url.removesuffix("/metrics")
    try:
        agent.wait_for(lambda: get(base + "/healthz", None)[0] == 200, 60, "the HTTP server")
        camera.start()  # the stream starts now; the camera reconnects to it within a second
        agent.wait_for(lambda: all(p.poll() is not None for p in camera.procs[1:]), 90, "the stream's end")
        # every action ended (the stream went down at the latest) and its clip closed post_s later
        agent.wait_for(lambda: _all_clips_done(base), 30, "the last clip")
        yield {"agent": agent, "base": base, "schedule": schedule, "subscriber": subscriber, "work": work}
    finally:
        agent.stop()
        camera.kill()
        subscriber.stop()
        broker.stop()


def _all_clips_done(base: str) -> bool:
    status, _, body = get(base + "/api/actions?limit=1000")
    actions = json.loads(body) if status == 200 else []
    return bool(actions) and all(a["end_time"] is not None and a["clip"] for a in actions)


def test_every_detected_action_has_a_row_a_snapshot_and_a_clip(scenario):
    base, subscriber = scenario["base"], scenario["subscriber"]
    events = [json.loads(m.payload) for m in subscriber.snapshot() if m.topic == "actionstream/demo/events"]
    starts = [e for e in events if e["type"] == "start"]
    assert len(starts) >= 3, f"the demo model found {len(starts)} actions"
    for e in events:  # MQTT events carry the action and where its evidence is
        assert e["evidence"] == {
            "snapshot": f"/api/actions/{e['action_id']}/snapshot.jpg",
            "clip": f"/api/actions/{e['action_id']}/clip.mp4",
        }, e
    _, _, body = get(base + "/api/actions?limit=1000")
    rows = {a["action_id"]: a for a in json.loads(body)}
    assert {e["action_id"] for e in starts} == set(rows)
    work = scenario["work"]
    for action_id, row in rows.items():
        assert row["camera"] == "demo" and row["model"] == "motion" and not row["interrupted"]
        status, headers, jpeg = get(base + row["snapshot"])
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(jpeg)).size == MAIN, "the snapshot is the record stream's full resolution"
        status, headers, mp4 = get(base + row["clip"])
        assert status == 200 and headers["Content-Type"] == "video/mp4"
        path = work / f"{action_id}.mp4"
        path.write_bytes(mp4)
        probe = ffprobe(path)
        (stream,) = probe["streams"]
        assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", *MAIN)
        expected = row["end_time"] - row["start_time"] + PRE_S + POST_S
        duration = float(probe["format"]["duration"])
        assert abs(duration - expected) <= GOP_S + 0.5, f"{action_id}: {duration:.2f} s for {expected:.2f} s"
    # the snapshot topic holds the JPEG of each label's latest action, retained
    labels = {e["label"] for e in starts}
    with Subscriber(scenario["subscriber"].broker, "actionstream/demo/+/snapshot") as late:
        expected = {f"actionstream/demo/{label}/snapshot" for label in labels}
        late.wait_for(lambda ms: {m.topic for m in ms} >= expected)
        retained = list(zip(late.snapshot(), list(late.raw), strict=False))
    for m, raw in retained:
        assert m.retain and raw[:2] == b"\xff\xd8" and Image.open(io.BytesIO(raw)).size == MAIN


def test_the_api_answers_every_path(scenario):
    base = scenario["base"]
    status, _, body = get(base + "/api/actions?limit=1000")
    actions = json.loads(body)
    newest = actions[0]
    assert [a["start_time"] for a in actions] == sorted((a["start_time"] for a in actions), reverse=True)
    assert set(newest) >= {"action_id", "camera", "label", "start_time", "end_time", "top_score", "person",
                           "snapshot", "clip"}  # fmt: skip
    status, _, body = get(base + "/api/cameras")
    (camera,) = json.loads(body)
    assert status == 200 and camera["name"] == "demo" and camera["model"] == "motion"
    assert {"up", "fps", "last_frame_age_s", "active"} <= set(camera)
    status, headers, jpeg = get(base + "/api/cameras/demo/latest.jpg")
    assert status == 200 and Image.open(io.BytesIO(jpeg)).size == SUB
    status, _, body = get(base + f"/api/actions/{newest['action_id']}")
    assert status == 200 and json.loads(body) == newest
    label = newest["label"]
    status, _, body = get(base + f"/api/actions?camera=demo&label={label}&since={newest['start_time'] - 0.001}&limit=5")
    assert status == 200 and [a["action_id"] for a in json.loads(body)] == [newest["action_id"]]
    status, _, body = get(base + f"/api/actions?until={newest['start_time'] - 0.01}")
    assert newest["action_id"] not in {a["action_id"] for a in json.loads(body)}
    # a clip answers Range requests
    status, headers, part = get(base + newest["clip"], headers={"Range": "bytes=0-99"})
    assert status == 206 and len(part) == 100 and headers["Content-Range"].startswith("bytes 0-99/")
    # the status page
    status, headers, page = get(base + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"/api/actions" in page
    # the token is required for /api/* and /, not for /metrics and the probes
    for path in ("/api/actions", "/api/cameras", newest["snapshot"], newest["clip"], "/"):
        assert get(base + path, None)[0] == 401, path
        assert get(base + path, "wrong-token-value")[0] == 401, path
    status, headers, body = get(base + "/api/actions", None)
    assert "Bearer" in json.loads(body)["error"] and headers["WWW-Authenticate"].startswith("Bearer")
    assert get(base + "/metrics", None)[0] == 200
    assert get(base + "/healthz", None)[0] == 200
    status, _, body = get(base + "/readyz", None)
    ready = json.loads(body)
    assert (status, ready["ready"]) in ((200, True), (503, False)) and isinstance(ready["reasons"], list)
    # unknown ids 404, bad query values 400, both JSON
    for path in ("/api/actions/demo-nope-000001", "/api/actions/demo-nope-000001/snapshot.jpg",
                 "/api/actions/demo-nope-000001/clip.mp4", "/api/cameras/nope/latest.jpg", "/api/nothing"):  # fmt: skip
        status, headers, body = get(base + path)
        assert status == 404 and headers["Content-Type"].startswith("application/json") and json.loads(body)["error"]
    for query in ("limit=0", "limit=x", "limit=100000", "since=yesterday", "until=nan", "colour=red"):
        status, headers, body = get(base + "/api/actions?" + query)
        assert status == 400 and json.loads(body)["error"], query
    metrics = scenario["agent"].metrics()
    assert metrics[("actionstream_snapshots_written_total", (("camera", "demo"),))] >= len(actions)
    assert metrics[("actionstream_clips_written_total", (("camera", "demo"),))] == len(actions)
    assert metrics[("actionstream_evidence_bytes", ())] > 0
    assert metrics[("actionstream_http_requests_total", (("path", "/api/actions"), ("status", "401")))] >= 1


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed: run `make deps` (make test does)")
def test_status_page_shows_actions_with_snapshots_and_playable_clips(scenario, tmp_path):
    base = scenario["base"]

    async def main() -> dict:
        async with Chromium(tmp_path / "profile") as page:
            await page.call("Network.enable")
            await page.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Bearer {TOKEN}"})
            await page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1,
                            mobile=False)  # fmt: skip
            await page.call("Page.navigate", url=base + "/")
            await page.wait_for("document.querySelectorAll('#actions tr').length > 0", 30)
            await page.wait_for(
                "[...document.querySelectorAll('#actions td.snap img')].some(i => i.complete && i.naturalWidth > 0)", 30
            )
            await page.evaluate("document.querySelector('#actions video').play().catch(() => null)")
            state = await page.wait_for(
                "(v => v.readyState >= 2 && v.readyState)(document.querySelector('#actions video'))", 30
            )
            found = await page.evaluate(
                "({rows: document.querySelectorAll('#actions tr').length,"
                " width: document.querySelector('#actions td.snap img').naturalWidth,"
                " camera: document.querySelector('.camera .name').textContent,"
                " duration: document.querySelector('#actions video').duration})"
            )
            await page.screenshot(scenario["work"] / "status-page.png")
            return {**found, "ready_state": state}

    found = asyncio.run(main())
    assert found["rows"] >= 1 and found["width"] == MAIN[0] and found["camera"] == "demo"
    assert found["ready_state"] >= 2 and found["duration"] > PRE_S + POST_S
    assert (scenario["work"] / "status-page.png").stat().st_size > 10_000


def test_kill_9_during_a_clip_leaves_no_half_file_served_and_the_store_readable(tmp_path):
    video = tmp_path / "stream.mp4"
    write_scripted_stream(video, tmp_path / "stream.json", minutes=0.3, seed=3)
    data = tmp_path / "data"
    config = {
        "cameras": [{"name": "demo", "url": str(video), "loop": True, "every_s": 0.5}],
        "models": {"motion": {"path": str(DEMO_MODEL), "max_batch": 1}},
        "events": DEMO_EVENTS,
        "evidence": {"enabled": True, "pre_s": 1.0, "post_s": 30.0},  # every clip records for a while
        "storage": {"path": str(data)},
    }
    first = AgentProcess(tmp_path / "first", config).start()
    base = first.metrics_url.removesuffix("/metrics")
    try:
        first.wait_for(lambda: list(data.glob("clips/demo/*.mp4.part")), 60, "a clip being recorded")
        status, _, body = get(base + "/api/actions", None)
        recording = [a for a in json.loads(body) if a["clip"] is None]
        assert status == 200 and recording
        first.proc.kill()  # SIGKILL: no clean stop, the clip half written
        first.proc.wait(10)
    finally:
        first.stop()
    assert list(data.glob("clips/demo/*.mp4.part")), "the crash left a partial clip"
    config["metrics"] = first.config["metrics"]
    with AgentProcess(tmp_path / "second", config) as second:
        second.wait_for(lambda: get(base + "/healthz", None)[0] == 200, 60, "the restarted agent")
        status, _, body = get(base + "/api/actions?limit=1000", None)
        rows = {a["action_id"]: a for a in json.loads(body)}
        assert status == 200 and not list(data.rglob("*.part"))
        for a in recording:
            row = rows[a["action_id"]]
            assert row["interrupted"] and row["end_time"] is not None and row["clip"] is None
            assert get(base + f"/api/actions/{a['action_id']}/clip.mp4", None)[0] == 404
        for row in rows.values():  # whatever the store names is whole
            if row["clip"]:
                status, _, mp4 = get(base + row["clip"], None)
                (tmp_path / "check.mp4").write_bytes(mp4)
                assert status == 200 and float(ffprobe(tmp_path / "check.mp4")["format"]["duration"]) > 0
        assert "recovered after an unclean stop" in second.log()
