"""Typed configuration, loaded in one place (:func:`load_config`).

Every section forbids unknown keys and describes its fields. Strings may use ``${VAR}`` or ``${VAR:-default}``
(environment substitution). Secrets (a camera URL with a password, the MQTT password) are ``SecretStr``: reprs,
logs and validation errors never show them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from agent.errors import ConfigError
from agent.geometry import Box, polygon_area
from agent.spec import FlowMethod
from agent.urls import Broker, parse_broker, redact_url, split_url, without_userinfo

NAME = r"^[A-Za-z0-9_-]{1,64}$"
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "udp", "tcp", "file")


def _readable_file(path: Path | None) -> Path | None:
    """A file setting: it must be there and readable when the config loads, not when it is first needed."""
    if path is not None:
        try:
            with path.open("rb") as f:
                f.read(1)
        except OSError as e:
            raise ValueError(f"cannot read {path} ({e.strerror})") from None
    return path


def _checked_url(v: SecretStr) -> SecretStr:
    """A camera URL: not empty; a URL (``scheme://``) has a known scheme, a host (but for files) and a valid port."""
    url = v.get_secret_value()
    if not url.strip():
        raise ValueError("must not be empty")
    if "://" in url:  # a URL (anything else is a file path or a device, which may appear later)
        shown = redact_url(url)
        parts = urlsplit(without_userinfo(url))
        if parts.scheme.lower() not in URL_SCHEMES:
            raise ValueError(f"unsupported scheme {parts.scheme!r} in {shown} (expected {', '.join(URL_SCHEMES)})")
        if parts.scheme.lower() != "file" and not parts.hostname:
            raise ValueError(f"no host in {shown}")
        try:
            _ = parts.port  # urlsplit checks the port when asked
        except ValueError:
            raise ValueError(f"invalid port in {shown}") from None
    return v


def _checked_region(v: tuple[float, float, float, float] | None) -> Box | None:
    if v is None:
        return None
    x1, y1, x2, y2 = v
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(
            f"{list(v)} is not [x1, y1, x2, y2] with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 "
            "(left, top, right, bottom, normalised to the upright frame)"
        )
    return x1, y1, x2, y2


Polygon = list[tuple[float, float]]


def _checked_polygon(polygon: Polygon) -> Polygon:
    """A polygon: three or more vertices [x, y] inside [0, 1], enclosing some area."""
    if len(polygon) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices [x, y], got {len(polygon)}")
    outside = [list(p) for p in polygon if not (0 <= p[0] <= 1 and 0 <= p[1] <= 1)]
    if outside:
        raise ValueError(f"vertices outside [0, 1] (coordinates are normalised to the upright frame): {outside}")
    if polygon_area(polygon) <= 0:
        raise ValueError(f"the polygon {[list(p) for p in polygon]} encloses no area")
    return polygon


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Section):
    """One camera: where its frames come from and how the stream is watched."""

    name: str = Field(pattern=NAME, description="camera name used in topics and metrics")
    url: SecretStr = Field(description="rtsp://, rtsps://, http(s)://, a file path (or file:// URL), or /dev/videoN")
    username: str | None = Field(
        default=None, description="user name for the stream, put into the URL percent-encoded (instead of user@ in url)"
    )
    password: SecretStr | None = Field(
        default=None,
        description="password for the stream (use ${ENV_VAR}), put into the URL percent-encoded: any characters",
    )
    tls_insecure: bool = Field(default=False, description="rtsps:// and https://: skip the certificate checks")
    ca_file: Path | None = Field(
        default=None, description="rtsps:// and https://: CA certificates (PEM) to verify the camera with"
    )
    transport: Literal["auto", "tcp", "udp", "http"] = Field(
        default="auto", description="RTSP transport; auto = TCP, falling back to UDP"
    )
    open_timeout_s: float = Field(default=10.0, gt=0, description="seconds to wait for the stream to open")
    read_timeout_s: float = Field(default=5.0, gt=0, description="seconds a single read may block")
    stall_s: float = Field(default=10.0, gt=0, description="no decoded frame for this long: reconnect")
    backoff_initial_s: float = Field(default=1.0, gt=0, description="first reconnect delay")
    backoff_max_s: float = Field(default=30.0, gt=0, description="reconnect delay cap")
    loop: bool = Field(default=False, description="files: start again at the end")
    realtime: bool = Field(default=True, description="files: play at the file's frame rate, as if live")
    every_s: float = Field(default=1.0, gt=0, description="one clip (one inference) every this many seconds")
    read_burst_s: float = Field(
        default=0.3,
        ge=0,
        le=2,
        description="frames no clip waits for may wait this long in the stream's buffer and are then read in one go "
        "(fewer wake-ups of the camera's thread; clips are never later for it); 0: read each frame as it comes",
    )
    decode_threads: int | None = Field(
        default=None, ge=1, le=64, description="FFmpeg decoder threads (default: FFmpeg's choice)"
    )
    hwaccel: Literal["off", "auto", "cuda"] = Field(
        default="off",
        description="hardware decoding: cuda = NVDEC, auto = NVDEC when there is one; software when unavailable",
    )

    @field_validator("url")
    @classmethod
    def _url_not_empty(cls, v: SecretStr) -> SecretStr:
        return _checked_url(v)

    @field_validator("ca_file")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        return _readable_file(v)

    @model_validator(mode="after")
    def _credentials(self) -> SourceConfig:
        if self.username is None and self.password is None:
            return self
        url = self.url.get_secret_value()
        parts = split_url(url)
        if parts is None or url[:7].lower() == "file://":
            raise ValueError("username/password need a network URL (scheme://host/...)")
        if parts.user is not None:
            raise ValueError(f"{redact_url(url)} has user info already: give it there or in username/password")
        if self.username is None:
            raise ValueError("password is set without username")
        return self

    def stream_url(self) -> str:
        """The URL to open: ``url`` with ``username``/``password`` (percent-encoded) when they are set."""
        url = self.url.get_secret_value()
        if self.username is None:
            return url
        parts = split_url(url)
        assert parts is not None  # checked at load
        secret = "" if self.password is None else ":" + quote(self.password.get_secret_value(), safe="")
        return f"{parts.scheme}{quote(self.username, safe='')}{secret}@{parts.rest}"


