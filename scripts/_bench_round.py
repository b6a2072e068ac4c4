"""What the monitor itself costs on a saturated loop (``scripts/bench.py --only round``).

    python _bench_round.py VARIANT SECONDS

A loop kept saturated (50 tasks of ``await asyncio.sleep(0)``) for SECONDS,
monitored by VARIANT: ``ref`` (the 40-line reference heartbeat of
``_bench_worker``) or ``defaults`` (``freezewatch.install()``). Prints one JSON
line: the CPU ms per second and wake-ups per second of every thread but the
loop's, of the child processes (the sentinel), the loop thread's own CPU,
and freezewatch's watchdog rounds. CPU and wake-ups come from schedstat
(``/proc/<pid>/task/<tid>/schedstat``: run time, time slices), so they are
the kernel's count, not a sample. Pin it to one CPU (bench.py does) so the
loop and its monitor share a core, as on a busy server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _threads(pid: int | str) -> dict[str, tuple[float, int]]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:
            continue
        out[f"{pid}/{tid}"] = (int(fields[0]) / 1e9, int(fields[2]))
    return out


def _children() -> list[int]:
    kids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            kids += [int(p) for p in Path(f"/proc/self/task/{task}/children").read_text().split()]
    return kids


def _sample(loop_tid: str) -> tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]:
    own = _threads(os.getpid())
    loop = {k: v for k, v in own.items() if k.endswith(f"/{loop_tid}")}
    others = {k: v for k, v in own.items() if k not in loop}
    for kid in _children():
        others.update(_threads(kid))
    return loop, others


def _per_second(a: dict[str, tuple[float, int]], b: dict[str, tuple[float, int]],
                wall: float) -> tuple[float, float]:
    cpu = sum(v[0] - a.get(k, (0.0, 0))[0] for k, v in b.items())
    slices = sum(v[1] - a.get(k, (0.0, 0))[1] for k, v in b.items())
    return 1000 * cpu / wall, slices / wall


def _rounds(handle: object) -> int:
    """The watchdog's rounds so far (0 without freezewatch)."""
    from freezewatch import _state

    return _state.watchdog.rounds if handle is not None and _state.watchdog else 0


async def main(variant: str, seconds: float) -> None:
    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(spin()) for _ in range(50)]  # noqa: F841 (kept alive)
    handle = None
    if variant == "ref":
        from _bench_worker import reference_heartbeat

        reference_heartbeat(asyncio.get_running_loop())
    else:
        import freezewatch

        handle = freezewatch.install()
    await asyncio.sleep(1.0)  # warm-up: the sentinel is up, the first rounds are done
    loop_tid = str(threading.get_native_id())
    loop0, others0 = _sample(loop_tid)
    t0 = time.monotonic()
    r0 = _rounds(handle)
    await asyncio.sleep(seconds)
    wall = time.monotonic() - t0
    loop1, others1 = _sample(loop_tid)
    rounds = None if handle is None else (_rounds(handle) - r0) / wall
    mon_ms, mon_wakes = _per_second(others0, others1, wall)
    loop_ms, _ = _per_second(loop0, loop1, wall)
    print(json.dumps({"variant": variant, "monitor_ms_per_s": mon_ms,
                      "monitor_wakeups_per_s": mon_wakes, "loop_ms_per_s": loop_ms,
                      "rounds_per_s": rounds}), flush=True)
    os._exit(0)  # the loop is saturated on purpose: no orderly shutdown to wait for


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
