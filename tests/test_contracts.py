"""docs/contracts.md against the code: the metric table names exactly what the agent exposes, and the topic table
exactly what it publishes (through a real mosquitto)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from prometheus_client.metrics import MetricWrapperBase

from agent.config import MqttConfig
from agent.live.events import Event
from agent.live.sinks import MqttSink
from agent.metrics import Metrics
from tests.docs import CONTRACTS, code_spans, first_column, section, tables
from tests.mosquitto import Mosquitto, Subscriber

# --- metrics --------------------------------------------------------------------------------------------------------

_DOCUMENTED_METRIC = re.compile(r"^(actionstream_[a-z_]+)(?:\{([a-z_,]*)\})?$")


def documented_metrics() -> dict[str, set[str]]:
    """Exposed name → label names, from the first column of the metrics table (`name{label,...}`)."""
    found = {}
    for cell in first_column(section(CONTRACTS, "Prometheus metrics")):
        (span,) = code_spans(cell) or [cell]
        m = _DOCUMENTED_METRIC.match(span)
        assert m is not None, f"docs/contracts.md: {cell!r} is not `actionstream_name{{label,...}}`"
        assert m.group(1) not in found, f"docs/contracts.md lists {m.group(1)} twice"
        found[m.group(1)] = set(filter(None, (m.group(2) or "").split(",")))
    return found


def exposed_name(family) -> str:
    """The name a family is scraped by: counters with ``_total``, histograms and gauges by their base name."""
    return family.name + "_total" if family.type == "counter" else family.name


def test_documented_metrics_are_exactly_the_exposed_ones():
    documented = set(documented_metrics())
    exposed = {exposed_name(family) for family in Metrics().registry.collect()}
    assert not exposed - documented, f"exposed but not in docs/contracts.md: {sorted(exposed - documented)}"
    assert not documented - exposed, f"in docs/contracts.md but not exposed: {sorted(documented - exposed)}"


def test_documented_labels_are_the_metrics_labels():
    documented = documented_metrics()
    metrics = Metrics()
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        (family,) = metric.collect()
        assert exposed_name(family) in documented, f"{exposed_name(family)} is not in docs/contracts.md"
        labels = documented[exposed_name(family)]
        if labels:  # a labelled metric accepts exactly the documented label names
            try:
                metric.labels(**dict.fromkeys(labels, "x"))
            except ValueError as e:
                pytest.fail(f"{exposed_name(family)}: docs/contracts.md says {{{','.join(sorted(labels))}}}: {e}")
    for family in metrics.registry.collect():  # every labelled metric now has a child; unlabelled ones their value
        name = exposed_name(family)
        assert family.samples, f"{name} has labels, but docs/contracts.md lists none"
        seen = {key for sample in family.samples for key in sample.labels if key != "le"}
        assert seen == documented[name], f"{name}: labels {sorted(seen)}, docs/contracts.md {sorted(documented[name])}"


# --- MQTT topics ----------------------------------------------------------------------------------------------------

PREFIX, DISCOVERY_PREFIX, CAMERA = "site7", "ha", "dock1"
LABELS = ["falling", "air drumming"]
WILDCARDS = {"camera": r"[^/]+", "label": r"[^/]+", "object_id": r"[^/]+", "shard": r"\d+"}


def documented_topics() -> dict[str, tuple[re.Pattern, bool]]:
    """Topic template → (its regex for this test's prefixes, retained?), from the MQTT topic table."""
    found = tables(section(CONTRACTS, "MQTT"))
    assert found, "docs/contracts.md: no topic table under MQTT"
    values = {"prefix": re.escape(PREFIX), "discovery_prefix": re.escape(DISCOVERY_PREFIX), **WILDCARDS}
    topics = {}
    for cells in found[0]:  # topic | payload | retained | QoS
        (template,) = code_spans(cells[0])
        pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: values[m.group(1)], re.escape(template))
        assert "{" not in pattern, f"docs/contracts.md: unknown placeholder in {template!r}"
        topics[template] = (re.compile(pattern + "$"), cells[2] == "yes")
    return topics


def template_of(topic: str, templates: dict[str, tuple[re.Pattern, bool]]) -> str | None:
    """The most specific documented template ``topic`` matches (fewest placeholders), or None."""
    matching = [t for t, (pattern, _) in templates.items() if pattern.match(topic)]
    return min(matching, key=lambda t: t.count("{"), default=None)


def event() -> Event:
    now = time.time()
    return Event(
        id=f"{CAMERA}-000001",
        action_id=f"{CAMERA}-000001",
        seq=1,
        type="start",
        camera=CAMERA,
        label="falling",
        score=0.91,
        top_score=0.91,
        start_time=now,
        end_time=None,
        clip_start=now - 2,
        clip_end=now,
        model="kinetics",
        received_at=now,
        inference_ms=30.0,
    )


@pytest.mark.timeout(60)
def test_documented_topics_are_exactly_the_published_ones(tmp_path):
    templates = documented_topics()
    with Mosquitto(tmp_path / "broker") as broker, Subscriber(broker, "#") as live:
        config = MqttConfig(
            url=broker.url, prefix=PREFIX, homeassistant_discovery=True, discovery_prefix=DISCOVERY_PREFIX
        )

        async def main() -> list[str]:
            # One agent, and replica 1 of 2 of a sharded deployment (its own availability topic).
            async with MqttSink(config, Metrics()) as sink, MqttSink(config, Metrics(), shard=(1, 2)) as replica:
                sink.announce(CAMERA, LABELS)
                sink.publish_status(CAMERA, True)
                sink.publish_event(event())
                sink.publish_state(CAMERA, "falling", True)
                sink.publish_snapshot(CAMERA, "falling", b"\xff\xd8\xff\xe0 a JPEG")
                sink.publish_stats({"time": time.time(), "cameras": {}, "models": {}})
                deadline = time.monotonic() + 20
                busy = lambda: not (sink.connected and replica.connected) or sink.queued  # noqa: E731
                while busy() and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert not busy(), "the broker did not take the messages"
                # A subscriber arriving now is given exactly the retained topics.
                with Subscriber(broker, "#") as late:
                    await asyncio.sleep(0.5)
                    return [m.topic for m in late.snapshot() if m.retain]

        retained = asyncio.run(main())
        try:  # everything documented, or what came within the timeout (the assertions below say what is missing)
            live.wait_for(lambda ms: {template_of(m.topic, templates) for m in ms} >= set(templates), timeout=5)
        except TimeoutError:
            pass
        published = {m.topic for m in live.snapshot()}

    unknown = sorted(t for t in published if template_of(t, templates) is None)
    assert not unknown, f"published but not in docs/contracts.md: {unknown}"
    seen = {template_of(t, templates) for t in published}
    assert seen == set(templates), f"in docs/contracts.md but never published: {sorted(set(templates) - seen)}"
    retained_templates = {template_of(t, templates) for t in retained}
    documented_retained = {t for t, (_, keep) in templates.items() if keep}
    assert retained_templates == documented_retained, (
        f"retained: {sorted(retained_templates)}; docs/contracts.md says {sorted(documented_retained)}"
    )
