"""Per-unit cost of freezewatch.watch() and of the ASGI middleware, nothing wrong.

Prints nanoseconds per enter+exit for: an empty async context manager (the
floor any ``async with`` pays), ``watch()`` on a watched loop, ``watch()``
where no loop is watched (the no-op path), the decorator form, and the ASGI
middleware around a trivial app (per request, minus the bare app).

    .venv/bin/python scripts/watch_cost.py [ITERATIONS]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import freezewatch
from freezewatch.asgi import FreezewatchMiddleware


class _Empty:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _best_ns(body: Callable[[int], Awaitable[None]], n: int, rounds: int = 5) -> float:
    """Best of ``rounds`` runs in ns per iteration: the least disturbed by other load."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        await body(n)
        out.append((time.perf_counter_ns() - t0) / n)
    return min(out)


async def _empty(n: int) -> None:
    for _ in range(n):
        async with _Empty():
            pass


async def _watch(n: int) -> None:
    watch = freezewatch.watch
    for _ in range(n):
        async with watch("unit"):
            pass


@freezewatch.watch("decorated")
async def _decorated() -> None:
    return None


async def _plain() -> None:
    return None


async def _call_decorated(n: int) -> None:
    for _ in range(n):
        await _decorated()


async def _call_plain(n: int) -> None:
    for _ in range(n):
        await _plain()


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    return None


def _asgi(app: Any) -> Callable[[int], Awaitable[None]]:
    scope = {"type": "http", "method": "GET", "path": "/items/42",
             "headers": [(b"host", b"x"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
                         (b"x-request-id", b"abc-123")]}

    async def body(n: int) -> None:
        for _ in range(n):
            await app(scope, None, None)

    return body


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        unwatched = await _best_ns(_watch, n)
        # The timed loops never yield: a normal threshold would (rightly) report them.
        freezewatch.install(dump_dir=d, native=False, threshold=600, interval=1)
        empty = await _best_ns(_empty, n)
        watched = await _best_ns(_watch, n)
        plain = await _best_ns(_call_plain, n)
        decorated = await _best_ns(_call_decorated, n)
        bare = await _best_ns(_asgi(_asgi_app), n)
        mw = FreezewatchMiddleware(_asgi_app, dump_dir=d, native=False, threshold=600)
        wrapped = await _best_ns(_asgi(mw), n)
        freezewatch.uninstall()
    print(f"Python {sys.version.split()[0]}, {n:,} iterations, best of 5 rounds")
    print(f"  empty async with (floor)        {empty:7.0f} ns")
    print(f"  async with watch(), watched     {watched:7.0f} ns  (+{watched - empty:.0f} ns)")
    print(f"  async with watch(), not watched {unwatched:7.0f} ns  (+{unwatched - empty:.0f} ns)")
    print(f"  @watch decorated call           {decorated:7.0f} ns  (+{decorated - plain:.0f} ns "
          f"over a plain await)")
    print(f"  ASGI middleware per request     {wrapped:7.0f} ns  (+{wrapped - bare:.0f} ns "
          f"over the bare app)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