class EventsConfig(Section):
    """Turning scores into start/update/end events (per camera and label)."""

    threshold: float = Field(default=0.5, gt=0, le=1, description="score that starts an action")
    end_threshold: float = Field(default=0.3, ge=0, lt=1, description="score below which an action may end")
    min_hits: int = Field(default=2, ge=1, description="consecutive inferences >= threshold to start")
    end_after_s: float = Field(default=2.0, ge=0, description="seconds below end_threshold to end")
    update_s: float = Field(default=10.0, gt=0, description="an update at least this often while active")
    update_margin: float = Field(default=0.05, gt=0, description="an update when top score rises by this")
    thresholds: dict[str, float] = Field(default_factory=dict, description="per-label start thresholds")
    include: list[str] | None = Field(default=None, description="only these labels (default: all)")
    exclude: list[str] = Field(default_factory=list, description="never these labels")
    zones: list[str] | None = Field(
        default=None,
        description="person models: only people inside one of these of the camera's zones (default: everyone)",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> EventsConfig:
        for label, value in {"threshold": self.threshold, **self.thresholds}.items():
            if not self.end_threshold < value <= 1:
                raise ValueError(
                    f"end_threshold ({self.end_threshold}) must be below threshold for {label!r} ({value})"
                )
        return self


class FusionConfig(Section):
    """Several models on one camera, their scores fused (two-stream: RGB and optical flow)."""

    models: dict[str, float] = Field(
        min_length=2,
        description="model name → weight: the camera's score is the weighted average of their probabilities",
    )

    @field_validator("models")
    @classmethod
    def _weights(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or sum(v.values()) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {v}")
        return v


class CameraConfig(SourceConfig):
    model: str | None = Field(default=None, description="name of a model in `models` (default: the only one)")
    fusion: FusionConfig | None = Field(
        default=None, description="feed several models and fuse their scores (instead of `model`)"
    )
    events: EventsConfig | None = Field(default=None, description="overrides the top-level `events` section")
    record_url: SecretStr | None = Field(
        default=None,
        description="a second stream of the same camera (its main stream) recorded for evidence only; "
        "default: the evidence comes from `url`",
    )
    region: tuple[float, float, float, float] | None = Field(
        default=None,
        description="[x1, y1, x2, y2] normalised to the upright frame: the model sees only this part, resized and "
        "cropped as its spec says (default: the whole frame)",
    )
    mask: list[Polygon] = Field(
        default_factory=list,
        description="polygons [[x, y], ...] (one, or a list of them) filled with the model's mean colour before the "
        "model (and a person model's detector) sees the frame",
    )
    zones: dict[str, Polygon] = Field(
        default_factory=dict,
        description="person models: named polygons; a person is in a zone when the bottom centre of their box is",
    )
    convert: Literal["cpu", "graph"] | None = Field(
        default=None,
        description="how sampled frames become the model's input: cpu = swscale on the camera's thread; graph = an "
        "ONNX graph on the model's ONNX Runtime provider (on CUDA the frames stay in GPU memory); default: graph "
        "when the model runs on CUDA and the camera decodes on NVDEC, else cpu",
    )

    @field_validator("region", mode="before")
    @classmethod
    def _four(cls, v: Any) -> Any:
        if isinstance(v, list | tuple) and len(v) != 4:
            raise ValueError(f"expected [x1, y1, x2, y2] (4 numbers), got {len(v)}")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: tuple[float, float, float, float] | None) -> Box | None:
        return _checked_region(v)

    @field_validator("mask", mode="before")
    @classmethod
    def _one_or_several(cls, v: Any) -> Any:
        """One polygon ``[[x, y], ...]`` stands for a list of one."""
        if isinstance(v, list) and v and isinstance(v[0], list | tuple) and v[0]:
            if not isinstance(v[0][0], list | tuple):
                return [v]
        return v

    @field_validator("mask")
    @classmethod
    def _mask(cls, v: list[Polygon]) -> list[Polygon]:
        for i, polygon in enumerate(v):
            try:
                _checked_polygon(polygon)
            except ValueError as e:
                raise ValueError(f"polygon {i}: {e}") from None
        return v

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: dict[str, Polygon]) -> dict[str, Polygon]:
        for name, polygon in v.items():
            if not re.match(NAME, name):
                raise ValueError(f"zone name {name!r} must match {NAME}")
            try:
                _checked_polygon(polygon)
            except ValueError as e:
                raise ValueError(f"zone {name!r}: {e}") from None
        return v

    @field_validator("record_url")
    @classmethod
    def _record_url(cls, v: SecretStr | None) -> SecretStr | None:
        return None if v is None else _checked_url(v)

    @model_validator(mode="after")
    def _record_credentials(self) -> CameraConfig:
        self.record_config()  # username/password apply to record_url too: the same checks
        return self

    def record_config(self) -> SourceConfig | None:
        """The evidence stream as a source of its own (``record_url`` with this camera's credentials and stream
        settings), or None when the model's stream is recorded."""
        if self.record_url is None:
            return None
        fields = {k: getattr(self, k) for k in SourceConfig.model_fields if k != "url"}
        return SourceConfig(**fields, url=self.record_url)


