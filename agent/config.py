"""Typed configuration. Every section forbids unknown keys and describes its fields.

Secrets: a camera URL may carry a password; it is stored as a ``SecretStr`` so that reprs, logs and
validation errors never show it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Section):
    """One camera: where its frames come from and how the stream is watched."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="camera name used in topics and metrics")
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

    @field_validator("url")
    @classmethod
    def _url_not_empty(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty")
        return v
