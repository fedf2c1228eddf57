"""``cameras[].convert``: the default and why (agent.live.graphconvert.resolve), cameras converting with the graph
(frames in host memory, and clips in device memory through the same code on ONNX Runtime's CPU device), and the
whole agent with ``convert: graph`` on the CPU: its clips scored, ``check`` and ``/api/cameras`` saying so, and on
the demo stream the same scores and events as with swscale."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
import yaml

from agent.cli import main as cli
from agent.config import CameraConfig, EventsConfig, SourceConfig, parse_config
from agent.demo.run import DEMO_EVENTS, DEMO_MODEL, ensure_stream
from agent.frames import Converter
from agent.live.app import Agent
from agent.live.device import DeviceArray
from agent.live.events import EventTracker
from agent.live.graphconvert import CPU, Conversion, GraphConverter, resolve
from agent.live.sources import Camera
from agent.metrics import Metrics
from agent.spec import load_spec
from tests.agent.live.test_app import EVERY_CLIP, Sink
from tests.specs import SLOWFAST, make_spec
from tests.videos import pattern_video

pytestmark = pytest.mark.timeout(120)
SPEC = make_spec(SLOWFAST, size=64, resize_short=72)


def test_the_default_is_the_graph_where_the_model_runs_on_cuda_and_the_camera_decodes_on_nvdec():
    graph = resolve(None, model_device="cuda", device_id=1, decodes_on_gpu=True)
    assert (graph.mode, graph.where, graph.on_device) == ("graph", ("cuda", 1), True)
    assert "default" in graph.why and graph.describe() == "graph on cuda:1, clips on the device"
    for device, nvdec in (("cuda", False), ("cpu", True), ("openvino", False)):
        assert resolve(None, model_device=device, decodes_on_gpu=nvdec).mode == "cpu"
    assert resolve(None, model_device="cpu").why == "default: the model runs on cpu, the camera decodes in software"
    asked = resolve("graph", model_device="openvino")  # the graph runs on ONNX Runtime's CPU provider then
    assert (asked.mode, asked.where, asked.on_device, asked.why) == ("graph", ("cpu", 0), False, "convert: graph")
    assert resolve("graph", model_device="cuda", person=True).on_device is False  # the detector reads host clips
    assert resolve("cpu", model_device="cuda", decodes_on_gpu=True) == Conversion(why="convert: cpu")
    assert CPU.describe() == "cpu (swscale)"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return pattern_video(tmp_path_factory.mktemp("graph") / "cam.mp4", 4, "320x240", 25)


def first_clips(path, conversion: Conversion | None, n: int = 2, **camera) -> list:
    config = SourceConfig(name="cam1", url=str(path), realtime=False, every_s=1.0, **camera)
    clips = []

    async def main() -> None:
        kw = {"conversion": conversion} if conversion else {}
        async with Camera(config, SPEC, Metrics(), **kw) as cam:
            async for clip in cam.clips():
                clips.append(clip)
                if len(clips) == n:
                    return

    asyncio.run(asyncio.wait_for(main(), 60))
    return clips


@pytest.mark.parametrize("on_device", [False, True])
def test_a_camera_converting_with_the_graph_gives_swscales_clips(video, on_device):
    expected = first_clips(video, None)
    conversion = Conversion("graph", on_device=on_device, why="test")
    got = first_clips(video, conversion)
    assert [(c.start, c.end) for c in got] == [(c.start, c.end) for c in expected]
    for ours, theirs in zip(got, expected, strict=True):
        for name, array in ours.inputs.items():
            assert isinstance(array, DeviceArray if on_device else np.ndarray)
            pixels = array.numpy() if on_device else array
            assert pixels.shape == theirs.inputs[name].shape
            assert np.abs(pixels.astype(np.int16) - theirs.inputs[name]).mean() < 0.05


def test_a_region_and_a_mask_convert_alike(video):
    kw = {"region": [0.25, 0.0, 1.0, 0.75], "mask": [[0, 0], [0.5, 0], [0, 1]]}
    config = CameraConfig(name="c", url=str(video), **kw)
    graph = GraphConverter(SPEC, Conversion("graph"), region=config.region, mask=config.mask, codec=lambda: "h264")
    with av.open(str(video)) as container:
        frame = next(container.decode(video=0))
    expected = Converter(SPEC, region=config.region, mask=config.mask, threads=1)(frame)
    assert np.abs(graph(frame).astype(np.int16) - expected).mean() < 0.05
    assert graph.region_of(frame) == Converter(SPEC, region=config.region).region_of(frame)


def agent_config(video, convert: str | None) -> dict:
    camera = {"name": "cam", "url": str(video), "realtime": False, "every_s": 0.5}
    return {
        "cameras": [camera | ({"convert": convert} if convert else {})],
        "models": {"m": {"path": str(DEMO_MODEL), "device": "cpu"}},
        "events": EVERY_CLIP,
        "metrics": {"enabled": False},
    }


def test_the_agent_runs_with_the_graph_on_the_cpu_and_says_so(video, tmp_path, capsys):
    """The whole pipeline with ``convert: graph`` on ONNX Runtime's CPU provider: every clip of the file scored,
    as many as with swscale; ``/api/cameras`` and ``check`` name the conversion and why."""
    scored = {}
    views = {}
    for convert in ("graph", None):
        config = parse_config(agent_config(video, convert))
        sink = Sink()
        agent = Agent(config, metrics=Metrics(), sink=sink)
        asyncio.run(asyncio.wait_for(agent.run(asyncio.Event()), 90))  # a file, consumer-paced: ends by itself
        scored[convert], views[convert] = len(sink.scored()), agent.cameras_view()[0]["convert"]
    assert scored["graph"] == scored[None] >= 3
    assert views["graph"] == {"mode": "graph", "device": "cpu:0", "on_device": False, "why": "convert: graph"}
    assert views[None]["mode"] == "cpu" and views[None]["device"] is None
    assert views[None]["why"] == "default: the model runs on cpu, the camera decodes in software"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(agent_config(video, "graph")))
    assert cli(["check", "-c", str(path)]) == 0
    assert "    convert: graph on cpu:0, clips in host memory (convert: graph)" in capsys.readouterr().out


class ScoreSink(Sink):
    """Every scored clip's scores in label order (``EVERY_LABEL``: a clip gives an event per label it scores above
    1e-9, all with the clip's receive time; a label without one scored under that, counted as 0)."""

    def __init__(self, labels: list[str]) -> None:
        super().__init__()
        self.labels, self.by_clip = labels, {}

    def publish_event(self, event) -> None:
        if event.type != "end":
            self.by_clip.setdefault(event.received_at, {})[event.label] = event.score

    def clips(self) -> np.ndarray:
        return np.array([[s.get(lb, 0.0) for lb in self.labels] for _, s in sorted(self.by_clip.items())])