# What a camera entry says about its stream rather than about its model: entries that name the same stream (the same
# `url` with the same credentials) share one connection and one decoder, so these settings are the stream's.
STREAM_SETTINGS = (
    *(k for k in SourceConfig.model_fields if k not in ("name", "url", "username", "password", "every_s")),
    "record_url",
)


def stream_key(camera: SourceConfig) -> str:
    """What identifies a camera entry's stream: the URL it opens (``url`` with ``username`` and ``password``)."""
    return camera.stream_url()


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return redact_url(value.get_secret_value())
    return str(value) if isinstance(value, Path) else repr(value)


def _shared_streams(cameras: list[CameraConfig]) -> list[CameraConfig]:
    """Entries that name one stream share its settings (:data:`STREAM_SETTINGS`): each is what any of them sets it to
    (or its default); two of them setting one differently is an error, as are entries that name one stream with
    different credentials."""
    groups: dict[str, list[int]] = {}
    for i, camera in enumerate(cameras):
        groups.setdefault(stream_key(camera), []).append(i)
    out = list(cameras)
    for key, members in groups.items():
        if len(members) < 2:
            continue
        merged = {}
        for setting in STREAM_SETTINGS:
            given = [cameras[i] for i in members if setting in cameras[i].model_fields_set]
            for other in given[1:]:
                a, b = getattr(given[0], setting), getattr(other, setting)
                if a != b:
                    raise ValueError(
                        f"cameras {given[0].name!r} and {other.name!r} share the stream {redact_url(key)} but set "
                        f"`{setting}` differently ({_shown(a)}, {_shown(b)}): a stream's settings are those of every "
                        "camera entry that uses it; set it once, or the same on each"
                    )
            if given:
                merged[setting] = getattr(given[0], setting)
        for i in members:
            out[i] = cameras[i].model_copy(update=merged)
    bare: dict[str, str] = {}
    for key, members in groups.items():
        seen = bare.setdefault(without_userinfo(key), key)
        if seen != key:
            first = cameras[groups[seen][0]].name
            raise ValueError(
                f"cameras {first!r} and {cameras[members[0]].name!r} name the stream {without_userinfo(key)} with "
                "different credentials: entries that name one stream share one connection (give them the same)"
            )
    return out


