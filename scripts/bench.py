"""freezewatch benchmark (``make bench``; ``make bench BENCH_ARGS="--only corun"``).

Prints, for this machine, the figures issue 12 sets targets for, each
measured side by side in one run with interleaved rounds, medians and ranges,
and MET / NOT MET next to each target:

1a. co-run   an aiohttp hello-world server saturated by wrk (Debian's
             ``wrk``), a plain server and a watched one co-running on the same
             core (the wrks on the other): CPU time of the whole process tree
             per request, X / plain. Pairs: control (plain vs plain: the
             method's noise), the 40-line reference heartbeat
             (``_bench_worker.reference_heartbeat``), freezewatch at defaults;
             on asyncio and on uvloop; and the ASGI path (Starlette under
             uvicorn, FreezewatchMiddleware on vs off). Target: <= 1.01 and
             <= the reference of the same run.
1b. micro    100 tasks x ``await asyncio.sleep(0)``, 1,000,000 in total:
             CPU with vs without (three processes on one core). <= 1.01.
1c. components (``--only components``, ~4 min) the co-run ratio part by
             part: heartbeat only, + selector wrapper, + gc hook, + sentinel,
             + faulthandler layer, + metrics server, defaults (parts without a
             setting are switched off through the documented seam
             ``freezewatch._state.parts``; nothing is patched).
1d. round   (``--only round``, ~30 s) the monitor's own CPU (ms/s, wake-ups/s,
             us per watchdog round) beside a saturated loop on one core,
             freezewatch at defaults vs the reference heartbeat: the kernel's
             count of its run time, steady where co-run ratios are not.
2. idle cost (``--only idle``, ~35 s) CPU ms per second of the whole process
             tree (server + sentinel) of an idle watched server minus a plain
             one, asyncio and uvloop, from /proc/<pid>/task/*/schedstat over
             the same windows (3 x 10 s, each a whole idle heartbeat period,
             medians). <= 0.3 ms/s. Also printed:
             the server and the sentinel apart (the sentinel's own idle cost,
             issue 10) and each thread's ms/s, wake-ups/s and cost per wake-up.
3. detection latency  30 injected freezes of 1.5 x threshold (0.5 s), native
             off: block start -> dump .json exists (polled every 1 ms from
             this process), minus the threshold. p99 <= interval + 50 ms.
4. capture cost  1,000 / 10,000 / 100,000 tasks awaiting in six coroutine
             shapes: detected_at -> dump .json exists (capture + render +
             write), and file sizes.
5. watch() cost  ns per ``async with freezewatch.watch("x")`` vs a trivial
             async context manager, on a watched loop; the unwatched no-op
             path, the decorator, the ASGI middleware per request.
6. waits     (``--only waits``) ms per wait-age sample at 10,000 / 100,000 tasks.

CPU time is read from /proc/<pid>/task/*/schedstat summed over the threads
(the watchdog and events threads included: /proc/<pid>/schedstat alone is the
main thread only) and over the live descendants (the sentinel). All measured
processes are children of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import mmap
import os
import queue
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from _bench_proc import delta, descendants, task_cpu, tree_cpu

PY = sys.executable
HERE = Path(__file__).resolve().parent
WORKER = str(HERE / "_bench_worker.py")
THRESHOLD = 0.5  # detection-latency and capture runs
# Fixed glibc malloc thresholds for every measured process. Without them a
# plain aiohttp hello-world server trims its heap top and faults it back in
# on every request (~2 page faults/request, +30 % CPU/request on this
# machine), or not, depending on heap layout alone: a process whose layout
# differs (freezewatch's threads and re-armed faulthandler timer are enough)
# escapes it and looks ~27 % *cheaper*. Fixed thresholds take that luck out
# of the comparison (--malloc default puts it back, to see it).
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=268435456"
OPT_IN = ("components", "waits")  # long or special: only with --only NAME
INTERVAL = 0.1  # freezewatch's default; the latency target is interval + 50 ms


# -- measuring tools ---------------------------------------------------------
def pct(x: float) -> str:
    return f"{x * 100:+.2f} %"


def quantile(xs: list[float], q: float) -> float:
    """Nearest-rank quantile (p99 of 30 samples is the maximum)."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


