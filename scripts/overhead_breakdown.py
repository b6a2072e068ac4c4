"""Where freezewatch's CPU goes on a busy aiohttp server: a per-thread breakdown.

    .venv/bin/python scripts/overhead_breakdown.py            # ~35 s
    .venv/bin/python scripts/overhead_breakdown.py --rounds 6 --window 6 --sections

Part 1 runs what ``make bench`` figure 1a runs (a plain server A and a watched
server W, aiohttp hello world, both pinned to one core, each loaded by its own
scripts/_bench_load.py on the other core, fixed glibc malloc thresholds) and
splits W's CPU by thread from /proc/<pid>/task/<tid>/schedstat: the loop
thread, the freezewatch-watchdog thread, freezewatch's other threads, and its
helper processes (the sentinel). It prints each as ms per second and us per
request, the loop thread's extra CPU per request against A's, and the
watchdog's rounds, wake-ups and CPU per round (rounds counted by the watched
server itself).

Part 2 times, in this process, the pieces a round or a loop iteration is made
of: the selector wrapper (``_idle.WakingSelector.select(0)``) against the bare
selector, ``thread_top_frames()``, ``call_soon_threadsafe`` + the heartbeat,
and one idle-check round of the watchdog's helpers.

``--sections`` also splits the watchdog's per-round CPU by function (thread
CPU summed around each call on the watchdog thread). ``--variant`` runs W
with one mechanism changed, to see what that mechanism costs: ``nowrap`` (no
selector wrapper), ``nopark``, ``nohandoff``, ``slow`` (interval 0.9),
``nosentinel``, ``nogc``; or no freezewatch at all: ``importonly``,
``idlethread`` (one extra thread that never wakes), ``synthetic`` (a thread
waking 10 times a second for FW_SYNTH_US=150 us of Python).

    PYTHONPATH=/tmp/other-tree .venv/bin/python scripts/overhead_breakdown.py

measures another checkout of freezewatch (a ``git archive`` of a commit)
with the same script.

Figures vary by a few percent between rounds on a shared machine (the
control pair shows how much); the watchdog's own CPU, its rounds and wake-ups
and the per-call costs are stable, the loop thread's extra CPU per request
needs several rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import mmap
import os
import random
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _bench_proc import descendants  # noqa: E402

LOAD = str(HERE / "_bench_load.py")
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=268435456"


# -- the measured server (child role) -------------------------------------------
async def _serve(watch: bool) -> None:
    from _bench_worker import start_hello

    runner = await start_hello()
    wd = None
    if watch:
        import structlog

        import freezewatch
        from freezewatch import _state

        structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
        kw: dict[str, Any] = {}
        variant = os.environ.get("FW_BREAKDOWN_VARIANT", "")
        if "nowrap" in variant:  # no selector wrapper: the watchdog polls
            from freezewatch import _idle

            _idle.attach = lambda loop, state: False  # type: ignore[assignment]
        if "nohandoff" in variant:  # the wrapper never stands aside for the watchdog
            from freezewatch import _idle

            real_attach = _idle.attach

            def attach(loop: Any, state: Any) -> bool:
                state.handoff = None
                return real_attach(loop, state)

            _idle.attach = attach  # type: ignore[assignment]
        if "nopark" in variant:  # the watchdog never parks
            from freezewatch import _loopwatch

            _loopwatch.LoopWatch.park_for = lambda self, now: None  # type: ignore[method-assign]
        if "nosentinel" in variant:
            kw["sentinel"] = False
        if "slow" in variant:  # a watchdog that rarely runs
            kw.update(interval=0.9, threshold=1.0)
        if "idlethread" in variant:  # no freezewatch: one more thread that never wakes
            threading.Thread(target=threading.Event().wait, name="freezewatch-watchdog",
                             daemon=True).start()
            variant += ",importonly"
        if "synthetic" in variant:  # no freezewatch: a thread that wakes 10/s, ~150 us each
            def spin() -> None:
                while True:
                    time.sleep(0.1)
                    end = time.thread_time() + float(os.environ.get("FW_SYNTH_US", "150")) * 1e-6
                    while time.thread_time() < end:
                        pass

            threading.Thread(target=spin, name="freezewatch-watchdog", daemon=True).start()
            variant += ",importonly"
        if "sections" in variant:
            _time_sections()
        if "importonly" in variant:  # what importing costs (heap layout, modules)
            import prometheus_client  # noqa: F401  (install() imports it)

            from freezewatch import _install  # noqa: F401
        else:
            freezewatch.install(dump_dir=tempfile.mkdtemp(prefix="fw-breakdown-"), **kw)
        if "nogc" in variant:
            from freezewatch._snapshot import kernel

            kernel.unwatch_gc()
        wd = _state.watchdog
        if wd is not None:
            _time_rounds(wd)
    loop = asyncio.get_running_loop()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)

    def stats() -> None:
        line = sys.stdin.readline()
        if not line:  # the parent went away
            if not done.done():
                done.set_result(None)
            return
        out: dict[str, object] = {"threads": {t.name: t.native_id for t in threading.enumerate()},
                                  "gc": sum(g["collections"] for g in gc.get_stats()),
                                  "rounds": 0, "beats": 0, "round_cpu": 0.0, "wait_cpu": 0.0,
                                  "round_wall": 0.0}
        if wd is not None:
            w = wd.watches[0] if wd.watches else None
            st = getattr(w, "idle", None)
            out.update(sections=_SECTIONS, round_cpu=_ROUND[0], wait_cpu=_ROUND[1],
                       round_wall=_ROUND[2],
                       rounds=wd.rounds, beats=getattr(w, "_sent_seq", 0),
                       wakes=getattr(st, "wakes", None), exits=getattr(st, "exits", None))
        print(json.dumps(out), flush=True)

    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), stats)
    await done
    loop.remove_reader(sys.stdin.fileno())


_ROUND = [0.0, 0.0, 0.0]  # watchdog thread: CPU in rounds, CPU inside its waits, wall in rounds


def _time_rounds(wd: Any) -> None:
    """Split the watchdog thread's CPU: its rounds' Python vs waking up (the wait).

    Wraps the watchdog's wake-up flag (its only sleep): the thread CPU clock read
    around it. Costs two clock reads per round (~1 us), on the watchdog only."""
    real = wd._event
    clock = time.thread_time
    last = [clock(), time.perf_counter()]

    class Timed:
        set = real.set
        clear = real.clear

        @staticmethod
        def wait(timeout: float) -> bool:
            c0, w0 = clock(), time.perf_counter()
            _ROUND[0] += c0 - last[0]
            _ROUND[2] += w0 - last[1]
            try:
                return bool(real.wait(timeout))
            finally:
                last[0], last[1] = clock(), time.perf_counter()
                _ROUND[1] += last[0] - c0

    wd._event = Timed()


_LAST_SECTIONS: tuple[dict[str, list[float]], dict[str, list[float]], int] = ({}, {}, 0)
_SECTIONS: dict[str, list[float]] = {}  # label -> [calls, thread CPU seconds]


def _time_sections() -> None:
    """--sections: wrap the functions a watchdog round calls, summing their
    thread CPU on the watchdog thread (each wrapper adds ~1 us: compare
    sections with each other, not with the unwrapped totals)."""
    from freezewatch import _gil, _health, _loopwatch, _sched, _watchdog
    from freezewatch._sinks import metrics
    from freezewatch._snapshot import kernel

    clock = time.thread_time

    def wrap(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name, None)
        if real is None:
            return

        def timed(*args: Any, **kw: Any) -> Any:
            if threading.current_thread().name != "freezewatch-watchdog":
                return real(*args, **kw)
            c0 = clock()
            try:
                return real(*args, **kw)
            finally:
                acc = _SECTIONS.setdefault(label, [0, 0.0])
                acc[0] += 1
                acc[1] += clock() - c0

        setattr(owner, name, timed)

    lw, wd = _loopwatch.LoopWatch, _watchdog.Watchdog
    for owner, name, label in (
            (lw, "tick", "LoopWatch.tick (all of it)"), (lw, "_send", "  tick: _send (beat out)"),
            (kernel, "cpu_sample", "    _send: kernel.cpu_sample"),
            (metrics, "lag", "  tick: metrics.lag (beat answered)"),
            (lw, "loop_run_delay", "  loop_run_delay (pread)"),
            (_sched.RunDelay, "read", "RunDelay.read (all)"),
            (wd, "_gil_round", "Watchdog._gil_round"),
            (_gil.GilLayers, "round", "  GilLayers.round"),
            (_health, "after_round", "_health.after_round"),
            (metrics, "sample", "  metrics.sample"), (wd, "_park", "Watchdog._park"),
            (_watchdog, "thread_top_frames", "thread_top_frames"),
            (lw, "next_wake", "LoopWatch.next_wake")):
        wrap(owner, name, label)


def _thread_cpu(pid: int) -> dict[int, int]:
    """{tid: ns on CPU} of every thread of ``pid``."""
    out: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except OSError:
            continue
    return out


def _switches(pid: int, tid: int) -> int:
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[2])


class _Server:
    def __init__(self, watch: bool, cpu: int | None, env: dict[str, str]) -> None:
        args = [sys.executable, __file__, "serve"] + (["--watch"] if watch else [])
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])
        self.pid = self.proc.pid

    def stats(self) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def sample(self) -> tuple[dict[int, int], dict[int, int]]:
        """(this process's threads, its helper processes' total CPU by pid)."""
        helpers = {}
        for p in descendants(self.pid):
            try:
                helpers[p] = sum(_thread_cpu(p).values())
            except OSError:
                continue
        return _thread_cpu(self.pid), helpers

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class _Loader:
    def __init__(self, port: int, conns: int, cpu: int | None, tmp: str) -> None:
        self.path = os.path.join(tmp, f"count-{port}")
        with open(self.path, "wb") as f:
            f.write(b"\0" * 8)
        with open(self.path, "r+b") as f:
            self.mm = mmap.mmap(f.fileno(), 8)
        args = [sys.executable, LOAD, "--port", str(port), "--conns", str(conns),
                "--counter", self.path]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def count(self) -> int:
        return int.from_bytes(self.mm[:8], "little", signed=True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.mm.close()


def _one_round(a: argparse.Namespace, tmp: str) -> dict[str, float]:
    cpus = sorted(os.sched_getaffinity(0))
    srv_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    tun = os.environ.get("GLIBC_TUNABLES")
    env = dict(os.environ, GLIBC_TUNABLES=f"{tun}:{MALLOC_TUNABLES}" if tun else MALLOC_TUNABLES)
    # A plain, W watched, B plain (the control: A vs B is the method's noise),
    # started in a random order.
    order = ["A", "W", "B"]
    random.shuffle(order)
    started = {role: _Server(role == "W", srv_cpu, env) for role in order}
    plain, watched, control = started["A"], started["W"], started["B"]
    loaders = [_Loader(s.port, a.conns, load_cpu, tmp) for s in (plain, watched, control)]
    try:
        time.sleep(a.warmup)
        names = watched.stats()["threads"]
        assert isinstance(names, dict)
        wd_tid = int(names.get("freezewatch-watchdog", -1))
        main_w, main_a = watched.pid, plain.pid  # the loop runs on the main thread
        st0 = watched.stats()
        sw0 = _switches(watched.pid, wd_tid) if wd_tid > 0 else 0
        lw0, la0 = _switches(watched.pid, watched.pid), _switches(plain.pid, plain.pid)
        (wt0, wh0), (at0, _), (bt0, _) = watched.sample(), plain.sample(), control.sample()
        n0 = [ld.count() for ld in loaders]
        time.sleep(a.window)
        (wt1, wh1), (at1, _), (bt1, _) = watched.sample(), plain.sample(), control.sample()
        n1 = [ld.count() for ld in loaders]
        sw1 = _switches(watched.pid, wd_tid) if wd_tid > 0 else 0
        lw1, la1 = _switches(watched.pid, watched.pid), _switches(plain.pid, plain.pid)
        st1 = watched.stats()
    finally:
        for ld in loaders:
            ld.stop()
        for srv in started.values():
            srv.stop()
    req_a, req_w, req_b = n1[0] - n0[0], n1[1] - n0[1], n1[2] - n0[2]

    def d(t0: dict[int, int], t1: dict[int, int], tid: int | None = None,
          exclude: tuple[int, ...] = ()) -> float:
        if tid is not None:
            return (t1.get(tid, 0) - t0.get(tid, 0)) / 1e9
        return sum(v - t0.get(k, 0) for k, v in t1.items() if k not in exclude) / 1e9

    w = a.window
    extra: dict[str, float] = {}
    rounds = int(st1["rounds"]) - int(st0["rounds"])  # type: ignore[call-overload]
    beats = int(st1["beats"]) - int(st0["beats"])  # type: ignore[call-overload]
    wakes = (int(st1["wakes"]) - int(st0["wakes"])  # type: ignore[call-overload]
             if st1.get("wakes") is not None else float("nan"))
    exits = (int(st1["exits"]) - int(st0["exits"])  # type: ignore[call-overload]
             if st1.get("exits") is not None else float("nan"))
    global _LAST_SECTIONS
    _LAST_SECTIONS = (st0.get("sections") or {}, st1.get("sections") or {},  # type: ignore[assignment]
                      int(st1["rounds"]) - int(st0["rounds"]))  # type: ignore[call-overload]
    for k in ("round_cpu", "wait_cpu", "round_wall"):
        extra[k] = (float(st1[k]) - float(st0[k])) / w  # type: ignore[arg-type]
    return {**extra,
        "req_a": req_a / w, "req_w": req_w / w, "req_b": req_b / w, "b_total": d(bt0, bt1),
        "gc": (int(st1["gc"]) - int(st0["gc"])) / w,  # type: ignore[call-overload]
        "a_total": d(at0, at1), "a_loop": d(at0, at1, main_a),
        "w_total": d(wt0, wt1) + d(wh0, wh1), "w_loop": d(wt0, wt1, main_w),
        "w_wd": d(wt0, wt1, wd_tid), "w_other": d(wt0, wt1, exclude=(main_w, wd_tid)),
        "w_helpers": d(wh0, wh1),
        "loop_sw_w": (lw1 - lw0) / w, "loop_sw_a": (la1 - la0) / w,
        "rounds": rounds / w, "wd_switches": (sw1 - sw0) / w, "beats": beats / w,
        "wakes": wakes / w, "selects": exits / w,
    }


def part1(a: argparse.Namespace) -> None:
    print(f"## 1. aiohttp hello world under load: plain A vs watched W on one core "
          f"({a.rounds} rounds x {a.window:g} s, {a.conns} conns each)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            x = _one_round(a, tmp)
            rows.append(x)
            per_a = x["a_total"] / (x["req_a"] * a.window) * 1e6
            per_w = x["w_total"] / (x["req_w"] * a.window) * 1e6
            per_b = x["b_total"] / (x["req_b"] * a.window) * 1e6
            print(f"   round {r + 1}: req/s A {x['req_a']:.0f} W {x['req_w']:.0f} "
                  f"B {x['req_b']:.0f}   us/request A {per_a:.2f} W {per_w:.2f} B {per_b:.2f}"
                  f"   W/A {100 * (per_w / per_a - 1):+.2f} %  control B/A "
                  f"{100 * (per_b / per_a - 1):+.2f} %")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    w = a.window

    def per_req(r: dict[str, float], key: str, req: str = "req_w") -> float:
        return float(r[key] / (r[req] * w))

    def mid(f: Callable[[dict[str, float]], float]) -> float:
        return float(statistics.median(f(r) for r in rows))

    print("\n   W's CPU by thread (medians of the rounds), ms per second and us per request:")
    for label, key in (("loop thread", "w_loop"), ("freezewatch-watchdog", "w_wd"),
                       ("other threads", "w_other"), ("helper processes", "w_helpers"),
                       ("total", "w_total")):
        print(f"     {label:22s} {med[key] / w * 1e3:8.2f} ms/s  "
              f"{mid(functools.partial(per_req, key=key)) * 1e6:7.3f} us/req")
    a_loop = mid(lambda r: per_req(r, "a_loop", "req_a"))
    print(f"   A: loop thread {a_loop * 1e6:7.3f} us/req")
    ratio = mid(lambda r: per_req(r, "w_loop") / per_req(r, "a_loop", "req_a") - 1)
    ctl = mid(lambda r: per_req(r, "b_total", "req_b") / per_req(r, "a_loop", "req_a") - 1)
    print(f"   W's loop thread vs A's, CPU per request: {100 * ratio:+.2f} % "
          f"(control B vs A {100 * ctl:+.2f} %)")
    print(f"   loop thread scheduled in: W {med['loop_sw_w']:.0f}/s, A {med['loop_sw_a']:.0f}/s "
          f"(per 1000 requests: W {1000 * med['loop_sw_w'] / med['req_w']:.1f}, "
          f"A {1000 * med['loop_sw_a'] / med['req_a']:.1f})")
    outside = mid(lambda r: (r["w_wd"] + r["w_other"] + r["w_helpers"]) / (r["req_w"] * w)
                  / per_req(r, "a_total", "req_a"))
    print(f"   W's threads/processes other than the loop thread: {100 * outside:+.2f} % "
          f"of A's CPU per request")
    rounds = med["rounds"]
    print(f"   watchdog: {rounds:.1f} rounds/s, {med['wd_switches']:.1f} wake-ups/s, "
          f"{med['w_wd'] / w / max(rounds, 1e-9) * 1e6:.1f} us CPU per round; "
          f"{med['beats']:.1f} heartbeats/s; parked-watchdog wake-ups by the loop "
          f"{med['wakes']:.1f}/s; select() calls {med['selects']:.0f}/s "
          f"({med['selects'] / med['req_w']:.2f} per request); "
          f"gc collections {med['gc']:.0f}/s ({med['gc'] / med['req_w']:.3f} per request)")
    s0, s1, n = _LAST_SECTIONS
    if s1:
        print(f"   watchdog sections (--sections, last round's window, {n} rounds; thread CPU, "
              f"~1 us of each is the timing wrapper):")
        for label, (calls, cpu) in s1.items():
            c0, t0 = s0.get(label, (0, 0.0))
            if calls > c0:
                print(f"     {label:38s} {(cpu - t0) / (calls - c0) * 1e6:7.1f} us per call, "
                      f"{(cpu - t0) / max(n, 1) * 1e6:7.1f} us per round ({calls - c0} calls)")
    per = 1e6 / max(rounds, 1e-9)
    print(f"   watchdog thread CPU per round: {med['round_cpu'] * per:.1f} us running the round "
          f"(wall {med['round_wall'] * per:.1f} us), {med['wait_cpu'] * per:.1f} us inside its "
          f"Event.wait (sleeping, waking, re-taking the GIL)")


# -- part 2: per-call costs --------------------------------------------------
def _best(stmt: object, number: int, repeat: int = 7) -> float:
    """Best-of-``repeat`` seconds per call."""
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number  # type: ignore[arg-type]


def part2() -> None:
    from freezewatch import _idle
    from freezewatch._snapshot.frames import thread_top_frames

    print("\n## 2. per-call costs (this process, best of 7)")
    a, b = socket.socketpair()
    raw = selectors.DefaultSelector()
    raw.register(a, selectors.EVENT_READ)
    state = _idle.IdleState(lambda: None, threading.Event())
    wrapped = _idle.WakingSelector(raw, state)
    n = 200_000
    t_raw = _best(lambda: raw.select(0), n)
    t_wrap = _best(lambda: wrapped.select(0), n)
    print(f"   selector.select(0): bare {t_raw * 1e9:.0f} ns, wrapped {t_wrap * 1e9:.0f} ns: "
          f"wrapper {1e9 * (t_wrap - t_raw):+.0f} ns per loop iteration")
    state.due = time.monotonic() + 3600  # armed hand-off, not yet due: the common busy case
    t_due = _best(lambda: wrapped.select(0), n)
    print(f"   ... with the GIL hand-off armed (not due): wrapper {1e9 * (t_due - t_raw):+.0f} ns")
    raw.close()
    a.close()
    b.close()

    stop = threading.Event()
    ths = [threading.Thread(target=stop.wait) for _ in range(3)]
    for t in ths:
        t.start()
    t_frames = _best(thread_top_frames, 20_000)
    stop.set()
    for t in ths:
        t.join()
    print(f"   thread_top_frames() (5 threads): {t_frames * 1e6:.2f} us")

    loop = asyncio.new_event_loop()
    try:
        cb = lambda seq: None  # noqa: E731
        def send() -> None:
            loop.call_soon_threadsafe(cb, 1)
        k = 20_000
        t_send = _best(send, k, repeat=3)
        loop.run_until_complete(asyncio.sleep(0))  # drains the queued callbacks
    finally:
        loop.close()
    print(f"   loop.call_soon_threadsafe (the heartbeat's send, self-pipe write): "
          f"{t_send * 1e6:.2f} us")
    from freezewatch._snapshot import kernel

    junk = [[i] for i in range(2000)]  # a young generation of realistic size
    t_gc = _best(lambda: gc.collect(0), 2000)
    kernel.watch_gc()
    t_gc_hook = _best(lambda: gc.collect(0), 2000)
    kernel.unwatch_gc()
    del junk
    print(f"   gen-0 collection: {t_gc * 1e6:.2f} us, with freezewatch's gc.callbacks hook "
          f"{t_gc_hook * 1e6:.2f} us ({1e6 * (t_gc_hook - t_gc):+.2f} us per collection)")
    t_mono = _best(time.monotonic, 200_000)
    t_proc = _best(time.process_time, 200_000)
    print(f"   time.monotonic() {t_mono * 1e9:.0f} ns, time.process_time() {t_proc * 1e9:.0f} ns "
          f"(the watchdog reads each ~3-4 times per round)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("role", nargs="?", default="main", choices=["main", "serve"])
    ap.add_argument("--watch", action="store_true")
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--conns", type=int, default=16, help="per load generator (bench.py: 16)")
    ap.add_argument("--skip-load", action="store_true", help="part 2 only")
    ap.add_argument("--sections", action="store_true",
                    help="split the watchdog's per-round CPU by function (adds ~1 us per call)")
    ap.add_argument("--variant", default="", help="experiments on W: nowrap, nosentinel, "
                    "slow (interval 0.9), nogc; comma-separated")
    a = ap.parse_args()
    if a.role == "serve":
        if a.cpu is not None:
            os.sched_setaffinity(0, {a.cpu})
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(a.watch))
        return
    if a.sections:
        a.variant = ",".join(x for x in (a.variant, "sections") if x)
    if a.variant:
        os.environ["FW_BREAKDOWN_VARIANT"] = a.variant
        print(f"W variant: {a.variant}")
    if not a.skip_load:
        part1(a)
    part2()


if __name__ == "__main__":
    main()
