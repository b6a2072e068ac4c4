"""Load generator for the overhead benchmark (a child process of bench.py).

A raw asyncio HTTP/1.1 keep-alive client: ``--conns`` connections, each
sending ``GET /`` again as soon as the previous response is complete (no
pipelining). The number of responses received is stored as a little-endian
int64 in the 8-byte file ``--counter``, which bench.py maps and reads at the
start and end of each measuring window; one aligned 8-byte store per response
costs this process, never the server under test.

It runs until killed. Deliberately minimal (Protocol, no streams, no aiohttp)
so that the generator is cheap and the server is the bottleneck.

    python scripts/_bench_load.py --port 8080 --conns 4 --counter /tmp/x [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import struct

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_CL = b"content-length:"


class _Counter:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._mm = mmap.mmap(fd, 8)
        finally:
            os.close(fd)
        self.n = 0

    def add(self) -> None:
        self.n += 1
        struct.pack_into("<q", self._mm, 0, self.n)


class _Client(asyncio.Protocol):
    """One keep-alive connection: send, parse one response, count, send again."""

    def __init__(self, counter: _Counter, lost: asyncio.Future[None]) -> None:
        self._counter = counter
        self._lost = lost
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            i = head.find(_CL)
            if i < 0:
                raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
            j = head.find(b"\r\n", i)
            length = int(head[i + len(_CL): j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(buf) < total:
                return
            del buf[:total]
            self._counter.add()
            assert self._transport is not None
            self._transport.write(REQUEST)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)


async def _main(port: int, conns: int, counter: _Counter) -> None:
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()
    for _ in range(conns):
        await loop.create_connection(lambda: _Client(counter, lost), "127.0.0.1", port)
    await lost  # a server went away: the round is over


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--counter", required=True)
    ap.add_argument("--cpu", type=int, default=None)
    a = ap.parse_args()
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    asyncio.run(_main(a.port, a.conns, _Counter(a.counter)))


if __name__ == "__main__":
    main()
