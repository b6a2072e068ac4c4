#!/usr/bin/env python3
"""How soon the sentinel's dump of a GIL-held freeze is on disk, and what the sentinel costs idle.

    python scripts/bench_gil_dump.py [--runs 20] [--threshold 0.5] [--idle 10]

Latency: each run starts an application (``freezewatch.install(threshold=...)``)
that, once the sentinel is up, enters a regex holding the GIL for about
``--hold`` seconds on its loop thread, writing the wall time just before it to
a marker file. This process polls the dump directory every 2 ms from outside;
the latency is the dump file's modification time (the sentinel's write: the
file is linked into place, so its mtime is the write) minus that start, in
seconds and as "past the threshold". The application is SIGKILLed once the
dump is seen. Prints p50 and max over the runs.

Idle cost: an application that installs freezewatch and idles ``--idle``
seconds; the sentinel's CPU time over that stretch (/proc/<pid>/schedstat,
in nanoseconds; utime + stime of /proc/<pid>/stat, in clock ticks, where
there is none), in ms of CPU per second.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_APP = """
import asyncio, re, sys, time
import freezewatch
mode, dump_dir, threshold, n, marker = sys.argv[1:6]
async def main():
    freezewatch.install(threshold=float(threshold), dump_dir=dump_dir)
    await asyncio.sleep(1.0)
    if mode == "idle":
        print("@@ idle", flush=True)
        await asyncio.sleep(float(n))
        return
    with open(marker, "w") as f:
        f.write(repr(time.time()))
    re.match(r"(a+)+$", "a" * int(n) + "b")
asyncio.run(main())
"""
_EVIL = re.compile(r"(a+)+$")


def _n_for(seconds: float) -> int:
    n, took = 16, 0.0
    while took < 0.05 and n < 28:
        n += 1
        t0 = time.perf_counter()
        _EVIL.match("a" * n + "b")
        took = time.perf_counter() - t0
    return n + math.ceil(math.log2(seconds / took))


def _one(tmp: Path, i: int, threshold: float, n: int) -> float | None:
    dump_dir, marker = tmp / f"d{i}", tmp / f"m{i}"
    p = subprocess.Popen([sys.executable, "-c", _APP, "freeze", str(dump_dir), str(threshold),
                          str(n), str(marker)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = list(dump_dir.glob("freeze-*.json")) if dump_dir.exists() else []
            if found:
                mtime = found[0].stat().st_mtime
                return mtime - float(marker.read_text())
            time.sleep(0.002)
        return None
    finally:
        p.kill()
        p.wait()


def _sentinel_of(pid: int) -> int | None:
    for task in Path("/proc").glob("[0-9]*"):
        try:
            stat = (task / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and \
                    "_sentinel_main" in (task / "cmdline").read_text():
                return int(task.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def _cpu(pid: int) -> float:
    """Seconds on a CPU: schedstat (nanoseconds) where there is one, else utime + stime."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cost(tmp: Path, seconds: float) -> float:
    p = subprocess.Popen([sys.executable, "-c", _APP, "idle", str(tmp / "idle"), "1.0",
                          str(seconds + 2), "-"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().startswith("@@ idle")
        time.sleep(0.5)
        sp = _sentinel_of(p.pid)
        assert sp is not None, "no sentinel process found"
        c0, t0 = _cpu(sp), time.monotonic()
        time.sleep(seconds)
        c1, t1 = _cpu(sp), time.monotonic()
    finally:
        p.kill()
        p.wait()
    return (c1 - c0) / (t1 - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--hold", type=float, default=4.0, help="seconds the regex holds the GIL")
    ap.add_argument("--idle", type=float, default=10.0)
    a = ap.parse_args()
    n = _n_for(a.hold)
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"GIL-held freeze (regex, ~{a.hold:g} s), threshold {a.threshold:g} s, "
          f"{a.runs} runs; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        lat = []
        for i in range(a.runs):
            x = _one(Path(tmp), i, a.threshold, n)
            print(f"  run {i + 1}: " + (f"{x:.3f} s" if x is not None else "no dump"))
            if x is not None:
                lat.append(x)
        if lat:
            p50, mx = statistics.median(lat), max(lat)
            print(f"freeze start -> sentinel's dump on disk: p50 {p50:.3f} s, max {mx:.3f} s "
                  f"(p50 {p50 - a.threshold:+.3f} s, max {mx - a.threshold:+.3f} s past the "
                  f"threshold); {a.runs - len(lat)} run(s) without a dump")
        cost = idle_cost(Path(tmp), a.idle)
        print(f"sentinel idle cost: {cost:.3f} ms of CPU per second (over {a.idle:g} s idle)")


if __name__ == "__main__":
    main()
