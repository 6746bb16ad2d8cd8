"""`webhook+http(s)://host/path` (and `ocsf+http(s)://`): a JSON array per batch.

POST body: a JSON array of documents (snoopbus JSON, or OCSF for ocsf+http).
2xx accepts the whole batch; 408/429/5xx and connection errors are retried
with back-off (Retry-After honoured up to the cap, in seconds or as a
date); any other status refuses the batch for good and its messages are
dead-lettered with the answer. At least once: a batch whose answer is lost
is sent again. Each document carries the event id for the receiver to dedup on.
"""

from __future__ import annotations

from ..http import HttpClient, basic_auth
from .jsonl import json_formatter
from .sink import Item, Rendered, Sent, Sink
from .spec import SinkSpec
from .text import dumps


class WebhookSink(Sink):
    scheme = "webhook+http"
    delivery = "at least once"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.format = json_formatter(spec)
        headers = {}
        if spec.username is not None:
            headers["Authorization"] = basic_auth(spec.username, spec.password or "")
        self.http = HttpClient(
            spec.base_url, ssl_context=spec.ssl_context(), size=spec.concurrency,
            timeout=spec.timeout, headers=headers, proxy=spec.proxy,
        )  # fmt: skip

    def render(self, item: Item) -> bytes:
        return dumps(self.format(item))

    async def send(self, batch: list[Rendered]) -> Sent:
        body = b"[" + b",".join(doc for _, doc in batch) + b"]"
        response = await self.http.post(self.spec.path or "/", body, "application/json")
        response.raise_for_status()
        return Sent()

    async def close(self) -> None:
        await self.http.close()
