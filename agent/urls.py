"""URLs with credentials in them: the one place that shows them safely and takes them apart.

A camera or broker URL may carry a password in its user info (``rtsp://user:pass@host/...``) or a secret in its
query string (``http://cam/snapshot.cgi?user=admin&password=...``, ``token=``, ``auth=``...). Neither ever leaves
the process: logs, errors, metrics and payloads show :func:`redact_url`'s form, ``rtsp://user:***@host/...`` and
``?user=admin&password=***``.

The user info is found even when the password holds characters that should have been percent-encoded
(``#``, ``?``, ``/``, ``@``, ``%``): it runs up to the last ``@`` that a host name follows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

# Query keys whose values are secrets (compared lower-case, ignoring ``-`` and ``_``).
SECRET_KEYS = frozenset(
    "password passwd pass pwd pw token accesstoken auth authorization key apikey secret signature sig credential "
    "credentials".split()
)
MASK = "***"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(:\d*)?(?=[/?#]|$)")


@dataclass(frozen=True)
class UrlParts:
    scheme: str  # "rtsp://"
    user: str | None
    password: str | None
    rest: str  # host, port, path, query, fragment


def split_url(url: str) -> UrlParts | None:
    """The URL's scheme, user info (as written: percent-encoded, if at all) and the rest, or None when it is not
    ``scheme://...``."""
    m = _SCHEME.match(url)
    if m is None:
        return None
    scheme, rest = m.group(0), url[m.end() :]
    for at in reversed([i for i, c in enumerate(rest) if c == "@"]):
        if _HOST.match(rest, at + 1):
            user, sep, password = rest[:at].partition(":")
            return UrlParts(scheme, user, password if sep else None, rest[at + 1 :])
    return UrlParts(scheme, None, None, rest)


def _secret_key(key: str) -> bool:
    return unquote(key).lower().replace("_", "").replace("-", "") in SECRET_KEYS


def _query_secrets(rest: str) -> list[str]:
    """Values of secret query keys in ``rest`` (everything after the first ``?``, fragment included)."""
    _, sep, query = rest.partition("?")
    if not sep:
        return []
    pairs = (item.partition("=") for item in re.split(r"[&;]", query))
    return [value for key, eq, value in pairs if eq and value and _secret_key(key)]


def _redact_query(rest: str) -> str:
    head, sep, query = rest.partition("?")
    if not sep:
        return rest
    items = []
    for item in re.split(r"([&;])", query):
        key, eq, value = item.partition("=")
        items.append(f"{key}={MASK}" if eq and value and _secret_key(key) else item)
    return head + sep + "".join(items)


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values replaced by ``***`` (anything else: unchanged)."""
    parts = split_url(url)
    if parts is None:
        return url
    userinfo = "" if parts.user is None else parts.user + ("" if parts.password is None else f":{MASK}") + "@"
    return parts.scheme + userinfo + _redact_query(parts.rest)


def without_userinfo(url: str) -> str:
    """``url`` without its user info at all (``mqtt://user:pw@host`` → ``mqtt://host``), secrets in the query
    redacted."""
    parts = split_url(url)
    return url if parts is None else parts.scheme + _redact_query(parts.rest)


def secrets_of(url: str) -> list[str]:
    """Every form in which ``url``'s secrets may appear in text: as written, percent-decoded, percent-encoded."""
    parts = split_url(url)
    if parts is None:
        return []
    raw = [parts.password or "", *_query_secrets(parts.rest)]
    forms = {form for s in raw if s for form in (s, unquote(s), quote(s, safe=""), quote(unquote(s), safe=""))}
    return sorted((f for f in forms if f), key=len, reverse=True)  # longest first: no partial leftovers


class Redactor:
    """Removes one URL's secrets from any text (FFmpeg's error messages quote the URL they failed on)."""

    def __init__(self, url: str) -> None:
        self.url, self.safe = url, redact_url(url)
        self.secrets = secrets_of(url)

    def __call__(self, text: str) -> str:
        text = text.replace(self.url, self.safe)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


@dataclass(frozen=True)
class Broker:
    """An MQTT broker address; :attr:`display` is the only form that is ever shown (no user info)."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...``; ValueError (never showing the user info)
    when it is anything else."""
    shown = repr(without_userinfo(url))
    parts = split_url(url)
    scheme = parts.scheme[:-3].lower() if parts else ""
    if parts is None or scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"expected mqtt://host[:port] or mqtts://host[:port], got {shown}")
    location = urlsplit(f"{scheme}://{parts.rest}")
    try:
        port = location.port
    except ValueError:
        raise ValueError(f"invalid port in {shown}") from None
    if not location.hostname:
        raise ValueError(f"no host in {shown}")
    if location.path not in ("", "/") or location.query or location.fragment:
        raise ValueError(f"expected nothing after the host and port in {shown}")
    tls = scheme == "mqtts"
    return Broker(
        host=location.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.user) if parts.user else None,
        password=unquote(parts.password) if parts.password else None,
    )
