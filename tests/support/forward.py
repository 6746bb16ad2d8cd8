"""What the forward tests share: an asyncio HTTP server that speaks enough
`_bulk`, webhook, OTLP and HEC, a running forwarder, reading OTLP records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nats.aio.client import Client

from snoopbus.consumers import Runtime
from snoopbus.consumers.forward import Forwarder, parse_spec
from snoopbus.consumers.forward.worker import SINK_SETTINGS

QUICK_PARENT = replace(Forwarder.settings, fetch_timeout=0.2)
QUICK_SINKS = replace(SINK_SETTINGS, fetch_timeout=0.2)


@contextlib.asynccontextmanager
async def forwarding(
    nc: Client, *urls: str, env: dict[str, str] | None = None
) -> AsyncIterator[Forwarder]:
    """A forwarder running in this process on the test's connection."""
    specs = [parse_spec(u, env=env or {}) for u in urls]
    # Short fetch timeouts: a stop waits for the fetch in progress.
    fwd = Forwarder(specs, settings=QUICK_PARENT, sink_settings=QUICK_SINKS)
    runtime = Runtime(fwd, nc=nc)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.wait_for(fwd.ready(), 20)
        yield fwd
    finally:
        runtime.stop()
        await asyncio.wait_for(task, 30)


# -- reading what an OTLP receiver got -------------------------------------


def value(v: Any) -> Any:
    """An OTLP AnyValue as Python."""
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind)


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


def records(rx: Any) -> list[tuple[dict[str, Any], Any]]:
    """(resource attributes, log record) for everything received."""
    return [(attrs(rl.resource.attributes), rec) for req in rx.otlp for rl in req.resource_logs
            for sl in rl.scope_logs for rec in sl.log_records]  # fmt: skip


# -- the HTTP receiver ------------------------------------------------------


@dataclass
class Request:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpReceiver:
    """Answers POSTs; `script` gives the statuses of the next requests (then 200).

    `_bulk` requests are applied to `docs` ((index, _id) -> doc), with `create`
    semantics: an existing _id answers 409 for that item. `doc_errors(doc)` may
    return an (status, error type) for one document.
    """

    script: list[int] = field(default_factory=list)
    lost_answers: int = 0  # _bulk: apply the next N requests, then answer 502 anyway
    doc_errors: Callable[[dict[str, Any]], tuple[int, str] | None] = lambda doc: None
    requests: list[Request] = field(default_factory=list)
    docs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    batches: list[Any] = field(default_factory=list)  # webhook bodies, parsed
    port: int = 0
    ssl: Any = None  # an ssl.SSLContext to serve HTTPS
    retry_after: str | None = None  # sent with scripted 429/503 answers
    otlp: list[Any] = field(default_factory=list)  # ExportLogsServiceRequest per POST, decoded
    hec: list[dict[str, Any]] = field(default_factory=list)  # HEC event objects, in order
    hec_invalid: dict[str, int] = field(default_factory=dict)  # event id -> HEC code to refuse
    partial: int = 0  # OTLP: answer partial_success with this many rejected records
    answer_bytes: int = 0  # send this many extra bytes of answer body (chunked), to be cut
    _server: asyncio.base_events.Server | None = None
    _clients: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):  # 3.11 has no Server.close_clients
                writer.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def webhook_items(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(time.monotonic(), method, path, headers, body))
                status, answer = self._answer(path, body)
                payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                extra = ""
                if self.retry_after is not None and status in (429, 503):
                    extra = f"Retry-After: {self.retry_after}\r\n"
                if self.answer_bytes:  # an endless-looking answer: chunked, never a length
                    writer.write(f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n"
                                 "\r\n".encode())  # fmt: skip
                    chunk = b"x" * 65536
                    for _ in range(self.answer_bytes // len(chunk)):
                        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    continue
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()

    def _answer(self, path: str, body: bytes) -> tuple[int, Any]:
        if self.script:
            status = self.script.pop(0)
            if status != 200:
                return status, {"error": {"type": "scripted", "reason": f"scripted {status}"}}
        if path.split("?")[0] == "/v1/logs":
            return self._otlp(body)
        if path.split("?")[0] == "/services/collector/event":
            return self._hec(body)
        if path.split("?")[0].endswith("/_bulk"):
            answer = self._bulk(path, body)
            if self.lost_answers:
                self.lost_answers -= 1
                return 502, {"error": "answer lost on the way"}
            return 200, answer
        self.batches.append(json.loads(body))
        return 200, {"ok": True}

    def _otlp(self, body: bytes) -> tuple[int, bytes]:
        """Decoded with the official definitions; answered as the OTLP spec says."""
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        self.otlp.append(request)
        answer = ExportLogsServiceResponse()
        if self.partial:
            answer.partial_success.rejected_log_records = self.partial
            answer.partial_success.error_message = "over quota"
        return 200, answer.SerializeToString()

    def _hec(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """HEC's documented form: JSON event objects one after another; an
        event the receiver refuses stops the batch with its number."""
        decoder, text, at, events = json.JSONDecoder(), body.decode("utf-8"), 0, []
        while at < len(text):
            event, end = decoder.raw_decode(text, at)
            events.append(event)
            at = end
            while at < len(text) and text[at] in " \r\n\t":
                at += 1
        for number, event in enumerate(events):
            if not isinstance(event.get("event"), dict) or "time" not in event:
                return 400, {"text": "Invalid data format", "code": 6,
                             "invalid-event-number": number}  # fmt: skip
            doc = event["event"]
            refuse = self.hec_invalid.pop(str(doc.get("id") or doc.get("rule", {}).get("id")), 0)
            if refuse:
                self.hec.extend(events[:number])
                return 400, {"text": "Invalid data format", "code": refuse,
                             "invalid-event-number": number}  # fmt: skip
        self.hec.extend(events)
        return 200, {"text": "Success", "code": 0}

    def _bulk(self, path: str, body: bytes) -> dict[str, Any]:
        lines = body.decode().splitlines()
        default_index = path.split("?")[0].removesuffix("/_bulk").strip("/") or None
        items, errors = [], False
        for action_line, doc_line in zip(lines[::2], lines[1::2], strict=True):
            (op, meta), = json.loads(action_line).items()
            doc = json.loads(doc_line)
            index, doc_id = meta.get("_index", default_index), meta["_id"]
            result: dict[str, Any] = {"_index": index, "_id": doc_id}
            bad = self.doc_errors(doc)
            if bad is not None:
                result["status"] = bad[0]
                result["error"] = {"type": bad[1], "reason": f"{bad[1]} for {doc_id}"}
                errors = True
            elif (index, doc_id) in self.docs and op == "create":
                result["status"] = 409
                result["error"] = {"type": "version_conflict_engine_exception",
                                   "reason": f"[{doc_id}]: version conflict"}  # fmt: skip
                errors = True
            else:
                self.docs[(index, doc_id)] = doc
                result["status"] = 201
            items.append({op: result})
        return {"took": 1, "errors": errors, "items": items}


@contextlib.asynccontextmanager
async def http_receiver(**kwargs: Any) -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver(**kwargs)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
