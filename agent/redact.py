"""Credentials never leave the process: URLs are shown as ``scheme://user:***@host/...``."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()


class Redactor:
    """Removes one URL's secret from any text (FFmpeg error messages quote the URL they failed on)."""

    def __init__(self, url: str) -> None:
        self.url, self.safe = url, redact_url(url)
        password = urlsplit(url).password
        self.secrets = [s for s in {password, unquote(password) if password else None} if s]

    def __call__(self, text: str) -> str:
        text = text.replace(self.url, self.safe)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text
