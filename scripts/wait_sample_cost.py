"""Cost of one wait-age sample (freezewatch/_snapshot/waits.py) at 10,000 and 100,000 tasks.

The sampler runs on the watchdog thread and holds the GIL while it reads
every task's waiter, so its cost is paid by the whole process. This prints
milliseconds per sample (first sample: every entry new; steady state: every
task still at the same point), the interval the duty-cycle bound then
imposes, and the extra cost the ages add to a dump's task grouping.

    .venv/bin/python scripts/wait_sample_cost.py [N ...]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time

from freezewatch._snapshot import waits
from freezewatch._snapshot.tasks import group_tasks
from freezewatch._snapshot.waits import WaitSampler


async def _leaf(gate: asyncio.Event) -> None:
    await gate.wait()


async def _mid(gate: asyncio.Event) -> None:
    await _leaf(gate)


async def _parked(gate: asyncio.Event, i: int) -> None:
    if i % 2:
        await _mid(gate)  # half wait three frames deep on an Event
    else:
        await asyncio.sleep(3600)  # half on a timer


def _timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def measure(n: int) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()
    tasks = [asyncio.create_task(_parked(gate, i)) for i in range(n)]
    await asyncio.sleep(0.1)  # every task reaches its wait
    sampler = WaitSampler()
    results: dict[str, list[float]] = {}

    def from_watchdog_like_thread() -> None:
        # Sampled from another thread while the loop idles, as the watchdog does.
        first = _timed(lambda: sampler.sample(loop, time.monotonic()), 1)
        steady = _timed(lambda: sampler.sample(loop, time.monotonic()), 5)
        age_of = sampler.age_of(time.monotonic())
        snapshot = list(asyncio.all_tasks(loop))
        plain = _timed(lambda: group_tasks(snapshot, None), 3)
        aged = _timed(lambda: group_tasks(snapshot, None, age_of), 3)
        results.update(first=first, steady=steady, plain=plain, aged=aged)

    await asyncio.to_thread(from_watchdog_like_thread)
    steady = statistics.median(results["steady"])
    interval = max(waits.SAMPLE_EVERY, steady / 1000 / waits.MAX_DUTY)
    print(f"{n:>7,} tasks: sample {steady:7.1f} ms steady (first {results['first'][0]:.1f} ms, "
          f"{steady * 1e6 / n / 1000:.2f} us/task) -> next sample after {interval:.1f} s "
          f"(duty <= {waits.MAX_DUTY:.0%}); dump grouping +"
          f"{statistics.median(results['aged']) - statistics.median(results['plain']):.1f} ms "
          f"for ages ({statistics.median(results['plain']):.0f} ms without)")
    gate.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str]) -> None:
    print(f"Python {sys.version.split()[0]}, switch interval "
          f"{sys.getswitchinterval() * 1000:.0f} ms, thread {threading.current_thread().name}")
    for n in [int(a) for a in argv] or [10_000, 100_000]:
        asyncio.run(measure(n))


if __name__ == "__main__":
    main(sys.argv[1:])
