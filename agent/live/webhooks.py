"""Webhooks: the event JSON (with its evidence paths) POSTed to the URLs of ``webhooks``, retried with backoff.

Each webhook has its own bounded queue (``queue_max``; when full, the oldest event is dropped) and one sender task,
so a slow or dead endpoint delays only itself. What a webhook is sent:

- events of its ``cameras`` and ``labels`` (default: all) whose ``top_score`` is at least ``min_score``;
- ``cooldown_s``: once an action of a camera and label has been sent, another action of the same camera and label
  that starts within ``cooldown_s`` is not sent (none of its events).

A POST that fails (no connection, a timeout, HTTP 408, 429 or 5xx) is tried again up to ``retries`` times, 1 s
doubling to 60 s apart (±20 %); any other 4xx is not retried. Deliveries and failures are counted in
``actionstream_webhook_deliveries_total`` and ``actionstream_webhook_failures_total``. Header values (the secrets,
from ``${ENV}``) are never logged, and URLs only redacted.

aiohttp's client: the agent's HTTP server uses aiohttp already, and its client shares the event loop (no thread per
request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time

import aiohttp

from agent.config import WebhookConfig
from agent.live.events import Event
from agent.metrics import Metrics
from agent.urls import redact_url

log = logging.getLogger("actionstream.webhooks")
BACKOFF_MAX_S = 60.0
LOG_REPEAT_S = 60.0
RETRY_STATUS = frozenset({408, 429})
STOP_S = 2.0  # at shutdown, queued events get this long to go out


class Webhook:
    """One configured webhook: its filter, its queue and its sender (see the module docstring)."""

    def __init__(self, name: str, config: WebhookConfig, metrics: Metrics) -> None:
        self.name, self.config, self.metrics = name, config, metrics
        self.shown = redact_url(config.url.get_secret_value())
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._deliveries = metrics.webhook_deliveries.labels(webhook=name)
        self._last_sent: dict[tuple[str, str], float] = {}  # (camera, label) → monotonic time of an action's first
        self._passing: set[str] = set()  # actions being sent
        self._suppressed: set[str] = set()  # actions held back by the cooldown
        self._logged: dict[str, float] = {}

    def wants(self, event: Event, now: float) -> bool:
        """Whether this event goes to this webhook (updates the cooldown state)."""
        cfg = self.config
        if (cfg.cameras is not None and event.camera not in cfg.cameras) or (
            cfg.labels is not None and event.label not in cfg.labels
        ):
            return False
        if event.action_id in self._suppressed:
            if event.type == "end":
                self._suppressed.discard(event.action_id)
            return False
        if event.top_score < cfg.min_score:
            return False
        if event.action_id not in self._passing:
            key = (event.camera, event.label)
            if cfg.cooldown_s and now - self._last_sent.get(key, -math.inf) < cfg.cooldown_s:
                if event.type != "end":
                    self._suppressed.add(event.action_id)
                return False
            self._last_sent[key] = now
            self._passing.add(event.action_id)
        if event.type == "end":
            self._passing.discard(event.action_id)
        return True

    def offer(self, body: bytes) -> None:
        if self.queue.qsize() >= self.config.queue_max:
            self.queue.get_nowait()
            self._failed("queue_full", f"queue full (queue_max {self.config.queue_max}): dropped the oldest event")
        self.queue.put_nowait(body)

    async def run(self, session: aiohttp.ClientSession) -> None:
        headers = {"Content-Type": "application/json"}
        headers |= {k: v.get_secret_value() for k, v in self.config.headers.items()}
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        url = self.config.url.get_secret_value()
        while True:
            body = await self.queue.get()
            for attempt in range(self.config.retries + 1):
                problem = await self._post(session, url, body, headers, timeout)
                if problem is None:
                    self._deliveries.inc()
                    break
                retry, what = problem
                if not retry:
                    self._failed("rejected", f"{what}; not retried")
                    break
                if attempt == self.config.retries:
                    self._failed("gave_up", f"{what}; gave up after {attempt + 1} tries")
                    break
                await asyncio.sleep(min(BACKOFF_MAX_S, 2.0**attempt) * random.uniform(0.8, 1.2))

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout: aiohttp.ClientTimeout,
    ) -> tuple[bool, str] | None:
        """None when delivered; else (whether to retry, what happened)."""
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as r:
                await r.read()
                if 200 <= r.status < 300:
                    return None
                return (r.status >= 500 or r.status in RETRY_STATUS), f"HTTP {r.status}"
        except TimeoutError:
            return True, f"no answer within {self.config.timeout_s:g} s"
        except aiohttp.ClientError as e:
            return True, type(e).__name__

    def _failed(self, reason: str, what: str) -> None:
        self.metrics.webhook_failures.labels(webhook=self.name, reason=reason).inc()
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_REPEAT_S) >= LOG_REPEAT_S:
            self._logged[reason] = now
            log.warning("webhook %s (%s): %s", self.name, self.shown, what)


class Webhooks:
    """Every configured webhook. ``async with Webhooks(...)`` starts the senders; :meth:`publish` from the loop."""

    def __init__(self, hooks: list[tuple[str, WebhookConfig]], metrics: Metrics) -> None:
        self.hooks = [Webhook(name, config, metrics) for name, config in hooks]
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []

    def publish(self, event: Event) -> None:
        now = time.monotonic()
        wanted = [hook for hook in self.hooks if hook.wants(event, now)]
        if wanted:
            body = json.dumps(event.payload(time.time())).encode()
            for hook in wanted:
                hook.offer(body)

    async def __aenter__(self) -> Webhooks:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(h.run(self._session), name=f"webhook-{h.name}") for h in self.hooks]
        for hook in self.hooks:
            log.info("webhook %s: %s", hook.name, hook.shown)
        return self

    async def __aexit__(self, *exc: object) -> None:
        deadline = time.monotonic() + STOP_S
        while any(h.queue.qsize() for h in self.hooks) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
