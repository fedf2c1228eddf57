"""agent.live.http: who may read what. A server listening beyond loopback without a token refuses the API and the
page (and says how to set a token) but serves /metrics and the probes; ``http.public`` opens them with a warning; a
token is checked (header or the page's cookie). Real aiohttp server on 0.0.0.0 / 127.0.0.1, real requests."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from agent.config import parse_config
from agent.live.http import HttpServer, is_loopback
from agent.metrics import Metrics
from tests.rtsp_server import free_port


class View:
    def cameras_view(self) -> list[dict]:
        return []

    def latest_frame(self, camera: str):
        return None

    def not_ready(self) -> list[str]:
        return ["model m: no inference for 40 s (expected within 30 s)"]


def config(host: str, **http):
    return parse_config(
        {
            "cameras": [{"name": "c", "url": "rtsp://192.0.2.1/x"}],
            "models": {"m": {"path": "m.onnx"}},
            "metrics": {"host": host, "port": free_port()},
            "http": http,
        }
    )


async def fetch(server: HttpServer, path: str, headers: dict | None = None, cookies: dict | None = None):
    url = f"http://127.0.0.1:{server.port}{path}"
    async with aiohttp.ClientSession(cookies=cookies) as session, session.get(url, headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def serve(cfg, *paths, headers=None, cookies=None) -> dict[str, tuple]:
    async def main() -> dict[str, tuple]:
        async with HttpServer(cfg, Metrics(), View(), None) as server:
            return {p: await fetch(server, p, headers, cookies) for p in paths}

    return asyncio.run(main())


def test_beyond_loopback_without_a_token_the_api_and_page_refuse_and_say_how(caplog):
    with caplog.at_level(logging.WARNING):
        got = serve(config("0.0.0.0"), "/api/actions", "/api/cameras", "/", "/metrics", "/healthz", "/readyz")
    for path in ("/api/actions", "/api/cameras", "/"):
        status, kind, body = got[path]
        assert status == 401 and kind.startswith("application/json"), path
        assert "http.token" in json.loads(body)["error"] and "http.public" in json.loads(body)["error"]
    assert got["/metrics"][0] == 200 and b"actionstream_" in got["/metrics"][2]
    assert got["/healthz"][0] == 200
    status, _, body = got["/readyz"]
    assert status == 503 and json.loads(body) == {"ready": False, "reasons": [View().not_ready()[0]]}
    assert "without a token" in caplog.text


def test_public_serves_everyone_and_warns(caplog):
    with caplog.at_level(logging.WARNING):
        got = serve(config("0.0.0.0", public=True), "/api/cameras", "/")
    assert got["/api/cameras"][:2] == (200, "application/json; charset=utf-8") and got["/"][0] == 200
    assert "http.public" in caplog.text


def test_loopback_needs_no_token_and_evidence_off_says_so():
    got = serve(config("127.0.0.1"), "/api/cameras", "/api/actions", "/api/actions/x", "/nothing")
    assert got["/api/cameras"][0] == 200
    assert got["/api/actions"][0] == 503 and b"evidence.enabled" in got["/api/actions"][2]
    assert got["/nothing"][0] == 404 and json.loads(got["/nothing"][2])["error"]


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_a_token_is_required_when_set_header_or_cookie(host):
    token = "a-long-enough-token"
    cfg = config(host, token=token)
    assert serve(cfg, "/api/cameras")["/api/cameras"][0] == 401
    assert serve(cfg, "/api/cameras", headers={"Authorization": "Bearer nope-nope"})["/api/cameras"][0] == 401
    assert serve(cfg, "/api/cameras", headers={"Authorization": f"Bearer {token}"})["/api/cameras"][0] == 200
    assert serve(cfg, "/api/cameras", cookies={"actionstream_token": token})["/api/cameras"][0] == 200
    page = serve(cfg, "/")["/"]
    assert page[0] == 401 and page[1].startswith("text/html") and b"actionstream_token" in page[2]
    assert serve(cfg, "/metrics")["/metrics"][0] == 200


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.1")
