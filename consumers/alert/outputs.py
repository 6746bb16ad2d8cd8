"""Where alerts go: NATS always; stdout and a webhook when asked.

Each output has a minimum level. NATS is part of the delivery contract: its
failure fails the batch, so the events are redelivered (the alert id is the
`Nats-Msg-Id`, so a re-sent alert is dropped by the stream's dedup window).
The optional outputs never fail the batch: the webhook works from its own
bounded queue with retries and counts what it had to give up on.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from nats.js import JetStreamContext

from snoopbus.consumers.lines import format_alert, to_json
from snoopbus.proto import alert_subject, encode_map, host_token, level_rank
from snoopbus.proto.msgid import ID_HEADER, derived_id

log = logging.getLogger(__name__)


class Output:
    name = "output"

    def __init__(self, min_level: str = "informational") -> None:
        self.min_rank = level_rank(min_level)
        self.sent = 0

    def wants(self, alert: dict[str, Any]) -> bool:
        return level_rank(alert["level"]) >= self.min_rank

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class NatsOutput(Output):
    """JetStream publish on alert_subject(host, level), each awaited to its ack."""

    name = "nats"

    def __init__(self, js: JetStreamContext, timeout: float = 10.0) -> None:
        super().__init__()
        self.js = js
        self.timeout = timeout

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        pending = [
            self.js.publish(
                alert_subject(alert["host"], alert["level"]),
                encode_map(alert),
                headers={ID_HEADER: derived_id(host_token(alert["host"]), "alert", alert["id"])},
                timeout=self.timeout,
            )
            for alert in alerts
        ]
        await asyncio.gather(*pending)  # raises the first failure: the batch is retried
        self.sent += len(alerts)


class StdoutOutput(Output):
    name = "stdout"

    def __init__(self, min_level: str = "informational", as_json: bool = False,
                 stream: TextIO | None = None) -> None:  # fmt: skip
        super().__init__(min_level)
        self.as_json = as_json
        self.stream = stream

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        out = self.stream or sys.stdout
        for alert in alerts:
            out.write((to_json(alert) if self.as_json else format_alert(alert)) + "\n")
        out.flush()
        self.sent += len(alerts)


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    retries: int = 3  # attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    timeout: float = 5.0
    queue: int = 1000  # alerts waiting at most; past it new ones are dropped and counted
    min_level: str = "informational"


class WebhookOutput(Output):
    """POSTs each alert as JSON; retries connection errors, 5xx and 429."""

    name = "webhook"

    def __init__(self, config: WebhookConfig) -> None:
        super().__init__(config.min_level)
        self.config = config
        self.failed = 0  # given up after the retries
        self.dropped = 0  # queue full
        self.attempts = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(config.queue)
        self._worker: asyncio.Task[None] | None = None

    async def send(self, alerts: Sequence[dict[str, Any]]) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        for alert in alerts:
            try:
                self._queue.put_nowait(alert)
            except asyncio.QueueFull:
                self.dropped += 1
                log.error("webhook %s: queue full, alert %s dropped", self.config.url, alert["id"])

    async def close(self) -> None:
        """Deliver what is queued (bounded by the retries), then stop."""
        if self._worker is not None:
            await self._queue.join()
            self._worker.cancel()

    async def _run(self) -> None:
        while True:
            alert = await self._queue.get()
            try:
                await self._deliver(alert)
            finally:
                self._queue.task_done()

    async def _deliver(self, alert: dict[str, Any]) -> None:
        body = to_json(alert).encode()
        delay = self.config.backoff
        for attempt in range(self.config.retries + 1):
            self.attempts += 1
            error, retryable = await asyncio.to_thread(self._post, body)
            if error is None:
                self.sent += 1
                return
            if not retryable:
                self.failed += 1
                log.error("webhook %s: %s; alert %s not retried",
                          self.config.url, error, alert["id"])  # fmt: skip
                return
            if attempt < self.config.retries:
                log.warning("webhook %s: %s; retry in %.1fs", self.config.url, error, delay)
                await asyncio.sleep(delay)
                delay *= 2
            else:
                self.failed += 1
                log.error("webhook %s: %s; alert %s given up after %d attempts",
                          self.config.url, error, alert["id"], attempt + 1)  # fmt: skip

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """(None, _) on success, else (why, worth retrying). Runs in a worker
        thread: urllib blocks."""
        request = urllib.request.Request(
            self.config.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "snoopbus-alert"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                response.read()
            return None, False
        except urllib.error.HTTPError as exc:
            # 4xx other than 429: the receiver refuses this alert; retrying cannot help.
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code == 429
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}", True


async def fan_out(outputs: Sequence[Output], alerts: Sequence[dict[str, Any]]) -> None:
    """Send to every output that wants them; only a NATS failure propagates."""
    for output in outputs:
        chosen = [a for a in alerts if output.wants(a)]
        if not chosen:
            continue
        if isinstance(output, NatsOutput):
            await output.send(chosen)
            continue
        try:
            await output.send(chosen)
        except Exception as exc:  # one optional sink must not take the others down
            log.error("alert output %s failed: %s", output.name, exc)


__all__ = ["NatsOutput", "Output", "StdoutOutput", "WebhookConfig", "WebhookOutput", "fan_out"]
