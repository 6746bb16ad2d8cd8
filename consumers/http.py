"""The consumers' one HTTP client: aiohttp, kept-alive connections, TLS, proxies.

The forwarder's HTTP sinks (forward/) and the alert consumer's webhook output
(alert/outputs.py) both POST through `HttpClient`.

aiohttp, not httpx: for our bulk POSTs (a few hundred KiB, 4 in flight)
aiohttp spent 0.26 ms of CPU per request and httpx 1.6 ms, 6x more
(`python -m tests.bench.http_clients`): at 500 documents a request that is
0.5 us against 3.2 us of every event's budget.

What a receiver cannot make us do:

- wait for ever: one `timeout` covers connecting, sending and reading the answer;
- read without end: at most `max_answer` bytes of an answer are read (a longer
  one, chunked or not, is cut and its connection closed), compressed answers
  are not asked for nor inflated, header lines and counts are capped by
  aiohttp (8190 bytes, 128 headers);
- follow it elsewhere: no redirects (a 3xx is an answer like any other), no cookies.

Proxies: `proxy` as given (the sink's `proxy=` option), else HTTPS_PROXY /
HTTP_PROXY from the environment with NO_PROXY honoured (`proxy_from_env`).

A failure is `Transient` (worth retrying: no answer, 408, 429, 5xx, with the
receiver's Retry-After) or `Permanent` (the same request gets the same answer).
"""

from __future__ import annotations

import base64
import ssl
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import aiohttp

MAX_ANSWER = 8 * 1024 * 1024  # a _bulk answer for a few thousand documents fits


class Transient(Exception):
    """Not accepted now; may be later. `retry_after` is the receiver's hint, seconds."""

    def __init__(self, answer: str, retry_after: float | None = None) -> None:
        super().__init__(answer)
        self.answer = answer
        self.retry_after = retry_after


class Permanent(Exception):
    """Refused for good: sending the same thing again gives the same answer."""

    def __init__(self, answer: str) -> None:
        super().__init__(answer)
        self.answer = answer


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes
    cut: bool = False  # the answer was longer than the client reads

    def text(self, limit: int = 2000) -> str:
        text = self.body[: limit * 4].decode("utf-8", "replace").strip()
        return text if len(text) <= limit and not self.cut else text[:limit] + "..."

    def raise_for_status(self, transient: frozenset[int] | None = None) -> None:
        """2xx passes; 408, 429 and 5xx (or the given `transient` codes) are worth
        retrying; other codes are final."""
        if 200 <= self.status < 300:
            return
        answer = f"HTTP {self.status}: {self.text()}"
        retry = self.status in transient if transient is not None else (
            self.status in (408, 429) or self.status >= 500
        )  # fmt: skip
        if retry:
            raise Transient(answer, retry_after=self.retry_after())
        raise Permanent(answer)

    def retry_after(self, now: float | None = None) -> float | None:
        return retry_after(self.headers.get("retry-after"), now)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in either form: delta-seconds (`120`) or an HTTP-date
    (`Wed, 21 Oct 2015 07:28:00 GMT`), as seconds from `now` (never < 0)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)  # not the RFC's form, but unambiguous
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP-date is always GMT; anything else is not one
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def proxy_from_env(scheme: str, host: str, env: Mapping[str, str]) -> str | None:
    """The proxy the environment gives for `scheme://host` (curl's rules:
    lower-case names first; NO_PROXY lists hosts, domains, `*`)."""
    def get(name: str) -> str | None:
        return env.get(name.lower()) or env.get(name.upper()) or None

    proxy = get(f"{scheme}_proxy")
    if proxy is None:
        return None
    no_proxy = get("no_proxy")
    # Undocumented, so typeshed leaves it out; urllib's own NO_PROXY matching.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in stubs
    if no_proxy and bypass(host, {"no": no_proxy}):
        return None
    return proxy


class HttpClient:
    """POSTs to one origin; at most `size` connections, kept alive between requests."""

    def __init__(
        self, base_url: str, *, ssl_context: ssl.SSLContext | None, size: int, timeout: float,
        headers: Mapping[str, str] | None = None, proxy: str | None = None,
        max_answer: int = MAX_ANSWER,
    ) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.ssl = ssl_context
        self.size = size
        self.timeout = timeout
        self.proxy = proxy
        self.max_answer = max_answer
        self.headers = {"User-Agent": "snoopbus-forward", "Accept-Encoding": "identity",
                        **(headers or {})}  # fmt: skip
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.size, ssl=self.ssl or False),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers=self.headers,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,  # the proxy is chosen by us (spec.py), not by aiohttp
            )  # fmt: skip
        return self._session

    async def post(
        self, path: str, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        session = self._open()
        fields = {"Content-Type": content_type, **(headers or {})}
        try:
            async with session.post(
                self.base_url + path, data=body, headers=fields, proxy=self.proxy,
                allow_redirects=False,
            ) as answer:  # fmt: skip
                data, cut = await self._read(answer.content)
                if cut:
                    answer.close()  # the rest is never read: the connection cannot be reused
                return Response(
                    answer.status, {k.lower(): v for k, v in answer.headers.items()}, data, cut
                )
        except TimeoutError:
            raise Transient(f"no answer within {self.timeout:g}s") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise Transient(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None

    async def _read(self, content: aiohttp.StreamReader) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_answer:
            chunk = await content.readany()
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)[: self.max_answer], True

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
