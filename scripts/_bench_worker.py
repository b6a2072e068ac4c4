"""The measured processes of bench.py, one role per invocation.

    server     aiohttp hello world on 127.0.0.1 (optionally freezewatch.install()),
               prints its port, runs until SIGTERM
    micro      100 tasks x ``await asyncio.sleep(0)``; waits for "go" on stdin,
               prints the CPU time of the run
    freezes    injects N freezes (time.sleep on the loop thread), printing each
               block's start time just before it blocks
    capture    grows to N tasks awaiting in a few coroutine shapes, then freezes
               the loop by a blocking read of stdin until bench.py answers
    watchcost  ns per ``async with freezewatch.watch("x")`` vs a trivial async CM

Protocol lines on stdout start with ``@@`` (freezewatch's structlog events
go to stderr, which bench.py keeps in a log file). Child processes of a
benchmark, not part of the package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import time
from typing import Any

from _bench_proc import delta, tree_cpu


def say(*parts: object) -> None:
    print("@@", *parts, flush=True)


def _quiet_structlog() -> None:
    """freezewatch logs through structlog; keep stdout for the protocol."""
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


# -- server ------------------------------------------------------------------
async def start_hello() -> Any:
    """An aiohttp hello-world server on 127.0.0.1 (a free port); its AppRunner."""
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="Hello, world")

    app = web.Application()
    app.router.add_get("/", hello)
    # access_log=None: the leanest handler path, so freezewatch's share is
    # as large as it can be (a conservative overhead figure).
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner


async def _serve(watch: bool, dump_dir: str) -> None:
    runner = await start_hello()
    port = runner.addresses[0][1]
    if watch:
        import freezewatch

        freezewatch.install(dump_dir=dump_dir)  # defaults otherwise
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("port", port)
    await stop.wait()
    await runner.cleanup()


# -- micro -------------------------------------------------------------------
async def _micro(watch: bool, dump_dir: str, total: int, ntasks: int) -> dict[str, float]:
    if watch:
        import freezewatch

        freezewatch.install(dump_dir=dump_dir)
    await asyncio.sleep(0.3)  # the watchdog is up and has ticked (both sides wait alike)

    async def spin(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    per = total // ntasks
    me = os.getpid()
    # CPU of this process and its helpers (freezewatch's sentinel), all threads.
    cpu0, wall0 = tree_cpu(me), time.perf_counter()
    await asyncio.gather(*(spin(per) for _ in range(ntasks)))
    cpu1, wall1 = tree_cpu(me), time.perf_counter()
    if watch:
        freezewatch.uninstall()
    return {"cpu": delta(cpu0, cpu1)[0] / 1e9, "wall": wall1 - wall0,
            "helpers": delta(cpu0, cpu1, only=-me)[0] / 1e9}


# -- freezes (detection latency) ------------------------------------------------
async def _freezes(a: argparse.Namespace) -> None:
    import freezewatch

    # dump_rate_window=0: every injected freeze blocks at the same line and
    # must get its own dump (the default window would rate-limit all but one).
    freezewatch.install(threshold=a.threshold, native=a.native, dump_dir=a.dump_dir,
                        dump_rate_window=0)
    rnd = random.Random(a.seed)
    await asyncio.sleep(0.5)
    for i in range(a.n):
        # A random gap decorrelates the block start from the watchdog's tick.
        await asyncio.sleep(rnd.uniform(a.gap, a.gap + 0.25))
        t_mono, t_wall = time.monotonic(), time.time()
        say("block", i, repr(t_mono), repr(t_wall))
        time.sleep(a.block)  # the injected freeze
    await asyncio.sleep(0.5)
    freezewatch.uninstall()
    say("done")


# -- capture cost --------------------------------------------------------------
async def _leaf_event(ev: asyncio.Event) -> None:
    await ev.wait()


async def _nested_event(ev: asyncio.Event) -> None:
    await _leaf_event(ev)


async def _deep_event(ev: asyncio.Event) -> None:
    await _nested_event(ev)


async def _queue_get(q: asyncio.Queue[int]) -> None:
    await q.get()


async def _future(fut: asyncio.Future[None]) -> None:
    await fut


async def _locked(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def _capture(a: argparse.Namespace) -> None:
    import freezewatch

    freezewatch.install(threshold=a.threshold, native=False, dump_dir=a.dump_dir,
                        dump_rate_window=0)
    loop = asyncio.get_running_loop()
    ev = asyncio.Event()
    q: asyncio.Queue[int] = asyncio.Queue()
    fut: asyncio.Future[None] = loop.create_future()
    lock = asyncio.Lock()
    await lock.acquire()  # held for ever: every _locked task waits on it
    shapes: list[Any] = [
        lambda: _leaf_event(ev), lambda: _nested_event(ev), lambda: _deep_event(ev),
        lambda: _queue_get(q), lambda: _future(fut), lambda: _locked(lock),
    ]
    tasks: list[asyncio.Task[None]] = []
    for size in a.sizes:
        while len(tasks) < size:
            tasks.append(loop.create_task(shapes[len(tasks) % len(shapes)]()))
        for _ in range(3):
            await asyncio.sleep(0)  # every new task has run to its first await
        # Starting 100,000 tasks keeps the loop busy past the threshold (a real
        # freeze): let its dump and its end pass before the measured freezes.
        await asyncio.sleep(3 * a.threshold)
        for _ in range(a.reps):
            await asyncio.to_thread(sys.stdin.readline)  # "next" from bench.py
            t_mono, t_wall = time.monotonic(), time.time()
            say("block", size, repr(t_mono), repr(t_wall))
            # The freeze: a blocking read on the loop thread, until bench.py has
            # seen the dump appear (so capture is never cut short by the block ending).
            sys.stdin.readline()
            say("released", size)
    say("done", len(tasks))
    sys.stdout.flush()
    os._exit(0)  # skip cancelling 100,000 tasks at shutdown


# -- watch() cost ----------------------------------------------------------------
class _Null:
    """The trivial async context manager watch() is compared with."""

    __slots__ = ()

    async def __aenter__(self) -> _Null:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _watchcost(a: argparse.Namespace) -> dict[str, Any]:
    import freezewatch

    freezewatch.install(native=False, dump_dir=a.dump_dir)
    await asyncio.sleep(0.2)
    n = a.n

    async def with_watch() -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            async with freezewatch.watch("x"):
                pass
        return time.perf_counter_ns() - t0

    async def with_null() -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            async with _Null():
                pass
        return time.perf_counter_ns() - t0

    w: list[float] = []
    z: list[float] = []
    for r in range(a.rounds):  # interleaved, order alternating
        pair = (with_watch, with_null) if r % 2 == 0 else (with_null, with_watch)
        for fn in pair:
            ns = await fn() / n
            (w if fn is with_watch else z).append(ns)
    freezewatch.uninstall()
    return {"watch": w, "null": z, "diff": [a - b for a, b in zip(w, z, strict=True)],
            "median_watch": statistics.median(w), "median_null": statistics.median(z)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["server", "micro", "freezes", "capture", "watchcost"])
    ap.add_argument("--watch", action="store_true")
    ap.add_argument("--dump-dir", default="")
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--block", type=float, default=0.75)
    ap.add_argument("--gap", type=float, default=0.3)
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1000])
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    if a.cpu is not None:
        # Before any thread exists: threads inherit the creating thread's
        # affinity, so the watchdog thread runs on the same core.
        os.sched_setaffinity(0, {a.cpu})
    _quiet_structlog()
    if a.role == "server":
        asyncio.run(_serve(a.watch, a.dump_dir))
    elif a.role == "micro":
        sys.stdin.readline()  # "go": all processes of the round start together
        say("result", json.dumps(asyncio.run(_micro(a.watch, a.dump_dir, a.total, a.tasks))))
    elif a.role == "freezes":
        asyncio.run(_freezes(a))
    elif a.role == "capture":
        asyncio.run(_capture(a))
    elif a.role == "watchcost":
        say("result", json.dumps(asyncio.run(_watchcost(a))))


if __name__ == "__main__":
    main()
