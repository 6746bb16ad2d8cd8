"""Benchmark: the forwarder's bulk POSTs through httpx and aiohttp, side by side.

    .venv/bin/python -m tests.bench.http_clients              # 400 posts of 256 KiB, 4 at once
    .venv/bin/python -m tests.bench.http_clients --posts 2000 --size 65536

What the HTTP sinks do: POST a body of a few hundred KiB (a batch of JSON
documents) on kept-alive connections, `--concurrency` requests in flight,
and read a small JSON answer. The receiver is a minimal HTTP/1.1 server in a
separate process (it reads each body and answers at once), so the figures
are the client's. Rounds alternate between the clients (this machine is
shared and its speed drifts); the best round of each is printed, with the
client's CPU time per request, the figure that decides how many events per
second one core can send. A client that is not installed is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

ANSWER = b'{"took":1,"errors":false,"items":[]}'


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            del line
            length = 0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))  # fmt: skip
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


def serve() -> None:
    """Child process: print the port, serve until stdin closes."""

    async def main() -> None:
        server = await asyncio.start_server(_serve, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


@contextlib.contextmanager
def receiver() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.bench.http_clients", "--serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


Post = Callable[[bytes], Awaitable[int]]


@contextlib.asynccontextmanager
async def httpx_client(url: str, concurrency: int):
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10.0, trust_env=False) as client:

        async def post(body: bytes) -> int:
            response = await client.post(url, content=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
            return response.status_code

        yield post


@contextlib.asynccontextmanager
async def aiohttp_client(url: str, concurrency: int):
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(body: bytes) -> int:
            async with session.post(url, data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                await response.content.read(1 << 20)
                return response.status

        yield post


CLIENTS = {"httpx": httpx_client, "aiohttp": aiohttp_client}


async def one_round(
    make: Callable[..., Any], url: str, body: bytes, posts: int, concurrency: int
) -> tuple[float, float]:
    async with make(url, concurrency) as post:
        await post(body)  # connect outside the timing
        queue = iter(range(posts))

        async def worker() -> None:
            for _ in queue:
                assert await post(body) == 200

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - wall, time.process_time() - cpu


def installed(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


async def bench(posts: int, size: int, concurrency: int, rounds: int) -> None:
    body = (b'{"create":{"_index":"logs-snoopbus.events-default","_id":"x"}}\n' * (size // 64))
    names = [n for n in CLIENTS if installed(n)]
    best: dict[str, tuple[float, float]] = {}
    with receiver() as port:
        url = f"http://127.0.0.1:{port}/_bulk"
        for _ in range(rounds):
            for name in names:
                wall, cpu = await one_round(CLIENTS[name], url, body, posts, concurrency)
                print(f"  {name:<8} {posts / wall:8,.0f} posts/s  "
                      f"{cpu / posts * 1e3:6.3f} ms CPU/post", file=sys.stderr)  # fmt: skip
                old = best.get(name)
                best[name] = (min(wall, old[0]) if old else wall, min(cpu, old[1]) if old else cpu)
    mib = len(body) / 2**20
    print(f"\nhttp clients: {posts} POSTs of {len(body):,} bytes, {concurrency} in flight, "
          f"best of {rounds}\n")  # fmt: skip
    print(f"{'client':<8} {'posts/s':>9} {'MiB/s':>8} {'CPU ms/post':>12}")
    for name, (wall, cpu) in best.items():
        print(f"{name:<8} {posts / wall:>9,.0f} {posts * mib / wall:>8,.1f} "
              f"{cpu / posts * 1e3:>12.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--size", type=int, default=256 * 1024, help="body bytes")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    asyncio.run(bench(args.posts, args.size, args.concurrency, args.rounds))


if __name__ == "__main__":
    main()
