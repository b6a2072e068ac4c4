#!/usr/bin/env python3
"""Cost of the GIL layers (faulthandler signalled by the sentinel, py-spy sentinel).

    python scripts/bench_gil.py [--rounds 7] [--total 1000000]

Same method as ``make bench``'s loop micro-benchmark: each round starts three
processes side by side, pinned to the same core, and runs in each 100 tasks x
``await asyncio.sleep(0)`` (``--total`` steps in all) at the same moment:

    layers on    freezewatch.install() at defaults (faulthandler + sentinel on)
    layers off   freezewatch.install(faulthandler=False, sentinel=False)
    none         freezewatch not imported

Each reports the CPU time of its whole process tree (all threads, and the
sentinel process: it is part of what the layers cost) for the run. Prints
the median CPU per setup and the median of the per-round ratios (>= 0.99:
no measurable overhead), the sentinel's own CPU, and how many faulthandler
captures and dumps the busy, healthy runs produced (should be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_proc import delta, tree_cpu

SETUPS = ("layers on", "layers off", "none")


async def _child(setup: str, total: int, dump_dir: str) -> dict[str, float]:
    wd = None
    if setup != "none":
        import freezewatch
        from freezewatch import _state

        on = setup == "layers on"
        freezewatch.install(dump_dir=dump_dir, faulthandler=on, sentinel=on)
        await asyncio.sleep(0.5)  # the watchdog ticked, the sentinel is up
        wd = _state.watchdog
    else:
        await asyncio.sleep(0.5)
    print("@@ ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def spin(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    me = os.getpid()
    cpu0, wall0 = tree_cpu(me), time.perf_counter()
    await asyncio.gather(*(spin(total // 100) for _ in range(100)))
    cpu1, wall1 = tree_cpu(me), time.perf_counter()
    out = {"cpu": delta(cpu0, cpu1)[0] / 1e9, "wall": wall1 - wall0,
           "helpers": delta(cpu0, cpu1, only=-me)[0] / 1e9}
    if wd is not None:
        out["captures"] = wd.gil.captures
        out["sentinel"] = 1.0 if wd.gil.sentinel.alive() else 0.0
        out["signal_layer"] = 1.0 if wd.gil.signal_dump.active else 0.0
    out["dumps"] = len(list(Path(dump_dir).glob("*.json")))
    return out


def _round(total: int, core: int, tmp: str, r: int) -> dict[str, dict[str, float]]:
    procs: dict[str, subprocess.Popen[str]] = {}
    order = SETUPS if r % 2 == 0 else tuple(reversed(SETUPS))
    for s in order:
        d = os.path.join(tmp, f"{r}-{s.replace(' ', '-')}")
        procs[s] = subprocess.Popen(
            [sys.executable, __file__, "--child", s, "--total", str(total), "--dump-dir", d],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    for p in procs.values():
        assert p.stdout is not None and p.stdout.readline().startswith("@@ ready")
    for p in procs.values():  # go, all three at once
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    res = {}
    for s, p in procs.items():
        assert p.stdout is not None
        res[s] = json.loads(p.stdout.readline().split(" ", 1)[1])
        p.wait(30)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--total", type=int, default=1_000_000)
    ap.add_argument("--child", choices=SETUPS)
    ap.add_argument("--dump-dir", default="")
    a = ap.parse_args()
    if a.child:
        out = asyncio.run(_child(a.child, a.total, a.dump_dir))
        print("@@", json.dumps(out), flush=True)
        return
    core = max(os.sched_getaffinity(0))
    print(f"GIL layers cost: 100 tasks x sleep(0), {a.total:,} steps per run, three "
          f"processes side by side on core {core}, {a.rounds} rounds")
    rows: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            rows.append(_round(a.total, core, tmp, r))
            on, off, none = (rows[-1][s]["cpu"] for s in SETUPS)
            print(f"  round {r + 1}: CPU on {on:.3f} s, off {off:.3f} s, none {none:.3f} s")
    for s in SETUPS:
        cpu = statistics.median(x[s]["cpu"] for x in rows)
        print(f"{s:11s} median CPU {cpu:.3f} s")
    off_on = statistics.median(x["layers off"]["cpu"] / x["layers on"]["cpu"] for x in rows)
    none_on = statistics.median(x["none"]["cpu"] / x["layers on"]["cpu"] for x in rows)
    print(f"ratio off/on  CPU {off_on:.3f}  (median of rounds; >= 0.99: no measurable cost "
          "of the GIL layers)")
    print(f"ratio none/on CPU {none_on:.3f}  (freezewatch at defaults vs not installed)")
    helpers = statistics.median(x["layers on"]["helpers"] for x in rows)
    print(f"sentinel CPU during a run: median {helpers * 1000:.1f} ms")
    caps = sum(int(x[s].get("captures", 0)) for x in rows for s in SETUPS)
    dumps = sum(int(x[s]["dumps"]) for x in rows for s in SETUPS)
    up = all(x["layers on"].get("sentinel") and x["layers on"].get("signal_layer") for x in rows)
    print(f"faulthandler captures: {caps}, dumps: {dumps} (healthy runs: both should be 0); "
          f"sentinel and signal layer up in every 'layers on' run: {up}")


if __name__ == "__main__":
    main()
