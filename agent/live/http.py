"""The agent's HTTP server, on ``metrics.host:metrics.port``: metrics, probes, the API and the status page.

- ``/metrics`` (Prometheus), ``/healthz``, ``/readyz``: anyone;
- ``/api/*``, ``/`` (the status page): with ``http.token``, whoever sends it (``Authorization: Bearer``, or the
  cookie the page's token form sets).

Evidence shows people. A server listening beyond loopback without ``http.token`` refuses ``/api/*`` and ``/``
(401, saying how to set a token) unless ``http.public`` is true (then it says so at start, as a warning).

aiohttp's server: an asyncio HTTP server that runs on the agent's own event loop (no thread, no second process),
serves files with Range requests (clips for a browser's player) and parses HTTP itself; it is well kept and the
webhooks use its client. Handlers never block the loop: the store is read in its reader threads, JPEGs are
encoded and the Prometheus exposition is built in worker threads.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any, Protocol

import av
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.config import AgentConfig
from agent.live.evidence.keeper import Evidence, action_url
from agent.live.evidence.snapshots import encode_jpeg
from agent.live.evidence.store import Action
from agent.metrics import Metrics

log = logging.getLogger("actionstream.http")
ACTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
CAMERA = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LIMIT_MAX = 1000
SNAPSHOT_WAIT_S = 5.0  # a snapshot still being encoded is waited for this long
COOKIE = "actionstream_token"
QUERY_KEYS = {"camera", "label", "since", "until", "limit"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AgentView(Protocol):
    """What the server shows of the running agent (implemented by :class:`agent.live.app.Agent`)."""

    def cameras_view(self) -> list[dict[str, Any]]: ...

    def latest_frame(self, camera: str) -> av.VideoFrame | None: ...

    def not_ready(self) -> list[str]: ...


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(host: str) -> str:
    return (
        f"the agent listens on {host} without a token, and /api/* and / show camera evidence: set http.token "
        "(token: ${ACTIONSTREAM_HTTP_TOKEN}) and send it as 'Authorization: Bearer TOKEN', bind metrics.host to "
        "127.0.0.1, or set http.public: true to serve them to anyone"
    )


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


class HttpServer:
    """``async with HttpServer(...)``: listening once entered (an OSError when the port is taken)."""

    def __init__(self, config: AgentConfig, metrics: Metrics, view: AgentView, evidence: Evidence | None) -> None:
        self.config, self.metrics, self.view, self.evidence = config, metrics, view, evidence
        self.host, self.port = config.metrics.host, config.metrics.port
        token = config.http.token
        self.token = None if token is None else token.get_secret_value()
        self.refuse = self.token is None and not config.http.public and not is_loopback(self.host)
        self.app = web.Application(middlewares=[self._count, self._guard])
        self.app.router.add_get("/metrics", self.metrics_text)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/", self.page)
        self.app.router.add_get("/api/cameras", self.cameras)
        self.app.router.add_get("/api/cameras/{name}/latest.jpg", self.latest)
        self.app.router.add_get("/api/actions", self.actions)
        self.app.router.add_get("/api/actions/{action_id}", self.action)
        self.app.router.add_get("/api/actions/{action_id}/snapshot.jpg", self.snapshot)
        self.app.router.add_get("/api/actions/{action_id}/clip.mp4", self.clip)
        self._runner: web.AppRunner | None = None
        self._page = resources.files("agent.live").joinpath("status.html").read_text(encoding="utf-8")

    async def __aenter__(self) -> HttpServer:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        log.info("HTTP on http://%s:%d/ (metrics, probes, API, status page)", self.host, self.port)
        if self.config.http.public and self.token is None and not is_loopback(self.host):
            log.warning(
                "http.public: the API and status page (camera evidence) are served on %s without a token", self.host
            )
        elif self.refuse:
            log.warning("HTTP: %s", refusal(self.host))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- middleware ------------------------------------------------------------------------------------------------

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else "other"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            self.metrics.http_requests.labels(path=path, status=str(status)).inc()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/" or path.startswith("/api/"):
            if self.refuse:
                return error(401, refusal(self.host))
            if self.token is not None and not self._authorized(request):
                if path == "/":
                    return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
                message = "a token is required: send 'Authorization: Bearer TOKEN' (http.token)"
                return error(401, message, **{"WWW-Authenticate": 'Bearer realm="actionstream"'})
        unmatched = request.match_info.http_exception
        if unmatched is not None:  # no route: the same JSON errors as the API's
            if isinstance(unmatched, web.HTTPMethodNotAllowed):
                return error(
                    405, f"{request.method} is not allowed on {path}", Allow=", ".join(unmatched.allowed_methods)
                )
            return error(unmatched.status, f"no such path: {path}")
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        assert self.token is not None
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            given = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    # -- metrics and probes ----------------------------------------------------------------------------------------

    async def metrics_text(self, request: web.Request) -> web.StreamResponse:
        body = await asyncio.to_thread(generate_latest, self.metrics.registry)
        response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.enable_compression()
        return response

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        reasons = self.view.not_ready()
        return web.json_response({"ready": not reasons, "reasons": reasons}, status=503 if reasons else 200)

    # -- the API ---------------------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text=self._page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def cameras(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.view.cameras_view())

    async def latest(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not CAMERA.match(name) or name not in {c["name"] for c in self.view.cameras_view()}:
            return error(404, f"no camera {name!r}")
        frame = self.view.latest_frame(name)
        if frame is None:
            return error(404, f"camera {name} has not delivered a frame yet")
        jpeg = await asyncio.to_thread(encode_jpeg, frame, quality=75)
        return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def _store(self) -> Evidence:
        if self.evidence is None:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "evidence is off (evidence.enabled): no event store"}),
                content_type="application/json",
            )
        return self.evidence

    async def actions(self, request: web.Request) -> web.StreamResponse:
        evidence = self._store()
        query = request.query
        unknown = sorted(set(query) - QUERY_KEYS)
        if unknown:
            return error(
                400, f"unknown query parameter(s): {', '.join(unknown)} (expected {', '.join(sorted(QUERY_KEYS))})"
            )
        try:
            since, until = _time(query.get("since"), "since"), _time(query.get("until"), "until")
            limit = _int(query.get("limit"), "limit", 100, 1, LIMIT_MAX)
        except ValueError as e:
            return error(400, str(e))
        found = await asyncio.wrap_future(
            evidence.store.actions(
                camera=query.get("camera") or None, label=query.get("label") or None, since=since, until=until,
                limit=limit,
            )
        )  # fmt: skip
        return web.json_response([action_json(a) for a in found])

    async def _action(self, request: web.Request) -> Action:
        evidence = self._store()
        action_id = request.match_info["action_id"]
        if not ACTION_ID.match(action_id):
            raise _not_found(f"no action {action_id!r}")
        found = await asyncio.wrap_future(evidence.store.action(action_id))
        if found is None:
            raise _not_found(f"no action {action_id!r}")
        return found

    async def action(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(action_json(await self._action(request)))

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        found = await self._action(request)
        if found.snapshot is None and self.evidence is not None:
            await self.evidence.snapshot_ready(found.action_id, SNAPSHOT_WAIT_S)
            found = await self._action(request)
        if found.snapshot is None:
            return error(404, f"action {found.action_id} has no snapshot")
        return self._file(found.snapshot, "image/jpeg")

    async def clip(self, request: web.Request) -> web.StreamResponse:
        found = await self._action(request)
        if found.clip is None:
            recording = self.evidence is not None and any(
                found.action_id in r.recording for r in self.evidence.recorders.values()
            )
            if recording:
                message = f"the clip of {found.action_id} is being recorded (until evidence.post_s after its end)"
                return error(404, message, **{"Retry-After": "5"})
            return error(404, f"action {found.action_id} has no clip")
        return self._file(found.clip, "video/mp4")

    def _file(self, relative: str, content_type: str) -> web.StreamResponse:
        assert self.evidence is not None
        path = self.evidence.store.path_of(relative)
        if not path.is_file():  # deleted by retention meanwhile
            return error(404, "the file has been deleted (storage retention)")
        headers = {"Content-Type": content_type, "Cache-Control": "private, max-age=60"}
        return web.FileResponse(path, headers=headers)


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")


def _time(value: str | None, key: str) -> float | None:
    """A time query value: UNIX seconds, or ISO 8601 (with a time zone; UTC when it has none)."""
    if value is None or value == "":
        return None
    try:
        t = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{key}: expected UNIX seconds or an ISO 8601 time, got {value!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
        return parsed.timestamp()
    if not math.isfinite(t):
        raise ValueError(f"{key}: expected a finite number, got {value!r}")
    return t


def _int(value: str | None, key: str, default: int, low: int, high: int) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"{key}: expected an integer, got {value!r}") from None
    if not low <= n <= high:
        raise ValueError(f"{key}: expected {low} to {high}, got {n}")
    return n


def action_json(a: Action) -> dict[str, Any]:
    return {
        "action_id": a.action_id,
        "camera": a.camera,
        "label": a.label,
        "person": a.person,
        "model": a.model,
        "start_time": round(a.start_time, 3),
        "end_time": None if a.end_time is None else round(a.end_time, 3),
        "top_score": round(a.top_score, 4),
        "snapshot": action_url(a.action_id, "snapshot") if a.snapshot else None,
        "clip": action_url(a.action_id, "clip") if a.clip else None,
        "interrupted": a.interrupted,
    }


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>actionstream: token required</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:15px system-ui,sans-serif;margin:3em auto;max-width:32em;color:#222}
input{font:inherit;padding:.4em;width:100%;box-sizing:border-box;margin:.5em 0}
button{font:inherit;padding:.4em 1em}</style>
</head><body><h1>actionstream</h1>
<p>This agent requires its token (<code>http.token</code>). It is kept in a cookie of this browser for this site.</p>
<form id="f"><input id="t" type="password" autocomplete="current-password" placeholder="token" required>
<button>Open</button></form>
<script>
document.getElementById("f").addEventListener("submit", (e) => {
  e.preventDefault();
  const v = encodeURIComponent(document.getElementById("t").value);
  document.cookie = "actionstream_token=" + v + "; path=/; SameSite=Strict";
  location.reload();
});
</script></body></html>
"""
