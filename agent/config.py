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
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from agent.errors import ConfigError
from agent.urls import Broker, parse_broker, redact_url, without_userinfo

NAME = r"^[A-Za-z0-9_-]{1,64}$"
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "srt", "udp", "tcp", "file")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Section):
    """One camera: where its frames come from and how the stream is watched."""

    name: str = Field(pattern=NAME, description="camera name used in topics and metrics")
    url: SecretStr = Field(description="rtsp://, rtsps://, http(s)://, a file path, or /dev/videoN")
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

    @model_validator(mode="after")
    def _hysteresis(self) -> EventsConfig:
        for label, value in {"threshold": self.threshold, **self.thresholds}.items():
            if not self.end_threshold < value <= 1:
                raise ValueError(
                    f"end_threshold ({self.end_threshold}) must be below threshold for {label!r} ({value})"
                )
        return self


class CameraConfig(SourceConfig):
    model: str | None = Field(default=None, description="name of a model in `models` (default: the only one)")
    events: EventsConfig | None = Field(default=None, description="overrides the top-level `events` section")


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
    device: Literal["auto", "cuda", "cpu"] = Field(default="auto", description="auto: CUDA when it loads, else CPU")
    device_id: int = Field(default=0, ge=0)
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

    @property
    def broker(self) -> Broker:
        return parse_broker(self.url)

    def secret(self) -> str | None:
        if self.password_file is not None:
            return self.password_file.read_text().strip()
        return self.password.get_secret_value() if self.password else None


class MetricsConfig(Section):
    enabled: bool = True
    host: str = Field(default="0.0.0.0", description="address the /metrics endpoint binds")
    port: int = Field(default=9108, ge=0, le=65535)


class AgentConfig(Section):
    cameras: list[CameraConfig] = Field(min_length=1)
    models: dict[str, ModelConfig] = Field(min_length=1)
    mqtt: MqttConfig | None = Field(default=None, description="absent: events go to stdout as JSON lines")
    metrics: MetricsConfig = MetricsConfig()
    events: EventsConfig = EventsConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _cross_checks(self) -> AgentConfig:
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate camera names: {', '.join(dupes)}")
        for bad in [m for m in self.models if not re.match(NAME, m)]:
            raise ValueError(f"model name {bad!r} must match {NAME}")
        for cam in self.cameras:
            if cam.model is None and len(self.models) > 1:
                raise ValueError(f"camera {cam.name!r}: set `model` (several models are configured)")
            if cam.model is not None and cam.model not in self.models:
                raise ValueError(
                    f"camera {cam.name!r}: model {cam.model!r} is not in `models` ({', '.join(self.models)})"
                )
        return self

    def model_of(self, camera: CameraConfig) -> str:
        return camera.model or next(iter(self.models))

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
