"""What a loop at 100 % costs with freezewatch watching it, per thread.

    .venv/bin/python scripts/saturation_cost.py [ROUNDS]

100 tasks x 10,000 ``await asyncio.sleep(0)``: the loop calls select(0) on
every iteration, the case where a waiting thread can be starved of the GIL.
Each round runs once plain and once watched, in fresh processes; prints the
wall time, each thread's CPU per second (from /proc schedstat) and the
watchdog's rounds per second (10 expected at the default interval).
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import threading
import time


def _thread_cpu() -> dict[str, float]:
    out = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/schedstat") as f:
                out[t.name] = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError):
            pass
    return out


async def _worker(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _one(watched: bool, dump_dir: str) -> str:
    from freezewatch import _state

    if watched:
        import freezewatch

        freezewatch.install(dump_dir=dump_dir)
    await asyncio.sleep(0.5)
    wd = _state.watchdog
    c0, t0, r0 = _thread_cpu(), time.monotonic(), wd.rounds if wd else 0
    await asyncio.gather(*(_worker(10_000) for _ in range(100)))
    dt = time.monotonic() - t0
    c1 = _thread_cpu()
    per = {k: (c1[k] - c0.get(k, 0.0)) * 1000 / dt for k in c1}
    rounds = ((wd.rounds if wd else 0) - r0) / dt
    return f"{dt:.3f} {per.get('freezewatch-watchdog', 0.0):.1f} {rounds:.1f}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        print(asyncio.run(_one(sys.argv[2] == "1", sys.argv[3])))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    res: dict[bool, list[tuple[float, float, float]]] = {False: [], True: []}
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for _ in range(rounds):
            for watched in (False, True):
                out = subprocess.run(
                    [sys.executable, __file__, "--one", "1" if watched else "0", d],
                    capture_output=True, text=True, check=True).stdout.split()
                res[watched].append((float(out[0]), float(out[1]), float(out[2])))
    plain = statistics.median(r[0] for r in res[False])
    wall = statistics.median(r[0] for r in res[True])
    wd_cpu = statistics.median(r[1] for r in res[True])
    wd_rounds = statistics.median(r[2] for r in res[True])
    print(f"median of {rounds} interleaved rounds: plain {plain:.3f} s, watched {wall:.3f} s "
          f"({(wall / plain - 1) * 100:+.1f} % wall); watchdog thread {wd_cpu:.1f} ms CPU "
          f"per second, {wd_rounds:.1f} rounds per second")


if __name__ == "__main__":
    main()
