"""`webhook+http(s)://host/path` (and `ocsf+http(s)://`): a JSON array per batch.

POST body: a JSON array of documents (snoopbus JSON, or OCSF for ocsf+http).
2xx accepts the whole batch; 408/429/5xx and connection errors are retried
with back-off (Retry-After honoured up to the cap); any other status refuses
the batch for good and its messages are dead-lettered with the answer.
At least once: a batch whose answer is lost is sent again. Each document
carries the event id for the receiver to dedup on.
"""

from __future__ import annotations

from .httpc import HttpClient, basic_auth
from .jsonl import dumps, json_formatter
from .sink import Item, Sent, Sink
from .spec import SinkSpec


class WebhookSink(Sink):
    scheme = "webhook+http"
    delivery = "at least once"

    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.render = json_formatter(spec)
        headers = {}
        if spec.username is not None:
            headers["Authorization"] = basic_auth(spec.username, spec.password or "")
        assert spec.port is not None
        self.http = HttpClient(
            spec.host, spec.port, ssl_context=spec.ssl_context(), size=spec.concurrency,
            timeout=spec.timeout, headers=headers,
        )  # fmt: skip

    async def send(self, items: list[Item]) -> Sent:
        from .sink import render_each

        rendered, refused = render_each(items, self.render)
        if rendered:
            body = b"[" + b",".join(dumps(doc) for _, doc in rendered) + b"]"
            response = await self.http.post(self.spec.path or "/", body, "application/json")
            response.raise_for_status()
        return Sent(rejected=refused)

    async def close(self) -> None:
        await self.http.close()
