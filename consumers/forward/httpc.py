"""A small HTTP/1.1 client on asyncio streams: keep-alive, TLS, timeouts.

Enough for POSTing JSON to a webhook or `_bulk` and reading the answer;
stdlib only, so the forwarder adds no HTTP dependency. At most `size`
connections are open at once (the sink's concurrency).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass

from .sink import Permanent, Transient

_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def text(self, limit: int = 2000) -> str:
        text = self.body.decode("utf-8", "replace").strip()
        return text if len(text) <= limit else text[:limit] + "..."

    def raise_for_status(self) -> None:
        """2xx passes; 408, 429 and 5xx are worth retrying; other codes are final."""
        if 200 <= self.status < 300:
            return
        answer = f"HTTP {self.status}: {self.text()}"
        if self.status in (408, 429) or self.status >= 500:
            raise Transient(answer, retry_after=self.retry_after())
        raise Permanent(answer)

    def retry_after(self) -> float | None:
        try:
            return float(self.headers.get("retry-after", ""))
        except ValueError:
            return None


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class HttpClient:
    def __init__(
        self, host: str, port: int, *, ssl_context: ssl.SSLContext | None, size: int,
        timeout: float, headers: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.host, self.port, self.ssl = host, port, ssl_context
        self.timeout = timeout
        self.headers = {"Host": f"{host}:{port}", "User-Agent": "snoopbus-forward"}
        self.headers.update(headers or {})
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(size)

    async def post(self, path: str, body: bytes, content_type: str) -> Response:
        async with self._slots:
            try:
                return await asyncio.wait_for(self._post(path, body, content_type), self.timeout)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                raise Transient(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
            except TimeoutError:
                raise Transient(f"no answer within {self.timeout:g}s") from None

    async def _post(self, path: str, body: bytes, content_type: str) -> Response:
        reader, writer = await self._connection()
        try:
            head = [f"POST {path} HTTP/1.1"]
            fields = {**self.headers, "Content-Type": content_type,
                      "Content-Length": str(len(body))}  # fmt: skip
            head += [f"{k}: {v}" for k, v in fields.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            response, keep = await _read_response(reader)
        except BaseException:
            writer.close()
            raise
        if keep:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return response

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=2**20)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    status_line = (await reader.readuntil(b"\r\n")).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP response: {status_line.strip()[:80]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
            pass
        body = b"".join(chunks)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > _MAX_BODY:
            raise ValueError(f"answer of {length} bytes is too large")
        body = await reader.readexactly(length)
    else:
        body = await reader.read(_MAX_BODY)
        return Response(status, headers, body), False
    keep = headers.get("connection", "").lower() != "close"
    return Response(status, headers, body), keep