EVERY_LABEL = EVERY_CLIP | {"include": None}  # every label, every clip: each clip's scores come out as events


def demo_events(clips: list[list[float]], labels: list[str], every_s: float) -> list[tuple]:
    """The demo's events from these clips' scores, a clip every ``every_s`` of stream time: (type, label, time)."""
    tracker = EventTracker(camera="demo", model="motion", labels=labels, config=EventsConfig(**DEMO_EVENTS))
    events = []
    for i, scores in enumerate(clips):
        t = i * every_s
        events += [(e.type, e.label, t) for e in tracker.update(scores, clip_start=t, clip_end=t, received_at=t)]
    return events


def test_on_the_demo_stream_the_graph_gives_the_events_swscale_gives():
    """``actionstream demo``'s stream and model, consumer-paced, ``convert: cpu`` against ``graph`` on ONNX Runtime's
    CPU provider: the same clips scored alike, and the demo's event rules on those scores give the same events."""
    video, truth = ensure_stream()
    labels = list(load_spec(DEMO_MODEL).labels)
    scores = {}
    for convert in ("cpu", "graph"):
        config = agent_config(video, convert) | {"events": EVERY_LABEL}
        sink = ScoreSink(labels)
        agent = Agent(parse_config(config), metrics=Metrics(), sink=sink)
        asyncio.run(asyncio.wait_for(agent.run(asyncio.Event()), 100))
        scores[convert] = sink.clips()
    cpu, graph = scores["cpu"], scores["graph"]
    assert cpu.shape == graph.shape and cpu.shape[0] >= 150 and cpu.shape[1] == len(labels)  # 90 s, a clip every 0.53 s
    assert np.abs(cpu - graph).max() < 0.01 and (cpu.argmax(axis=1) == graph.argmax(axis=1)).mean() > 0.99
    events = {convert: demo_events(s.tolist(), labels, 0.53) for convert, s in scores.items()}
    assert events["graph"] == events["cpu"] and len([e for e in events["cpu"] if e[0] == "start"]) >= len(truth) // 2