class DetectorConfig(Section):
    """The person detector a person model (``task: person``) needs; see agent/people.py for the ONNX contract."""

    path: Path = Field(description="detector .onnx file (torchvision-style or YOLO-style outputs)")
    score_threshold: float = Field(default=0.5, ge=0, le=1, description="minimum detector confidence")
    person_class: int | None = Field(
        default=None, description="class id of a person (default: 1 for torchvision layouts, 0 for YOLO ones)"
    )
    max_people: int = Field(default=16, ge=1, le=256, description="most confident people per key frame")
    min_iou: float = Field(default=0.3, gt=0, le=1, description="tracker: overlap that keeps a person's id")
    lost_after_s: float = Field(default=3.0, gt=0, description="tracker: unseen this long, a person is gone")


class ModelConfig(Section):
    path: Path = Field(description="exported .onnx file")
    device: Literal["auto", "cuda", "cpu", "openvino", "openvino:GPU"] = Field(
        default="auto",
        description="auto: CUDA when it loads, else OpenVINO when installed, else ONNX Runtime's CPU provider; "
        "cuda, cpu: ONNX Runtime's providers; openvino: OpenVINO on the CPU; openvino:GPU: on an Intel GPU",
    )
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="fp32: the exported file's numbers; bf16: OpenVINO's CPU computes in bfloat16 (faster on CPUs "
        "with AVX512-BF16 or AMX, scores move by up to ~2 %)",
    )
    device_id: int = Field(default=0, ge=0)
    flow_method: FlowMethod | None = Field(
        default=None,
        description="flow models: compute the flow this way instead of as the model was trained "
        "(dis: several times faster than tvl1, a little less accurate)",
    )
    max_batch: int = Field(default=8, ge=1, le=1024, description="clips per batch, across cameras")
    max_wait_ms: float = Field(default=10.0, ge=0, description="how long a batch waits to fill")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = "HEURISTIC"
    threads: int | None = Field(
        default=None, ge=1, description="CPU intra-op threads per worker (default: ORT's; with workers: cores/workers)"
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="CPU: workers sharing each batch (many cameras: one per core); CUDA: 1"
    )
    detector: DetectorConfig | None = Field(default=None, description="person models: who to classify")

    @model_validator(mode="after")
    def _precision_needs_openvino(self) -> ModelConfig:
        if self.precision != "fp32" and self.device not in ("auto", "openvino"):
            raise ValueError(
                f"precision {self.precision} runs on OpenVINO's CPU only (device openvino, or auto where it picks "
                f"OpenVINO), not on device {self.device}"
            )
        return self


