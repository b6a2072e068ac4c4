"""The measured processes of bench.py, one role per invocation.

    server     a hello-world server on 127.0.0.1 (aiohttp, or a Starlette app
               under uvicorn: ``--app asgi``; asyncio or uvloop: ``--loop``),
               watched as ``--variant`` says (VARIANTS: freezewatch part by
               part, or the reference heartbeat), prints its port, runs until
               SIGTERM
    micro      100 tasks x ``await asyncio.sleep(0)``; waits for "go" on stdin,
               prints the CPU time of the run
    freezes    injects N freezes (time.sleep on the loop thread), printing each
               block's start time just before it blocks
    capture    grows to N tasks awaiting in a few coroutine shapes, then freezes
               the loop by a blocking read of stdin until bench.py answers
    watchcost  ns per ``async with freezewatch.watch("x")`` vs a trivial async CM,
               and the decorator, the unwatched no-op path, the ASGI middleware
    waits      ms per wait-age sample (the watchdog's WaitSampler) at N tasks

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
import socket
import statistics
import sys
import threading
import time
import traceback
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


# What a server runs, cumulatively from "hb" to "metrics" (bench.py's
# component ladder). Settings are public (install() keywords) except the two
# parts without one, switched off through the documented internal seam
# freezewatch._state.parts. "ref" is not freezewatch: the reference heartbeat.
_ALL_OFF = {"sentinel": False, "faulthandler": False, "native": False}
VARIANTS: dict[str, tuple[dict[str, bool], dict[str, Any]] | None] = {
    "plain": None,
    "ref": None,
    "import": None,  # the reference heartbeat, with freezewatch imported, not installed
    "hb": ({"selector": False, "gc_hook": False}, _ALL_OFF),
    "selector": ({"selector": True, "gc_hook": False}, _ALL_OFF),
    "gc": ({"selector": True, "gc_hook": True}, _ALL_OFF),
    # faulthandler needs the sentinel (it signals the loop thread): sentinel first.
    "sentinel": ({"selector": True, "gc_hook": True}, {**_ALL_OFF, "sentinel": True}),
    "faulthandler": ({"selector": True, "gc_hook": True},
                     {**_ALL_OFF, "sentinel": True, "faulthandler": True}),
    "metrics": ({"selector": True, "gc_hook": True},
                {"native": False, "metrics_port": -1}),  # -1: a free port, found here
    "defaults": ({"selector": True, "gc_hook": True}, {}),
}


def reference_heartbeat(loop: asyncio.AbstractEventLoop, interval: float = 0.1,
                        threshold: float = 1.0) -> threading.Thread:
    """The reference of issue 12: what a user would write in 40 lines.

    A thread sends ``call_soon_threadsafe`` every ``interval`` and waits for
    the answer on a threading.Event; an answer later than ``threshold``
    prints the loop thread's stack. Nothing else (no parking, no sentinel).
    """
    loop_thread = threading.get_ident()
    answered = threading.Event()
    pause = threading.Event()  # never set: Event.wait as the sleep

    def run() -> None:
        while True:
            answered.clear()
            loop.call_soon_threadsafe(answered.set)
            if not answered.wait(threshold):
                frame = sys._current_frames().get(loop_thread)
                print("loop frozen:", file=sys.stderr)
                traceback.print_stack(frame, file=sys.stderr)
                answered.wait()
            pause.wait(interval)

    t = threading.Thread(target=run, name="reference-heartbeat", daemon=True)
    t.start()
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def watch_as(variant: str, dump_dir: str, **more: Any) -> None:
    """Watch the running loop as ``variant`` says (before the server answers)."""
    if variant == "plain":
        return
    if variant in ("ref", "import"):
        if variant == "import":  # what install() would import, without installing
            import freezewatch._install
            import freezewatch._sinks.metrics
        reference_heartbeat(asyncio.get_running_loop())
        return
    spec = VARIANTS[variant]
    assert spec is not None
    parts, settings = spec
    import freezewatch
    from freezewatch import _state

    _state.parts.update(parts)  # the documented seam: read at install()
    settings = dict(settings)
    if settings.get("metrics_port") == -1:
        settings["metrics_port"] = _free_port()
    freezewatch.install(dump_dir=dump_dir, **settings, **more)


async def _serve(variant: str, dump_dir: str) -> None:
    runner = await start_hello()
    port = runner.addresses[0][1]
    watch_as(variant, dump_dir)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("port", port)
    _answer_thread_names()
    await stop.wait()
    await runner.cleanup()


def _answer_thread_names() -> None:
    """A line "threads" on stdin: print {native id: thread name} (bench.py's idle
    figures per thread). The reader blocks in read(2): it costs an idle server nothing."""

    def answer() -> None:
        for line in sys.stdin:
            if line.strip() == "threads":
                say("threads", json.dumps({str(t.native_id): t.name
                                           for t in threading.enumerate()}))

    threading.Thread(target=answer, name="bench-stdin", daemon=True).start()


async def _serve_asgi(variant: str, dump_dir: str) -> None:
    """A Starlette hello world under uvicorn; "plain": no middleware, else
    FreezewatchMiddleware at defaults (it installs on lifespan startup)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("Hello, world")

    app: Any = Starlette(routes=[Route("/", hello)])
    if variant != "plain":
        from freezewatch.asgi import FreezewatchMiddleware

        app = FreezewatchMiddleware(app, dump_dir=dump_dir)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="on"))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: setattr(server, "should_exit", True))
    task = loop.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    say("port", sock.getsockname()[1])
    await task


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


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    return None


