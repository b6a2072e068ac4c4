"""What the wait-for graph adds to a capture (issue 13), measured in one process.

    .venv/bin/python scripts/bench_waits.py                  # 10,000 and 100,000 tasks
    .venv/bin/python scripts/bench_waits.py --sizes 10000 --reps 5 --holder sleep

The loop thread is really blocked (``with lock:`` on a threading.Lock that a
named thread holds inside its own ``with`` block; that thread then waits on
a threading.Event, a second hop whose completer search covers every task,
or with ``--holder sleep`` just sleeps: the common one-hop case, where only
the threads are searched). The loop has N tasks in seven shapes (asyncio
Event, nested Event, Queue.get, a bare Future, a held asyncio.Lock, and
tasks *inside* ``async with sem:`` bodies, which the holder search must
resolve). A measuring thread calls ``capture()`` exactly as the watchdog
does, alternately with the wait-for graph and with it switched off.
Printed: the median capture time of each, their difference, and the graph
builder alone. Targets (the core's capture targets, graph included): total
capture <= 0.25 s at 10,000 tasks, <= 3 s at 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from typing import Any

from freezewatch._snapshot import capture as _capture
from freezewatch._snapshot import kernel as _kernel
from freezewatch._snapshot import waitgraph as _waitgraph
from freezewatch._snapshot.model import NATIVE_OFF, LoopInfo


async def _leaf(ev: asyncio.Event) -> None:
    await ev.wait()


async def _nested(ev: asyncio.Event) -> None:
    await _leaf(ev)


async def _queue(q: asyncio.Queue[int]) -> None:
    await q.get()


async def _future(fut: asyncio.Future[None]) -> None:
    await fut


async def _locked(lock: asyncio.Lock) -> None:
    async with lock:
        pass


async def _inside(sem: asyncio.Semaphore, ev: asyncio.Event) -> None:
    async with sem:
        await ev.wait()


def _holder(lock: threading.Lock, ready: threading.Event, done: threading.Event,
            how: str) -> None:
    with lock:
        ready.set()
        if how == "event":  # waits in turn: a second hop, whose search covers every task
            done.wait(600)
        else:  # sleeps (a root, like a thread in slow I/O): one hop, threads only
            while not done.is_set():
                time.sleep(0.01)


def _no_graph(**_kw: Any) -> None:
    return None


def _measure(loop: asyncio.AbstractEventLoop, info: LoopInfo, reps: int,
             out: dict[str, Any]) -> None:
    real = _waitgraph.build

    def once(graph: bool) -> tuple[float, Any]:
        _capture._waitgraph.build = real if graph else _no_graph  # type: ignore[assignment]
        before = _kernel.cpu_sample(info.thread_id)  # like the watchdog's, taken at the beat
        if before is not None:
            before = _kernel.CpuSample(before.at - 1.0, before.cpu)
        t0 = time.perf_counter()
        snap = _capture.capture(kind="freeze", loop=loop, info=info, detected_at=time.time(),
                                blocked_for=1.0, threshold=0.5, inflight=(), native=NATIVE_OFF,
                                cpu_before=before)
        return time.perf_counter() - t0, snap

    try:
        with_graph, without = [], []
        first, snap = once(True)  # the first capture of a process also parses the sources
        for _ in range(reps):
            t, snap = once(True)
            with_graph.append(t)
            t, _ = once(False)
            without.append(t)
        alone = []
        tasks = list(asyncio.all_tasks(loop))
        tops = sys._current_frames()
        for _ in range(reps):
            t0 = time.perf_counter()
            real(kind="freeze", loop=loop, loop_ident=info.thread_id, tops=tops, tasks=tasks,
                 current=None, stalled_task=None)
            alone.append(time.perf_counter() - t0)
        del tops
        links = snap.waits.links if snap.waits else ()
        out.update(first=first, with_graph=with_graph, without=without, alone=alone,
                   links=len(links),
                   holder=(links[0]["holders"] or [{}])[0].get("thread") if links else None)
    finally:
        _capture._waitgraph.build = real  # type: ignore[assignment]


def run(size: int, reps: int, how: str) -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        q: asyncio.Queue[int] = asyncio.Queue()
        fut: asyncio.Future[None] = loop.create_future()
        alock, sem = asyncio.Lock(), asyncio.Semaphore(size)
        await alock.acquire()
        shapes = [lambda: _leaf(ev), lambda: _nested(ev), lambda: _queue(q),
                  lambda: _future(fut), lambda: _locked(alock), lambda: _inside(sem, ev),
                  lambda: _inside(sem, ev)]
        tasks = [loop.create_task(shapes[i % len(shapes)]()) for i in range(size)]
        for _ in range(3):
            await asyncio.sleep(0)
        lock, ready, done = threading.Lock(), threading.Event(), threading.Event()
        holder = threading.Thread(target=_holder, args=(lock, ready, done, how), name="holder")
        holder.start()
        ready.wait()
        info = LoopInfo("bench", threading.get_ident(), threading.current_thread().name)

        def meter_run() -> None:
            time.sleep(0.2)  # the loop thread is in `with lock:` by now
            try:
                _measure(loop, info, reps, out)
            finally:
                done.set()

        meter = threading.Thread(target=meter_run, name="measure")
        meter.start()
        with lock:  # the loop thread really blocks here until the measurements are done
            pass
        meter.join()
        holder.join()
        ev.set()
        fut.set_result(None)
        alock.release()
        for _ in range(size):
            q.put_nowait(0)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="10000,100000", help="comma list of task counts")
    ap.add_argument("--reps", type=int, default=3, help="captures per variant and size")
    ap.add_argument("--holder", default="event", choices=["event", "sleep"],
                    help="the lock holder waits on a threading.Event (2 hops, every task "
                         "searched: the costly case, default) or sleeps (1 hop)")
    a = ap.parse_args(argv)
    print(f"Python {sys.version.split()[0]}; capture() on a really blocked loop, native off, "
          f"median of {a.reps} (first capture of the process shown apart); holder: {a.holder}")
    for size in (int(s) for s in a.sizes.split(",")):
        r = run(size, a.reps, a.holder)
        w, wo, al = (statistics.median(r[k]) for k in ("with_graph", "without", "alone"))
        limit = 0.25 if size <= 10_000 else 3.0
        print(f"  {size:>7,} tasks: capture with graph {w:.3f} s, without {wo:.3f} s, "
              f"added {w - wo:+.3f} s; graph alone {al:.3f} s; first capture {r['first']:.3f} s;"
              f" {r['links']} link(s), holder {r['holder']!r}; target <= {limit:g} s: "
              f"{'met' if w <= limit else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