class Child:
    """A worker process speaking the ``@@`` line protocol on stdout."""

    env: dict[str, str] | None = None  # set once by Bench

    def __init__(self, args: list[str], log: IO[bytes], pyopts: tuple[str, ...] = ()) -> None:
        self.proc = subprocess.Popen(
            [PY, *pyopts, WORKER, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=log, text=True, bufsize=1, env=Child.env,
        )
        self.pid = self.proc.pid
        self._lines: queue.Queue[list[str] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                self._lines.put(line[3:].split())
        self._lines.put(None)

    def expect(self, word: str, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                parts = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"worker {self.pid}: no {word!r} within {timeout} s") from None
            if parts is None:
                raise RuntimeError(f"worker {self.pid} exited (rc={self.proc.wait()}) "
                                   f"before {word!r}; see the log")
            if parts[0] == word:
                return parts

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            rc = self.proc.wait(5)
            why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            raise RuntimeError(f"worker {self.pid} died ({why})") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                s.close()  # type: ignore[union-attr]


class DumpPoller(threading.Thread):
    """Notes when each dump .json first exists, polling the directory every 1 ms.

    A separate process from the watched app, so the polling never competes
    for the app's GIL. Dumps are renamed into place, so existing = complete.
    """

    def __init__(self, directory: str, every: float = 0.001) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.every = every
        self.seen: dict[str, tuple[float, float]] = {}  # name -> (monotonic, wall)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                names = os.listdir(self.directory)
            except OSError:
                names = []
            for name in names:
                if name.endswith(".json") and not name.startswith(".") and name not in self.seen:
                    self.seen[name] = (time.monotonic(), time.time())
            time.sleep(self.every)

    def halt(self) -> None:
        self._halt.set()
        self.join(2)

    def wait_new(self, known: set[str], timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = [n for n in list(self.seen) if n not in known]
            if new:
                return min(new, key=lambda n: self.seen[n][0])
            time.sleep(0.001)
        return None


def _sample(order: list[str], servers: dict[str, Child],
            counters: dict[str, mmap.mmap]) -> dict[str, tuple[dict[int, tuple[int, int]], int]]:
    """(server tree CPU, responses so far) per server, each pair read back to back."""
    return {role: (tree_cpu(servers[role].pid), struct.unpack_from("<q", counters[role], 0)[0])
            for role in order}


def _tree_state() -> str:
    """Which code was measured: HEAD and whether freezewatch/ has local changes."""
    root = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "freezewatch"],
                               capture_output=True, text=True, timeout=5).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"HEAD {head or '?'}" + (f" + {len(dirty)} changed file(s) in freezewatch/"
                                    if dirty else "")


def _defaults() -> str:
    try:
        import dataclasses

        from freezewatch import Config

        d = {f.name: f.default for f in dataclasses.fields(Config)}
    except Exception as e:  # the package under test may be mid-edit
        return f"unreadable ({type(e).__name__})"
    keys = ("threshold", "interval", "idle_beat_every", "native", "faulthandler", "sentinel")
    return ", ".join(f"{k}={d[k]}" for k in keys if k in d)


def _threads_of_tree(pid: int) -> dict[tuple[int, int], tuple[int, int]]:
    """{(pid, thread id): (ns on CPU, times scheduled in)} over ``pid`` and its descendants."""
    return {(p, t): v for p in (pid, *descendants(pid)) for t, v in task_cpu(p).items()}


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return " ".join(x.decode(errors="replace") for x in f.read().split(b"\0")[:4])[:80]
    except OSError:
        return "?"


@dataclass
class Row:
    figure: str
    value: str
    target: str
    met: bool | None  # None: not measured / inconclusive


class Bench:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.tmp = tempfile.mkdtemp(prefix="freezewatch-bench-")
        self.log = open(os.path.join(self.tmp, "workers.log"), "ab")  # noqa: SIM115
        self.rows: list[Row] = []
        if a.malloc == "fixed":
            tun = os.environ.get("GLIBC_TUNABLES")
            Child.env = dict(os.environ,
                             GLIBC_TUNABLES=f"{tun}:{MALLOC_TUNABLES}" if tun else MALLOC_TUNABLES)
        cpus = sorted(os.sched_getaffinity(0))
        # Servers (and micro processes) share one core, load generators get
        # the other: the compared processes see the same core at the same time.
        self.server_cpu: int | None = cpus[0] if len(cpus) >= 2 else None
        self.load_cpu: int | None = cpus[1] if len(cpus) >= 2 else None
        if a.load_cpu == "same":
            self.load_cpu = self.server_cpu
        elif a.load_cpu == "any":
            self.load_cpu = None

    def dump_dir(self, name: str) -> str:
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        return d

    def cpu_args(self, cpu: int | None) -> list[str]:
        return ["--cpu", str(cpu)] if cpu is not None else []

    @contextlib.contextmanager
    def children(self) -> Iterator[list[Child]]:
        kids: list[Child] = []
        try:
            yield kids
        finally:
            for k in kids:
                k.stop()

    # -- 1a: co-run ------------------------------------------------------------
    def _wrk(self, port: int, seconds: float) -> subprocess.Popen[str]:
        cmd = ["wrk", "-t1", f"-c{self.a.conns}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"]
        if self.load_cpu is not None:
            cmd = ["taskset", "-c", str(self.load_cpu), *cmd]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)

    @staticmethod
    def _wrk_requests(p: subprocess.Popen[str]) -> int:
        out, _ = p.communicate(timeout=60)
        m = re.search(r"(\d+) requests in", out)
        if m is None or p.returncode:
            raise RuntimeError(f"wrk failed (rc={p.returncode}): {out[-300:]!r}")
        return int(m.group(1))

    def _pair(self, left: list[str], right: list[str]) -> tuple[float, float]:
        """CPU ns per request of two servers co-running on one core, each saturated
        by its own wrk on the other core over the same window."""
        a = self.a
        with self.children() as kids:
            sides = [left, right]
            order = [0, 1] if random.random() < 0.5 else [1, 0]
            srv: dict[int, Child] = {}
            for i in order:
                srv[i] = Child(["server", *self.cpu_args(self.server_cpu), *sides[i],
                                "--dump-dir", self.dump_dir("corun")], self.log)
                kids.append(srv[i])
            port = {i: int(srv[i].expect("port")[1]) for i in order}
            for p in [self._wrk(port[i], a.warmup) for i in order]:
                self._wrk_requests(p)  # warm-up: imports, first requests, the watchdog up
            c0 = {i: tree_cpu(srv[i].pid) for i in order}
            loads = {i: self._wrk(port[i], a.window) for i in order}
            reqs = {i: self._wrk_requests(loads[i]) for i in order}
            c1 = {i: tree_cpu(srv[i].pid) for i in order}
        per = [delta(c0[i], c1[i])[0] / max(1, reqs[i]) for i in (0, 1)]
        return per[0], per[1]

    def _corun(self, title: str, base: list[str], variants: list[tuple[str, list[str]]],
               rounds: int, targets: dict[str, str]) -> dict[str, list[float]]:
        """Rounds of pairs (base vs each variant, control: base vs base), interleaved:
        every round runs every pair once, in a shuffled order."""
        a = self.a
        print(f"\n## {title}")
        if shutil.which("wrk") is None:
            raise RuntimeError("wrk not found: apt-get install -y wrk (Debian's package)")
        pin = (f"servers pinned to CPU {self.server_cpu}, wrk to "
               + (f"CPU {self.load_cpu}" if self.load_cpu is not None else "any CPU")
               if self.server_cpu is not None else "no pinning (a single CPU available)")
        print(f"   pairs co-running on one core ({pin}); each server saturated by its own "
              f"wrk -t1 -c{a.conns}; {a.warmup:g} s warm-up, {a.window:g} s measured; CPU "
              f"of the whole process tree per request, X / plain; {rounds} interleaved rounds")
        pairs = [("control", base), *variants]
        ratios: dict[str, list[float]] = {name: [] for name, _ in pairs}
        rng = random.Random(len(title))
        for r in range(rounds):
            todo = pairs[:]
            rng.shuffle(todo)
            line = []
            for name, args in todo:
                pa, px = self._pair(base, args)
                ratios[name].append(px / pa)
                line.append(f"{name} {px / pa:.3f}")
            print(f"   round {r + 1}: " + "  ".join(line))
        ref = statistics.median(ratios["ref"]) if "ref" in ratios else None
        for name, _ in pairs:
            xs = ratios[name]
            med = statistics.median(xs)
            t = targets.get(name)
            verdict = ""
            if name == "ref":
                self.rows.append(Row(f"{title.split(':')[0]}: ref (40-line heartbeat)",
                                     f"{med:.3f} ({min(xs):.3f}-{max(xs):.3f})", "-", None))
            if t is not None:
                met = med <= 1.01 and (ref is None or name == "ref" or med <= ref)
                verdict = f"   target {t}: {'MET' if met else 'NOT MET'}"
                self.rows.append(Row(f"{title.split(':')[0]}: {name}", f"{med:.3f} "
                                     f"({min(xs):.3f}-{max(xs):.3f})", t, met))
            print(f"   {name:>13}: median {med:.3f}  range {min(xs):.3f} - {max(xs):.3f}"
                  f"{verdict}")
        return ratios

    def corun(self) -> None:
        want = "<= 1.01 and <= ref"
        for loop in ("asyncio", "uvloop"):
            base = ["--loop", loop, "--variant", "plain"]
            ratios = self._corun(
                f"1a. co-run ({loop}): aiohttp hello world, CPU/request X / plain",
                base, [(v, ["--loop", loop, "--variant", v]) for v in ("ref", "defaults")],
                self.a.corun_rounds, {"defaults": want})
            c = ratios["control"]
            self.rows.append(Row(f"1a. co-run ({loop}): control (method noise)",
                                 f"{statistics.median(c):.3f} ({min(c):.3f}-{max(c):.3f})",
                                 "~1.000", None))
        self._corun("1a. co-run (ASGI): Starlette under uvicorn, middleware on / off",
                    ["--app", "asgi", "--variant", "plain"],
                    [("middleware", ["--app", "asgi", "--variant", "defaults"])],
                    self.a.corun_rounds, {"middleware": "<= 1.01"})

    def components(self) -> None:
        ladder = ["hb", "selector", "gc", "sentinel", "faulthandler", "metrics", "defaults"]
        print("\n   import = the reference heartbeat with freezewatch imported, not installed "
              "(what importing it costs a server); "
              "ladder, each step adds one part to the previous: hb = heartbeat only "
              "(_state.parts selector/gc_hook False, sentinel/faulthandler/native False); "
              "selector = + selector wrapper (parking, GIL hand-off); gc = + gc.callbacks "
              "hook; sentinel = + sentinel process; faulthandler = + faulthandler layer "
              "(needs the sentinel); metrics = + metrics server (native still off); "
              "defaults = install() at defaults")
        ratios = self._corun("1c. components (asyncio): aiohttp, CPU/request X / plain",
                             ["--variant", "plain"],
                             [(v, ["--variant", v]) for v in ["ref", "import", *ladder]],
                             self.a.components_rounds, {"defaults": "<= 1.01 and <= ref"})
        prev = "plain"
        print("   step by step (median of the per-round differences, points of CPU/request):")
        for v in ladder:
            base = ratios[prev] if prev in ratios else [1.0] * len(ratios[v])
            d = [x - y for x, y in zip(ratios[v], base, strict=True)]
            print(f"   {prev:>13} -> {v:<13} {statistics.median(d) * 100:+.2f}")
            prev = v

    # -- 1d ------------------------------------------------------------------
    def round_cost(self) -> None:
        """The monitor's own CPU beside a saturated loop on one core: the watchdog's
        threads and the sentinel, against the reference heartbeat thread. Unlike a
        co-run ratio (noise +-2 points) this is the kernel's count of the monitor's
        run time, steady to a few percent: the figure to push down."""
        a = self.a
        rounds, seconds = a.round_rounds, 4.0
        print(f"\n## 1d. the monitor's own CPU beside a saturated loop: 50 tasks x "
              f"sleep(0), loop and monitor pinned to one CPU, {seconds:g} s measured, "
              f"{rounds} interleaved rounds (scripts/_bench_round.py)")
        cpu = ["taskset", "-c", str(self.server_cpu)] if self.server_cpu is not None else []
        got: dict[str, list[dict[str, float]]] = {"ref": [], "defaults": []}
        for i in range(rounds):
            order = ["ref", "defaults"] if i % 2 == 0 else ["defaults", "ref"]
            for v in order:
                out = subprocess.run([*cpu, PY, str(HERE / "_bench_round.py"), v, f"{seconds:g}"],
                                     capture_output=True, text=True, timeout=60, env=Child.env)
                line = [x for x in out.stdout.splitlines() if x.startswith("{")]
                if not line:
                    raise RuntimeError(f"_bench_round.py {v}: {out.stderr.strip()[-300:]}")
                got[v].append(json.loads(line[-1]))
        med = {v: statistics.median(r["monitor_ms_per_s"] for r in got[v]) for v in got}
        wakes = {v: statistics.median(r["monitor_wakeups_per_s"] for r in got[v]) for v in got}
        per_round = statistics.median(1000 * r["monitor_ms_per_s"] / r["rounds_per_s"]
                                      for r in got["defaults"] if r["rounds_per_s"])
        for v, label in (("ref", "40-line reference"), ("defaults", "freezewatch defaults")):
            runs = ", ".join(f"{r['monitor_ms_per_s']:.2f}" for r in got[v])
            print(f"   {label:>21}: {med[v]:.2f} ms/s of CPU, {wakes[v]:.1f} wake-ups/s "
                  f"(runs: {runs})")
        print(f"   freezewatch: {per_round:.0f} us of CPU per watchdog round (watchdog, "
              f"sentinel and events threads together), {med['defaults'] / med['ref']:.1f}x "
              f"the reference; each ms/s is 0.1 point of a co-run ratio")
        self.rows.append(Row("1d. monitor CPU beside a saturated loop, ref",
                             f"{med['ref']:.2f} ms/s", "-", None))
        self.rows.append(Row("1d. monitor CPU beside a saturated loop, defaults",
                             f"{med['defaults']:.2f} ms/s ({per_round:.0f} us/round)",
                             "(no target)", None))

    # -- 1b ------------------------------------------------------------------
    def overhead_micro(self) -> None:
        a = self.a
        total = a.micro_total
        print(f"\n## 1b. pure loop: 100 tasks x await asyncio.sleep(0), {total:,} in total "
              f"({a.micro_rounds} rounds)")
        where = (f"pinned to CPU {self.server_cpu}" if self.server_cpu is not None
                 else "unpinned")
        print(f"   3 processes per round (plain A, watched W, plain B) started together, {where}; "
              f"CPU time of the run (schedstat, all threads + helper processes)")
        wr: list[float] = []
        cr: list[float] = []
        extra_cpu: list[float] = []
        walls: list[float] = []
        rng = random.Random(11)
        for r in range(a.micro_rounds):
            order = ["A", "W", "B"]
            rng.shuffle(order)
            with self.children() as kids:
                procs: dict[str, Child] = {}
                for role in order:
                    extra = (["--watch", "--dump-dir", self.dump_dir("micro")]
                             if role == "W" else [])
                    procs[role] = Child(["micro", "--total", str(total),
                                         *self.cpu_args(self.server_cpu), *extra], self.log)
                    kids.append(procs[role])
                time.sleep(1.0)  # imports done in all three
                for role in order:
                    procs[role].send("go")
                res = {role: json.loads(" ".join(procs[role].expect("result", 120)[1:]))
                       for role in order}
            cpu = {role: float(res[role]["cpu"]) for role in order}
            wr.append(cpu["W"] / cpu["A"])
            cr.append(cpu["B"] / cpu["A"])
            extra_cpu.append((cpu["W"] - cpu["A"]) / float(res["W"]["wall"]) * 1e3)
            walls.append(float(res["W"]["wall"]))
            print(f"   round {r + 1}: CPU s  A {cpu['A']:.3f}  W {cpu['W']:.3f}  "
                  f"B {cpu['B']:.3f}   W/A {pct(wr[-1] - 1)}  B/A {pct(cr[-1] - 1)}   "
                  f"W wall {walls[-1]:.2f} s, extra {extra_cpu[-1]:.1f} ms per wall second")
        w = statistics.median(wr) - 1
        c = statistics.median(cr) - 1
        xc = statistics.median(extra_cpu)
        print(f"   median W/A {pct(w)};  control B/A {pct(c)};  W's extra CPU {xc:.1f} ms per "
              f"wall second (3 processes share one core, so a run lasts ~3x its CPU time and "
              f"per-second costs count ~3x)")
        self.rows.append(Row("1b. sleep(0) x 1M, CPU W / plain",
                             f"{1 + w:.3f} (control {1 + c:.3f}; {xc:.1f} ms/s)",
                             "<= 1.01", w <= 0.01))

    # -- 2 -------------------------------------------------------------------
    def idle(self) -> None:
        a = self.a
        print(f"\n## 2. idle aiohttp server: CPU per second of the whole process tree "
              f"(server + sentinel), watched at defaults vs plain, {a.idle_rounds} windows of "
              f"{a.idle:g} s (all four servers over the same windows), unpinned; medians")
        with self.children() as kids:
            servers: dict[str, Child] = {}
            for loop in ("asyncio", "uvloop"):
                for v in ("plain", "defaults"):
                    servers[f"{loop}/{v}"] = Child(
                        ["server", "--loop", loop, "--variant", v, "--dump-dir",
                         self.dump_dir("idle")], self.log)
            kids += servers.values()
            for c in servers.values():
                c.expect("port")
            time.sleep(2.0)  # start-up settled
            names: dict[int, str] = {}
            for c in servers.values():
                c.send("threads")
                names.update({int(t): n for t, n in
                              json.loads(" ".join(c.expect("threads")[1:])).items()})
            # per window: {server key: {(pid, tid): (ns, slices)}} deltas, per second
            windows: list[tuple[float, dict[str, dict[tuple[int, int], tuple[int, int]]]]] = []
            for _ in range(a.idle_rounds):
                c0 = {k: _threads_of_tree(c.pid) for k, c in servers.items()}
                t0 = time.monotonic()
                time.sleep(a.idle)
                c1 = {k: _threads_of_tree(c.pid) for k, c in servers.items()}
                dt = time.monotonic() - t0
                windows.append((dt, {k: {t: (r - c0[k].get(t, (0, 0))[0],
                                             n - c0[k].get(t, (0, 0))[1])
                                         for t, (r, n) in c1[k].items()} for k in c1}))
            comm = {pid: _comm(pid) for _, w in windows for k in w for pid, _t in w[k]}
        for loop in ("asyncio", "uvloop"):
            root = servers[f"{loop}/defaults"].pid

            def per_s(key: str, keep: Callable[[int, int], bool]) -> list[tuple[float, float]]:
                out = []
                for dt, w in windows:
                    sel = [v for (pid, tid), v in w[key].items() if keep(pid, tid)]
                    out.append((sum(v[0] for v in sel) / dt / 1e6, sum(v[1] for v in sel) / dt))
                return out

            def med(xs: list[tuple[float, float]]) -> tuple[float, float, str]:
                ms = [x for x, _ in xs]
                return (statistics.median(ms), statistics.median(n for _, n in xs),
                        f"{min(ms):.3f}-{max(ms):.3f}")

            plain = med(per_s(f"{loop}/plain", lambda p, t: True))
            tree = [(x - y, n - m) for (x, n), (y, m) in
                    zip(per_s(f"{loop}/defaults", lambda p, t: True),
                        per_s(f"{loop}/plain", lambda p, t: True), strict=True)]
            diff = med(tree)
            server = med(per_s(f"{loop}/defaults", lambda p, t, r=root: p == r))
            sentinel = med(per_s(f"{loop}/defaults", lambda p, t, r=root: p != r))
            print(f"   {loop}: whole tree {diff[0]:.3f} ms/s over plain (windows {diff[2]}; "
                  f"{diff[1]:.1f} extra wake-ups/s; plain itself {plain[0]:.3f} ms/s)   "
                  f"server {server[0]:.3f} ms/s ({server[1]:.1f} wake-ups/s)   sentinel "
                  f"{sentinel[0]:.3f} ms/s ({sentinel[1]:.1f} wake-ups/s)")
            threads = sorted({t for _, w in windows for t in w[f"{loop}/defaults"]})
            for pid, tid in threads:
                m = med(per_s(f"{loop}/defaults", lambda p, t, x=(pid, tid): (p, t) == x))
                if m[0] == 0.0 and m[1] == 0.0:
                    continue
                what = (names.get(tid, "?") if pid == root else
                        "sentinel" if "_sentinel_main" in comm.get(pid, "") else
                        comm.get(pid, "?"))
                print(f"     {'server' if pid == root else 'child '} {pid}/{tid} {what:<22} "
                      f"{m[0]:.3f} ms/s  {m[1]:5.1f} wake-ups/s  "
                      f"{m[0] * 1e3 / m[1] if m[1] else 0.0:6.0f} us per wake-up")
            self.rows.append(Row(f"2. idle, whole tree - plain ({loop})",
                                 f"{diff[0]:.3f} ms/s ({diff[1]:.1f} extra wake-ups/s)",
                                 "<= 0.3 ms/s", diff[0] <= 0.3))
            self.rows.append(Row(f"2. idle, sentinel alone ({loop})",
                                 f"{sentinel[0]:.3f} ms/s ({sentinel[1]:.1f} wake-ups/s)",
                                 "(part of the tree)", None))

    # -- 3 -------------------------------------------------------------------
    def latency(self, native: bool, n: int) -> None:
        label = "native ON (py-spy runs after the first write)" if native else "native=False"
        print(f"\n## 3. detection latency: {n} freezes of {1.5 * THRESHOLD:g} s, threshold "
              f"{THRESHOLD:g} s, interval {INTERVAL:g} s, {label}")
        d = self.dump_dir("latency-native" if native else "latency")
        poller = DumpPoller(d)
        poller.start()
        blocks: list[tuple[float, float]] = []
        with self.children() as kids:
            # With py-spy the watchdog is busy for a while after each dump: longer gaps.
            gap = 1.5 if native else 0.3
            app = Child(["freezes", "--n", str(n), "--threshold", str(THRESHOLD),
                         "--block", str(1.5 * THRESHOLD), "--gap", str(gap), "--dump-dir", d,
                         *(["--native"] if native else [])], self.log,
                        pyopts=("-X", "faulthandler"))
            kids.append(app)
            while True:
                parts = app.expect("block" if len(blocks) < n else "done", 60)
                if parts[0] == "done":
                    break
                blocks.append((float(parts[2]), float(parts[3])))
        time.sleep(0.05)
        poller.halt()
        dumps = sorted(poller.seen.items(), key=lambda kv: kv[1][0])
        lat: list[float] = []
        detect: list[float] = []
        write: list[float] = []
        missed = 0
        for i, (t_mono, t_wall) in enumerate(blocks):
            end = blocks[i + 1][0] if i + 1 < len(blocks) else math.inf
            hit = next(((nm, s) for nm, s in dumps if t_mono <= s[0] < end), None)
            if hit is None:
                missed += 1
                continue
            name, (seen_mono, seen_wall) = hit
            lat.append(seen_mono - t_mono - THRESHOLD)
            with contextlib.suppress(Exception):
                doc = json.loads(Path(d, name).read_text())
                detect.append(float(doc["detected_at"]) - t_wall - THRESHOLD)
                write.append(seen_wall - float(doc["detected_at"]))
        if not lat:
            raise RuntimeError("no dump seen for any injected freeze")
        ms = [x * 1e3 for x in lat]
        p50, p99, mx = statistics.median(ms), quantile(ms, 0.99), max(ms)
        print(f"   block start -> .json exists, minus threshold (ms): p50 {p50:.1f}  "
              f"p99 {p99:.1f}  max {mx:.1f}  min {min(ms):.1f}   missed {missed}/{len(blocks)}")
        if detect and write:
            print(f"   of which: detection (detected_at - start - threshold) p50 "
                  f"{statistics.median(detect) * 1e3:.1f} ms, max {max(detect) * 1e3:.1f} ms; "
                  f"capture + write p50 {statistics.median(write) * 1e3:.1f} ms, "
                  f"max {max(write) * 1e3:.1f} ms")
        target = (INTERVAL + 0.05) * 1e3
        self.rows.append(Row(f"detection latency p99 ({label.split(' (')[0]})",
                             f"{p99:.0f} ms (p50 {p50:.0f}, max {mx:.0f}; missed {missed})",
                             f"<= {target:.0f} ms", p99 <= target and missed == 0))

    # -- 4 -------------------------------------------------------------------
    def capture(self) -> None:
        a = self.a
        sizes = a.capture_sizes
        print(f"\n## 4. capture cost: tasks awaiting in 6 coroutine shapes, native=False, "
              f"{a.capture_reps} freeze(s) per size")
        print("   capture = detected_at -> .json exists (snapshot + render + write both files);"
              " e2e = block start -> .json exists, minus threshold")
        d = self.dump_dir("capture")
        poller = DumpPoller(d)
        poller.start()
        results: dict[int, list[tuple[float, float, int, int, int, int]]] = {s: [] for s in sizes}
        with self.children() as kids:
            # -X faulthandler: a crash of the worker leaves its Python stacks in the log.
            app = Child(["capture", "--sizes", ",".join(map(str, sizes)), "--reps",
                         str(a.capture_reps), "--threshold", str(THRESHOLD), "--dump-dir", d],
                        self.log, pyopts=("-X", "faulthandler"))
            kids.append(app)
            for size in sizes:
                for _ in range(a.capture_reps):
                    known = set(poller.seen)
                    app.send("next")
                    parts = app.expect("block", 120)
                    t_mono, t_wall = float(parts[2]), float(parts[3])
                    # Growing to N tasks can itself stall the loop past the threshold:
                    # only a dump detected after this block started is this block's.
                    name = None
                    deadline = time.monotonic() + 60
                    while name is None and time.monotonic() < deadline:
                        cand = poller.wait_new(known, deadline - time.monotonic())
                        if cand is None:
                            break
                        known.add(cand)
                        with contextlib.suppress(Exception):
                            doc = json.loads(Path(d, cand).read_text())
                            if float(doc["detected_at"]) >= t_wall:
                                name = cand
                    app.send("go")  # end the freeze
                    app.expect("released", 30)
                    if name is None:
                        raise RuntimeError(f"no dump within 60 s at {size} tasks")
                    seen_mono, seen_wall = poller.seen[name]
                    path = Path(d, name)
                    doc = json.loads(path.read_text())
                    jsize = path.stat().st_size
                    tsize = path.with_suffix(".txt").stat().st_size
                    results[size].append((seen_wall - float(doc["detected_at"]),
                                          seen_mono - t_mono - THRESHOLD, jsize, tsize,
                                          int(doc.get("task_count") or sum(
                                              int(g.get("count", 1)) for g in doc["tasks"])),
                                          len(doc["tasks"])))
                    self._wait_duration(path)  # the freeze's end rewrite is done
            app.expect("done", 30)
        poller.halt()
        for size in sizes:
            rs = results[size]
            cap = statistics.median(r[0] for r in rs)
            e2e = statistics.median(r[1] for r in rs)
            jsz = max(r[2] for r in rs)
            tsz = max(r[3] for r in rs)
            print(f"   {size:>7,} tasks: capture {cap:.3f} s (runs: "
                  f"{', '.join(f'{r[0]:.3f}' for r in rs)})  e2e {e2e:.3f} s   .json "
                  f"{jsz / 1e3:.1f} kB  .txt {tsz / 1e3:.1f} kB   tasks in dump "
                  f"{rs[0][4]:,} in {rs[0][5]} groups")
            limit = {10_000: 0.25, 100_000: 3.0}.get(size)
            self.rows.append(Row(
                f"capture + write, {size:,} tasks", f"{cap:.3f} s",
                f"<= {limit:g} s" if limit else "(no target)",
                (cap <= limit) if limit else None))
            self.rows.append(Row(f"dump size, {size:,} tasks",
                                 f"{jsz / 1e3:.0f} kB json, {tsz / 1e3:.0f} kB txt",
                                 "<= 1 MB each", max(jsz, tsz) <= 1_000_000))

    @staticmethod
    def _wait_duration(path: Path, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if "duration" in json.loads(path.read_text()):
                    return
            time.sleep(0.05)

    # -- 5 -------------------------------------------------------------------
    def watch_cost(self) -> None:
        a = self.a
        print(f"\n## 5. watch() cost: `async with freezewatch.watch('x')` vs an empty "
              f"`async with` of a trivial class, {a.watch_n:,} per round, {a.watch_rounds} "
              f"interleaved rounds, on a watched loop")
        with self.children() as kids:
            app = Child(["watchcost", "--n", str(a.watch_n), "--rounds", str(a.watch_rounds),
                         "--dump-dir", self.dump_dir("watchcost"),
                         *self.cpu_args(self.server_cpu)], self.log)
            kids.append(app)
            res = json.loads(" ".join(app.expect("result", 120)[1:]))
        diff = statistics.median(res["diff"])
        print(f"   ns/call: watch() {res['median_watch']:.0f}, trivial CM {res['median_null']:.0f}"
              f", difference (median of rounds) {diff:.0f}")
        print(f"   watch() on an unwatched loop (the no-op path) {res['unwatched']:.0f} ns; "
              f"@watch decorated call {res['decorated']:.0f} ns (+"
              f"{res['decorated'] - res['plain_call']:.0f} over a plain await); ASGI "
              f"middleware per request {res['asgi_mw']:.0f} ns (+"
              f"{res['asgi_mw'] - res['asgi_bare']:.0f} over the bare app)")
        self.rows.append(Row("ASGI middleware per request, extra over the bare app",
                             f"{res['asgi_mw'] - res['asgi_bare']:.0f} ns", "(no target)", None))
        self.rows.append(Row("watch() enter+exit, extra over empty async with",
                             f"{diff:.0f} ns ({res['median_watch']:.0f} vs "
                             f"{res['median_null']:.0f})", "a few us (issue 5)", diff <= 5000))

    # -- 6 -------------------------------------------------------------------
    def waits(self) -> None:
        a = self.a
        print(f"\n## 6. wait-age sample (the watchdog's WaitSampler, between freezes) at "
              f"{', '.join(f'{n:,}' for n in a.wait_sizes)} tasks, read from another thread")
        with self.children() as kids:
            app = Child(["waits", "--sizes", ",".join(map(str, a.wait_sizes))], self.log)
            kids.append(app)
            res = json.loads(" ".join(app.expect("result", 300)[1:]))
        for n in a.wait_sizes:
            r = res[str(n)]
            every = max(res["sample_every"], r["steady"] / 1000 / res["max_duty"])
            print(f"   {n:>7,} tasks: sample {r['steady']:.1f} ms steady (first "
                  f"{r['first']:.1f} ms, {r['steady'] * 1e3 / n:.2f} us/task) -> next sample "
                  f"after {every:.1f} s (duty <= {res['max_duty']:.0%}); dump grouping "
                  f"+{r['aged'] - r['plain']:.1f} ms for ages ({r['plain']:.0f} ms without)")
            self.rows.append(Row(f"wait-age sample, {n:,} tasks", f"{r['steady']:.1f} ms",
                                 "(no target)", None))

    # -- all -----------------------------------------------------------------
    def run(self) -> int:
        a = self.a
        phases: list[tuple[str, Callable[[], None]]] = [
            ("corun", self.corun),
            ("components", self.components),
            ("round", self.round_cost),
            ("micro", self.overhead_micro),
            ("idle", self.idle),
            ("latency", lambda: self.latency(False, a.freezes)),
            ("capture", self.capture),
            ("watch", self.watch_cost),
            ("waits", self.waits),
        ]
        if a.native:
            phases.insert(5, ("latency-native", lambda: self.latency(True, a.native_freezes)))
        started = time.monotonic()
        load1 = os.getloadavg()[0]
        print(f"freezewatch bench: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"load average {load1:.2f} at start; temp dir {self.tmp}")
        print(f"   tree: {_tree_state()}; freezewatch defaults: {_defaults()}")
        for name, fn in phases:
            if (name not in a.only) if a.only else (name in OPT_IN):
                continue
            try:
                fn()
            except Exception as e:  # one phase failing must not hide the others' figures
                print(f"   !! {name} failed: {type(e).__name__}: {e}; end of the workers' log:")
                self.log.flush()
                with contextlib.suppress(OSError), open(self.log.name, errors="replace") as f:
                    for line in f.readlines()[-12:]:
                        print(f"   | {line.rstrip()}")
                self.rows.append(Row(name, f"FAILED: {e}", "", None))
        took = time.monotonic() - started
        self.summary(took, load1)
        self.log.close()
        if not a.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return 0

    def summary(self, took: float, load1: float) -> None:
        print(f"\n## Summary ({took:.0f} s; load average {load1:.2f} at start, "
              f"{os.getloadavg()[0]:.2f} at end — other work on this machine adds noise)")
        w1 = max(len(r.figure) for r in self.rows)
        w2 = max(len(r.value) for r in self.rows)
        w3 = max(len(r.target) for r in self.rows)
        print(f"{'figure':<{w1}}  {'value':<{w2}}  {'target':<{w3}}  verdict")
        for r in self.rows:
            verdict = "met" if r.met else ("NOT MET" if r.met is False else "-")
            print(f"{r.figure:<{w1}}  {r.value:<{w2}}  {r.target:<{w3}}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (about half the time)")
    ap.add_argument("--only", type=lambda s: s.split(","), default=None,
                    help="comma list of: corun,components,round,micro,idle,latency,latency-native,"
                         "capture,watch,waits (components and waits run only when named)")
    ap.add_argument("--native", action="store_true",
                    help="also measure detection latency with native (py-spy) on")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (dumps, worker log)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="co-run rounds (default 3; --only components: 5)")
    ap.add_argument("--window", type=float, default=None, help="seconds measured per round")
    ap.add_argument("--malloc", default="fixed", choices=["fixed", "default"],
                    help="glibc malloc thresholds of the measured processes (see MALLOC_TUNABLES)")
    ap.add_argument("--idle", type=float, default=None,
                    help="idle window, s (default 10: a whole idle heartbeat period)")
    ap.add_argument("--idle-rounds", type=int, default=None, help="idle windows (default 3)")
    ap.add_argument("--conns", type=int, default=None, help="connections per load generator")
    ap.add_argument("--load-cpu", default="other", choices=["other", "same", "any"],
                    help="wrk on the other CPU than the servers (default), the same, "
                         "or unpinned")
    a = ap.parse_args(argv)
    q = a.quick
    a.corun_rounds = a.rounds or (2 if q else 3)
    a.components_rounds = a.rounds or (3 if q else 5)
    a.round_rounds = 2 if q else 3
    a.window = a.window or (2.0 if q else 3.0)
    a.warmup = 1.0
    a.conns = a.conns or 16
    a.micro_total = 1_000_000
    a.micro_rounds = 3
    a.wait_sizes = [10_000, 100_000]
    a.idle = a.idle or 10.0
    a.idle_rounds = a.idle_rounds or (2 if q else 3)
    a.freezes = 15 if q else 30
    a.native_freezes = 10
    a.capture_sizes = [1000, 10_000, 100_000]
    a.capture_reps = 1 if q else 3
    a.watch_n = 50_000 if q else 100_000
    a.watch_rounds = 5 if q else 9
    return Bench(a).run()


if __name__ == "__main__":
    sys.exit(main())
