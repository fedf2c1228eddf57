"""Every Prometheus metric of the contract (docs/contracts.md), defined once; stages increment them where things happen.

Each :class:`Metrics` owns its registry, so several agents (or tests) in one process never share counters.
Label values are configured camera names and model names, never URLs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets for 5 ms - 5 s, roughly x1.5 apart.
LATENCY_BUCKETS = (0.005, 0.0075, 0.01, 0.015, 0.025, 0.04, 0.06, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 4.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Optical flow per frame pair: DIS at a sub-stream's size takes about a millisecond, TV-L1 at 256 px about a second.
FLOW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r, ns = self.registry, "actionstream"
        self.frames_decoded = Counter("frames_decoded", "Frames decoded", ["camera"], namespace=ns, registry=r)
        self.frames_sampled = Counter(
            "frames_sampled", "Decoded frames converted for a model input", ["camera"], namespace=ns, registry=r
        )
        self.frames_dropped = Counter(
            "frames_dropped",
            "Frames (or, for reason=stale_clip, clips) dropped, by reason",
            ["camera", "reason"],
            namespace=ns,
            registry=r,
        )
        self.stream_up = Gauge("stream_up", "1 while the camera delivers frames", ["camera"], namespace=ns, registry=r)
        self.stream_reconnects = Counter(
            "stream_reconnects",
            "Times the stream was re-established after a loss",
            ["camera"],
            namespace=ns,
            registry=r,
        )
        self.flow_seconds = Histogram(
            "flow_seconds",
            "Optical flow of one frame pair (one flow field) for a flow model's input, in the camera's flow thread",
            ["camera", "method"],
            buckets=FLOW_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.clips_inferred = Counter(
            "clips_inferred", "Clips run through a model", ["model"], namespace=ns, registry=r
        )
        self.inference_seconds = Histogram(
            "inference_seconds",
            "Batch run time (first piece started to last piece done)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.model_up = Gauge(
            "model_up", "1 while the model's runs succeed; 0 once several in a row have failed", ["model"],
            namespace=ns, registry=r,
        )  # fmt: skip
        self.inference_failures = Counter(
            "inference_failures", "Model runs that failed (their clips are lost)", ["model"], namespace=ns, registry=r
        )
        self.batch_size = Histogram(
            "batch_size", "Clips per batch", ["model"], buckets=BATCH_BUCKETS, namespace=ns, registry=r
        )
        self.event_latency_seconds = Histogram(
            "event_latency_seconds",
            "Newest frame received to event handed to MQTT",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self.events = Counter("events", "Action events", ["camera", "label", "type"], namespace=ns, registry=r)
        self.mqtt_connected = Gauge("mqtt_connected", "1 while connected to the broker", namespace=ns, registry=r)
        self.mqtt_queued_messages = Gauge(
            "mqtt_queued_messages", "Messages waiting for the broker", namespace=ns, registry=r
        )
        self.mqtt_dropped_messages = Counter(
            "mqtt_dropped_messages",
            "Messages not delivered to the broker: queue_full (the oldest non-retained go first), refused (by it)",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.stdout_dropped_lines = Counter(
            "stdout_dropped_lines",
            "Event lines the stdout sink dropped because stdout fell behind (the oldest go first)",
            namespace=ns,
            registry=r,
        )
        self.queue_depth = Gauge(
            "queue_depth", "Items waiting in a pipeline stage", ["stage"], namespace=ns, registry=r
        )
        self.snapshots_written = Counter(
            "snapshots_written", "Action snapshots (JPEG) written", ["camera"], namespace=ns, registry=r
        )
        self.clips_written = Counter(
            "clips_written", "Action clips (MP4) written", ["camera"], namespace=ns, registry=r
        )
        self.evidence_bytes = Gauge(
            "evidence_bytes", "Bytes of snapshots and clips in the event store", namespace=ns, registry=r
        )
        self.evidence_dropped = Counter(
            "evidence_dropped",
            "Snapshots or clips not kept, or deleted, by reason",
            ["kind", "reason"],
            namespace=ns,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "webhook_deliveries", "Events a webhook accepted (2xx)", ["webhook"], namespace=ns, registry=r
        )
        self.webhook_failures = Counter(
            "webhook_failures",
            "Webhook events given up on, by reason",
            ["webhook", "reason"],
            namespace=ns,
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests answered, by path class and status",
            ["path", "status"],
            namespace=ns,
            registry=r,
        )

    def value(self, name: str, **labels: str) -> float:
        """Current sample value by its exposed name (tests and stats)."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found