class MqttConfig(Section):
    url: str = Field(default="mqtt://localhost:1883", description="mqtt://host[:port] or mqtts://host[:port]")
    prefix: str = Field(default="actionstream", description="topic prefix")
    client_id: str | None = Field(default=None, description="a replica of several adds -shard-{i}")
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="use ${ENV_VAR}; never written inline in logs")
    password_file: Path | None = Field(default=None, description="file holding the password")
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = Field(default=False, description="skip hostname verification")
    qos: Literal[0, 1, 2] = Field(default=1, description="QoS of event messages")
    keepalive_s: int = Field(default=30, ge=5)
    queue_max: int = Field(
        default=10000,
        ge=1,
        description="non-retained messages (events, stats) kept while the broker is away; retained state is never "
        "dropped (one value per topic waits)",
    )
    stats_interval_s: float = Field(default=30.0, gt=0)
    homeassistant_discovery: bool = False
    discovery_prefix: str = "homeassistant"

    @field_validator("url")
    @classmethod
    def _url_parts(cls, v: str) -> str:
        parse_broker(v)
        return v

    @field_validator("password_file", "ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        return _readable_file(v)

    @model_validator(mode="after")
    def _key_needs_cert(self) -> MqttConfig:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set without cert_file")
        return self

    @property
    def broker(self) -> Broker:
        return parse_broker(self.url)

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password.get_secret_value() if self.password else None


class MetricsConfig(Section):
    enabled: bool = Field(default=True, description="serve /metrics, the probes, the API and the status page")
    host: str = Field(default="0.0.0.0", description="address the HTTP server binds")
    port: int = Field(default=9108, ge=0, le=65535)


class EvidenceConfig(Section):
    """What the agent keeps of each action: a snapshot, a clip and a row in the event store."""

    enabled: bool = Field(default=False, description="keep evidence (snapshots, clips, the event store)")
    snapshots: bool = Field(default=True, description="a JPEG of the deciding clip's newest frame per action")
    clips: bool = Field(default=True, description="an MP4 per action, remuxed from the camera's own packets")
    pre_s: float = Field(default=5.0, ge=0, le=60, description="seconds of video before the action's start")
    post_s: float = Field(default=5.0, ge=0, le=60, description="seconds of video after the action's end")
    max_clip_s: float = Field(default=300.0, gt=0, description="a clip is closed at this length")
    ring_mb: float = Field(
        default=64.0, gt=0, description="the most compressed video a camera keeps for clips' pre-roll, MB"
    )
    jpeg_quality: int = Field(default=85, ge=10, le=100, description="snapshot JPEG quality")


class StorageConfig(Section):
    """Where evidence lives: the SQLite event store and the snapshot and clip files, with retention."""

    path: Path = Field(default=Path("data"), description="folder of the event store and the evidence files")
    keep_days: float = Field(default=30.0, gt=0, description="actions older than this are deleted, evidence too")
    max_gb: float = Field(default=10.0, gt=0, description="evidence beyond this many GB: the oldest goes first")


class HttpConfig(Section):
    """The agent's HTTP server (on ``metrics.host:metrics.port``): who may read the API and the status page."""

    token: SecretStr | None = Field(
        default=None,
        description="required as `Authorization: Bearer TOKEN` for /api/* and / (use ${ENV_VAR}; empty: none)",
    )
    public: bool = Field(default=False, description="serve /api/* and / without a token on an address beyond loopback")

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value():
            return None  # empty (an unset ${VAR:-}): no token
        if v is not None and (len(v.get_secret_value()) < 8 or not v.get_secret_value().isprintable()):
            raise ValueError("must be at least 8 printable characters")
        return v


class WebhookConfig(Section):
    """One HTTP endpoint that is POSTed the event JSON of the actions it asks for."""

    url: SecretStr = Field(description="http:// or https:// URL the event JSON is POSTed to")
    name: str | None = Field(default=None, description="the `webhook` label of its metrics (default: webhook-N)")
    labels: list[str] | None = Field(default=None, description="only these labels (default: all)")
    cameras: list[str] | None = Field(default=None, description="only these cameras (default: all)")
    min_score: float = Field(default=0.0, ge=0, le=1, description="only events whose top_score is at least this")
    cooldown_s: float = Field(
        default=0.0, ge=0, description="after an action is sent, another of its camera and label within this is not"
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="extra headers (secrets: ${ENV_VAR})")
    timeout_s: float = Field(default=10.0, gt=0, description="seconds one POST may take")
    retries: int = Field(default=5, ge=0, le=20, description="tries after the first, 1 s doubling to 60 s apart")
    queue_max: int = Field(default=1000, ge=1, description="events waiting for this webhook; beyond it, the oldest go")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        url = v.get_secret_value()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {redact_url(url)}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.match(NAME, v):
            raise ValueError(f"must match {NAME}")
        return v


class AgentConfig(Section):
    cameras: list[CameraConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = Field(min_length=1)
    mqtt: MqttConfig | None = Field(default=None, description="absent: events go to stdout as JSON lines")
    metrics: MetricsConfig = MetricsConfig()
    events: EventsConfig = EventsConfig()
    evidence: EvidenceConfig = EvidenceConfig()
    storage: StorageConfig = StorageConfig()
    http: HttpConfig = HttpConfig()
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="POST events to these URLs")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("cameras")
    @classmethod
    def _streams(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        return _shared_streams(cameras)

    @model_validator(mode="after")
    def _cross_checks(self) -> AgentConfig:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate camera names: {', '.join(dupes)}")
        for bad in [m for m in self.models if not re.match(NAME, m)]:
            raise ValueError(f"model name {bad!r} must match {NAME}")
        for cam in self.cameras:
            if cam.fusion is not None:
                if cam.model is not None:
                    raise ValueError(f"camera {cam.name!r}: set `model` or `fusion`, not both")
                unknown = [m for m in cam.fusion.models if m not in self.models]
                if unknown:
                    raise ValueError(
                        f"camera {cam.name!r}: fusion model(s) {', '.join(map(repr, unknown))} not in `models` "
                        f"({', '.join(self.models)})"
                    )
                continue
            if cam.model is None and len(self.models) > 1:
                raise ValueError(f"camera {cam.name!r}: set `model` (several models are configured)")
            if cam.model is not None and cam.model not in self.models:
                raise ValueError(
                    f"camera {cam.name!r}: model {cam.model!r} is not in `models` ({', '.join(self.models)})"
                )
            unknown = [z for z in self.events_of(cam).zones or [] if z not in cam.zones]
            if unknown:
                where = "its events.zones" if cam.events is not None else "events.zones"
                have = ", ".join(cam.zones) or "none"
                raise ValueError(
                    f"camera {cam.name!r}: {where} names zones it does not have: {unknown} (its zones: {have})"
                )
        hooks = [self.webhook_name(i) for i in range(len(self.webhooks))]
        dupes = sorted({n for n in hooks if hooks.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate webhook names: {', '.join(dupes)}")
        return self

    def streams(self) -> dict[str, list[CameraConfig]]:
        """Each stream (by :func:`stream_key`) and the camera entries that use it, in the config's order; the first
        one's name labels the stream's frame counters."""
        out: dict[str, list[CameraConfig]] = {}
        for camera in self.cameras:
            out.setdefault(stream_key(camera), []).append(camera)
        return out

    def stream_of(self, camera: CameraConfig) -> list[CameraConfig]:
        """The camera entries that share ``camera``'s stream (itself among them), in the config's order."""
        key = stream_key(camera)
        return [c for c in self.cameras if stream_key(c) == key]

    def webhook_name(self, index: int) -> str:
        return self.webhooks[index].name or f"webhook-{index}"

    def model_of(self, camera: CameraConfig) -> str:
        """The camera's model (a fused camera: its first)."""
        return self.models_of(camera)[0]

    def models_of(self, camera: CameraConfig) -> list[str]:
        """The models the camera feeds: its fusion's, else its one."""
        if camera.fusion is not None:
            return list(camera.fusion.models)
        return [camera.model or next(iter(self.models))]

    def events_of(self, camera: CameraConfig) -> EventsConfig:
        return camera.events or self.events


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: str, origin: str) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), origin) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}.{i}", origin) for i, v in enumerate(value)]
    if isinstance(value, str):

        def repl(m: re.Match) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(f"{origin}: {path}: environment variable {m.group(1)} is not set")

        return _ENV.sub(repl, value)
    return value


def parse_config(data: Any, origin: str = "config") -> AgentConfig:
    """Validate a plain dict (as read from YAML); errors name ``origin`` and each key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    data = _substitute(data, "", origin)
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(p) if str(p).isprintable() else repr(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{where}: {msg}")
        raise ConfigError(f"{origin}: " + "; ".join(problems)) from None


def load_config(path: str | Path) -> AgentConfig:
    """Read, substitute and validate a YAML config file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_config(data, str(path))
