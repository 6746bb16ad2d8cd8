"""`splunk+http(s)://host:8088[/services/collector/event]`: Splunk HTTP Event Collector.

POST body: one HEC event object per item, each on its own line:

    {"time": 1763776800.123, "host": "web-1", "source": "snoopbus",
     "sourcetype": "snoopbus:event", "index": "...", "event": {...}}

`event` is snoopbus's own JSON form (as `jsonl`: the contract's keys at the
top, any other key under `extra`; alerts `{type: alert, rule, event}`);
`sourcetype` is `snoopbus:event` or `snoopbus:alert` unless `sourcetype=` is
given, `source` is `snoopbus` unless `source=` is; `index=` is sent when
given (else the token's default index). `time` is the event's time in
seconds with milliseconds, `host` the event's host. The token is read from
$SNOOPBUS_SPLUNK_TOKEN (`token_env=VAR` names another variable) and sent as
`Authorization: Splunk <token>`; the sink does not start without one.
Every request carries `X-Splunk-Request-Channel` (one UUID per sink), which
HEC requires when the token has indexer acknowledgement on.

Answers (HEC's documented status codes):

- 2xx: the batch is taken;
- 400 with `invalid-event-number` N: event N is refused for good (dead
  letters, with HEC's text); the others are sent again (HEC may have
  indexed those before N: at least once);
- other 400s, 404, 413: the batch is refused for good;
- 401 and 403 (no token, invalid or disabled token): retried with back-off,
  not dead-lettered: the fix is the token, and the backlog waits in the
  stream meanwhile (the worker logs HEC's answer);
- 429, 5xx (503 "server is busy") and connection errors: retried, with
  Retry-After honoured.

At least once: each event's `id` (and an alert's) is in `event` to dedup on.
With indexer acknowledgement on, a 200 means received, not yet indexed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ..http import HttpClient
from .jsonl import to_native
from .sink import Item, Permanent, Rendered, Sent, Sink
from .spec import SinkSpec
from .text import display, dumps

TRANSIENT = frozenset({401, 403, 408, 429})
SERVER_ERRORS = frozenset(range(500, 600))


class HecSink(Sink):
    scheme = "splunk+http"
    delivery = "at least once (event.id)"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.path = spec.path or "/services/collector/event"
        self.common: dict[str, Any] = {"source": spec.options.get("source", "snoopbus")}
        if spec.options.get("index"):
            self.common["index"] = spec.options["index"]
        self.sourcetype = spec.options.get("sourcetype")
        headers = {"Authorization": f"Splunk {spec.token}",
                   "X-Splunk-Request-Channel": str(uuid.uuid4())}  # fmt: skip
        self.http = HttpClient(
            spec.base_url, ssl_context=spec.ssl_context(), size=spec.concurrency,
            timeout=spec.timeout, headers=headers, proxy=spec.proxy,
        )  # fmt: skip

    def render(self, item: Item) -> bytes:
        if item.kind == "alert":
            ts, host = item.data.ts, item.data.host
        else:
            ts, host = item.data.get("ts"), item.data.get("host", "")
        hec: dict[str, Any] = {
            "host": display(host), **self.common,
            "sourcetype": self.sourcetype or f"snoopbus:{item.kind}",
            "event": to_native(item),
        }
        if isinstance(ts, int) and ts >= 0:
            hec["time"] = ts // 1_000_000 / 1000  # seconds, to the millisecond
        return dumps(hec) + b"\n"

    async def send(self, batch: list[Rendered]) -> Sent:
        body = b"".join(line for _, line in batch)
        response = await self.http.post(self.path, body, "application/json")
        if response.status == 400:
            bad = _invalid_event(response.body, len(batch))
            if bad is not None:
                why = f"HTTP 400: {response.text(500)}"
                return Sent(rejected={bad: why},
                            retry={i: f"sent with refused event {bad}" for i in range(len(batch))
                                   if i != bad})  # fmt: skip
            raise Permanent(f"HTTP 400: {response.text()}")
        response.raise_for_status(transient=TRANSIENT | SERVER_ERRORS)
        return Sent()

    async def close(self) -> None:
        await self.http.close()


def _invalid_event(body: bytes, count: int) -> int | None:
    try:
        number = json.loads(body).get("invalid-event-number")
    except (ValueError, AttributeError):
        return None
    return number if isinstance(number, int) and 0 <= number < count else None