_ASGI_SCOPE = {"type": "http", "method": "GET", "path": "/items/42",
               "headers": [(b"host", b"x"), (b"user-agent", b"bench"), (b"accept", b"*/*"),
                           (b"x-request-id", b"abc-123")]}


async def _plain_call() -> None:
    return None


async def _watchcost(a: argparse.Namespace) -> dict[str, Any]:
    import freezewatch
    from freezewatch.asgi import FreezewatchMiddleware

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

    @freezewatch.watch("decorated")
    async def decorated() -> None:
        return None

    async def call_decorated() -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await decorated()
        return time.perf_counter_ns() - t0

    async def call_plain() -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await _plain_call()
        return time.perf_counter_ns() - t0

    def asgi(app: Any) -> Any:
        async def body() -> int:
            t0 = time.perf_counter_ns()
            for _ in range(n):
                await app(_ASGI_SCOPE, None, None)
            return time.perf_counter_ns() - t0
        return body

    unwatched = min([await with_watch() / n for _ in range(3)])  # the no-op path
    # The timed loops never yield: a normal threshold would (rightly) report them.
    freezewatch.install(native=False, dump_dir=a.dump_dir, threshold=600, interval=1)
    await asyncio.sleep(0.2)
    w: list[float] = []
    z: list[float] = []
    for r in range(a.rounds):  # interleaved, order alternating
        pair = (with_watch, with_null) if r % 2 == 0 else (with_null, with_watch)
        for fn in pair:
            ns = await fn() / n
            (w if fn is with_watch else z).append(ns)
    dec = statistics.median([await call_decorated() / n for _ in range(3)])
    plain = statistics.median([await call_plain() / n for _ in range(3)])
    bare = statistics.median([await asgi(_asgi_app)() / n for _ in range(3)])
    mw = FreezewatchMiddleware(_asgi_app, dump_dir=a.dump_dir, native=False, threshold=600)
    wrapped = statistics.median([await asgi(mw)() / n for _ in range(3)])
    freezewatch.uninstall()
    return {"watch": w, "null": z, "diff": [a - b for a, b in zip(w, z, strict=True)],
            "median_watch": statistics.median(w), "median_null": statistics.median(z),
            "unwatched": unwatched, "decorated": dec, "plain_call": plain,
            "asgi_bare": bare, "asgi_mw": wrapped}


# -- wait-age sample cost ------------------------------------------------------
async def _waits(a: argparse.Namespace) -> dict[str, Any]:
    """ms per WaitSampler.sample() (what the watchdog runs between freezes) at
    N tasks, half parked three frames deep on an Event, half on a timer, read
    from another thread as the watchdog does; and the ages' extra grouping cost."""
    from freezewatch._snapshot import waits
    from freezewatch._snapshot.tasks import group_tasks

    async def leaf(gate: asyncio.Event) -> None:
        await gate.wait()

    async def mid(gate: asyncio.Event) -> None:
        await leaf(gate)

    async def parked(gate: asyncio.Event, i: int) -> None:
        if i % 2:
            await mid(gate)
        else:
            await asyncio.sleep(3600)

    def timed(fn: Any, repeat: int) -> list[float]:
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
        return out

    def measure(loop: asyncio.AbstractEventLoop, sampler: Any) -> dict[str, float]:
        first = timed(lambda: sampler.sample(loop, time.monotonic()), 1)[0]
        steady = statistics.median(timed(lambda: sampler.sample(loop, time.monotonic()), 5))
        age_of = sampler.age_of(time.monotonic())
        snap = list(asyncio.all_tasks(loop))
        plain = statistics.median(timed(lambda: group_tasks(snap, None), 3))
        aged = statistics.median(timed(lambda: group_tasks(snap, None, age_of), 3))
        return {"first": first, "steady": steady, "plain": plain, "aged": aged}

    out: dict[str, Any] = {"sample_every": waits.SAMPLE_EVERY, "max_duty": waits.MAX_DUTY}
    loop = asyncio.get_running_loop()
    for n in a.sizes:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(parked(gate, i)) for i in range(n)]
        await asyncio.sleep(0.1)
        # Read from another thread, as the watchdog does.
        out[str(n)] = await asyncio.to_thread(measure, loop, waits.WaitSampler())
        gate.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["server", "micro", "freezes", "capture", "watchcost",
                                     "waits"])
    ap.add_argument("--watch", action="store_true", help="= --variant defaults")
    ap.add_argument("--variant", default="plain", choices=list(VARIANTS))
    ap.add_argument("--app", default="aiohttp", choices=["aiohttp", "asgi"])
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
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
    if a.watch:
        a.variant = "defaults"
    if a.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if a.role == "server":
        serve = _serve_asgi if a.app == "asgi" else _serve
        asyncio.run(serve(a.variant, a.dump_dir))
    elif a.role == "micro":
        sys.stdin.readline()  # "go": all processes of the round start together
        say("result", json.dumps(asyncio.run(_micro(a.watch, a.dump_dir, a.total, a.tasks))))
    elif a.role == "freezes":
        asyncio.run(_freezes(a))
    elif a.role == "capture":
        asyncio.run(_capture(a))
    elif a.role == "watchcost":
        say("result", json.dumps(asyncio.run(_watchcost(a))))
    elif a.role == "waits":
        say("result", json.dumps(asyncio.run(_waits(a))))


if __name__ == "__main__":
    main()
