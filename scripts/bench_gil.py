#!/usr/bin/env python3
"""Overhead of the GIL layers (faulthandler re-arm + sentinel heartbeat) on a busy loop.

    python scripts/bench_gil.py [ROUNDS]

Each round runs 100 tasks x ``await asyncio.sleep(0)`` for a fixed number of
steps under three setups, interleaved (so drifting machine load hits all of
them alike): freezewatch with both layers on, with both off, and not
installed. Prints the median seconds of each and the ratios (>= 0.99: no
measurable overhead). Also prints the re-arm count and the sentinel's CPU.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time

import freezewatch
from freezewatch import _state

TASKS, STEPS = 100, 1500


async def _work() -> None:
    async def one() -> None:
        for _ in range(STEPS):
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(TASKS)))


def _round(setup: str, dump_dir: str, stats: dict[str, float]) -> float:
    async def main() -> float:
        if setup != "none":
            on = setup == "layers on"
            freezewatch.install(dump_dir=dump_dir, faulthandler=on, sentinel=on)
            await asyncio.sleep(0.3)  # the sentinel is started and the timer armed
        wd = _state.watchdog
        rearms0 = wd.gil.timer.rearms if wd else 0
        t0, c0 = time.perf_counter(), time.process_time()
        await _work()
        took = time.perf_counter() - t0
        stats["_cpu"] = time.process_time() - c0  # this process only: less noise from others
        if wd is not None and setup == "layers on":
            stats["rearms"] += wd.gil.timer.rearms - rearms0
            stats["seconds_on"] += took
            sp = wd.gil.sentinel
            if sp.alive():
                with open(f"/proc/{sp.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                stats["sentinel_cpu"] += (int(fields[11]) + int(fields[12])) / os.sysconf(
                    "SC_CLK_TCK")
                stats["sentinel_life"] += time.monotonic() - stats["_started"]
        return took

    stats["_started"] = time.monotonic()
    took = asyncio.run(main())
    freezewatch.uninstall()
    return took


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    setups = ("layers on", "layers off", "none")
    times: dict[str, list[float]] = {s: [] for s in setups}
    cpus: dict[str, list[float]] = {s: [] for s in setups}
    stats = {"rearms": 0.0, "seconds_on": 0.0, "sentinel_cpu": 0.0, "sentinel_life": 0.0,
             "_started": 0.0, "_cpu": 0.0}
    with tempfile.TemporaryDirectory() as d:
        for i in range(rounds):
            order = setups if i % 2 == 0 else tuple(reversed(setups))
            for s in order:
                times[s].append(_round(s, d, stats))
                cpus[s].append(stats["_cpu"])
    med = {s: statistics.median(v) for s, v in times.items()}
    cpu = {s: statistics.median(v) for s, v in cpus.items()}
    for s in setups:
        print(f"{s:11s} median wall {med[s] * 1000:7.1f} ms, process CPU {cpu[s] * 1000:7.1f} ms"
              f"  (100 tasks x {STEPS} sleep(0), {rounds} rounds)")
    print(f"ratio off/on  wall {med['layers off'] / med['layers on']:.3f}, "
          f"CPU {cpu['layers off'] / cpu['layers on']:.3f}  (>= 0.99: no overhead)")
    print(f"ratio none/on wall {med['none'] / med['layers on']:.3f}, "
          f"CPU {cpu['none'] / cpu['layers on']:.3f}")
    print(f"faulthandler re-arms: {stats['rearms'] / max(stats['seconds_on'], 1e-9):.1f}/s "
          "while busy (threshold 1.0 s)")
    print(f"sentinel CPU: {stats['sentinel_cpu']:.2f} s over {stats['sentinel_life']:.1f} s "
          "of sentinel life (includes its start-up)")


if __name__ == "__main__":
    main()
