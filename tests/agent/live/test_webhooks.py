"""agent.live.webhooks against a real HTTP endpoint on loopback (aiohttp's server): what is sent, with which
headers, retries with backoff, what is not retried, the cooldown, and the counters."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from agent.config import WebhookConfig
from agent.live.events import Event
from agent.live.webhooks import Webhooks
from agent.metrics import Metrics
from tests.rtsp_server import free_port

SECRET = "s3cret-header-value"


def event(kind: str, action: str, label: str = "falling", top: float = 0.9, camera: str = "dock1") -> Event:
    return Event(
        id=f"{action}-{kind}", action_id=action, seq=1, type=kind, camera=camera, label=label, score=top,
        top_score=top, start_time=1.0, end_time=2.0 if kind == "end" else None, clip_start=0.0, clip_end=1.0,
        model="m", received_at=1.0, inference_ms=1.0,
        evidence={"snapshot": f"/api/actions/{action}/snapshot.jpg", "clip": None},
    )  # fmt: skip


class Endpoint:
    """Records each POST; answers with the statuses in ``script`` in turn (then 200)."""

    def __init__(self, script: list[int] | None = None) -> None:
        self.script, self.posts = list(script or []), []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.json()))
        return web.Response(status=self.script.pop(0) if self.script else 200)

    async def __aenter__(self) -> Endpoint:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    def url(self, query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/hook{query}"


async def until(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError


def test_events_are_posted_with_headers_and_retried_until_delivered(caplog):
    metrics = Metrics()

    async def main(endpoint: Endpoint) -> None:
        hook = WebhookConfig(url=endpoint.url("?token=abc"), headers={"X-Api-Key": SECRET}, retries=3)
        async with Webhooks([("ops", hook)], metrics) as hooks:
            hooks.publish(event("start", "a1"))
            await until(lambda: len(endpoint.posts) == 3)  # 503, 500, then 200: 1 s and 2 s apart

    async def run() -> Endpoint:
        async with Endpoint([503, 500]) as endpoint:
            await main(endpoint)
        return endpoint

    with caplog.at_level(logging.DEBUG):
        endpoint = asyncio.run(run())
    headers, body = endpoint.posts[-1]
    assert headers["X-Api-Key"] == SECRET and headers["Content-Type"] == "application/json"
    assert body["action_id"] == "a1" and body["evidence"]["snapshot"] == "/api/actions/a1/snapshot.jpg"
    assert metrics.value("actionstream_webhook_deliveries_total", webhook="ops") == 1
    assert SECRET not in caplog.text and "abc" not in caplog.text


def test_filters_cooldown_and_what_is_not_retried():
    metrics = Metrics()

    async def run() -> Endpoint:
        async with Endpoint([400]) as endpoint:
            hook = WebhookConfig(url=endpoint.url(), labels=["falling"], cameras=["dock1"], min_score=0.5,
                                 cooldown_s=60)  # fmt: skip
            async with Webhooks([("ops", hook)], metrics) as hooks:
                hooks.publish(event("start", "rejected"))  # answered 400: not retried
                await until(lambda: len(endpoint.posts) == 1)
                hooks.publish(event("start", "other-label", label="waving"))
                hooks.publish(event("start", "other-camera", camera="dock2"))
                hooks.publish(event("start", "low", top=0.2))  # below min_score ...
                hooks.publish(event("start", "cooled", label="falling"))  # within the cooldown of "rejected"
                hooks.publish(event("end", "cooled", label="falling"))
                await asyncio.sleep(0.5)
        return endpoint

    endpoint = asyncio.run(run())
    assert [body["action_id"] for _, body in endpoint.posts] == ["rejected"]
    assert metrics.value("actionstream_webhook_failures_total", webhook="ops", reason="rejected") == 1
    assert metrics.value("actionstream_webhook_deliveries_total", webhook="ops") == 0


def test_a_dead_endpoint_is_given_up_on_and_counted():
    metrics = Metrics()

    async def run() -> None:
        hook = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/nobody", retries=1, timeout_s=1)
        async with Webhooks([("dead", hook)], metrics) as hooks:
            hooks.publish(event("start", "a"))
            await until(lambda: metrics.value("actionstream_webhook_failures_total", webhook="dead",
                                              reason="gave_up") == 1)  # fmt: skip

    asyncio.run(run())
