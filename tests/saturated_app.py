"""A saturated loop, run as a subprocess by tests/test_saturated.py.

    python saturated_app.py DUMP_DIR asyncio|uvloop RUNS SECONDS [REGEX_SUBJECT_LEN]

Each run is one ``asyncio.run`` / ``uvloop.run`` with freezewatch installed at
its defaults (threshold 0.5, py-spy and the sentinel on) into DUMP_DIR/run-N:
thousands of ``sleep(0)`` tasks plus short callbacks that spend their time in
C (``sum``, ``json.dumps``, ``hashlib``), each turn of the loop well under
the threshold. With REGEX_SUBJECT_LEN the last run ends in a real GIL-held
freeze: the catastrophic regex on the loop thread (the control). One line of
JSON per run on stdout: its turns, callbacks, worst turn, watchdog rounds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
import time

import freezewatch
from freezewatch import _state

EVIL = re.compile(r"(a+)+$")
OBJ = {f"k{i}": [i, str(i), {"x": i * 1.5}] for i in range(150)}
DATA = b"x" * 512
TURN = 0.06
"""Seconds one turn of the loop aims at (calibrated on this machine): well under 0.5."""


async def nap(j: int, calls: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for k in range(10):
        if j % 10 == 0:  # one task in ten adds a short callback each turn
            loop.call_soon(work, j + k, calls)
        await asyncio.sleep(0)


def work(i: int, calls: list[int]) -> None:
    calls[0] += 1
    m = i % 3
    if m == 0:
        sum(range(20000))
    elif m == 1:
        json.dumps(OBJ)
    else:
        hashlib.sha256(DATA).hexdigest()


async def turn(tasks: int, calls: list[int]) -> None:
    """Ten turns of the loop, each running ``tasks`` task steps and tasks/10 callbacks."""
    await asyncio.gather(*(nap(j, calls) for j in range(tasks)))


async def calibrate() -> int:
    """Tasks for turns of about TURN s here (the fastest of three tries)."""
    took = 1.0
    for _ in range(3):
        t0 = time.perf_counter()
        await turn(300, [0])
        took = min(took, max(time.perf_counter() - t0, 1e-4) / 10)
    return max(300, int(300 * TURN / took))


async def main(dump_dir: str, seconds: float, tasks: int,
               subject: str | None) -> dict[str, object]:
    w = freezewatch.install(dump_dir=dump_dir)
    calls = [0]
    worst, turns = 0.0, 0
    last = time.perf_counter()
    end = time.monotonic() + seconds

    async def meter() -> None:  # one resumption a turn: the longest turn of the loop
        nonlocal worst, last, turns
        while time.monotonic() < end:
            now = time.perf_counter()
            worst, last, turns = max(worst, now - last), now, turns + 1
            await asyncio.sleep(0)

    async def evil(subject: str) -> None:  # amid the load: a real GIL-held freeze
        await asyncio.sleep(seconds / 2)
        EVIL.match(subject)  # pin: sat-regex

    m = asyncio.ensure_future(meter())
    e = asyncio.ensure_future(evil(subject)) if subject is not None else None
    rounds0 = _state.watchdog.rounds if _state.watchdog else 0
    while time.monotonic() < end:
        await turn(tasks, calls)
    await m
    rounds = (_state.watchdog.rounds if _state.watchdog else 0) - rounds0
    if e is not None:
        await e
        await asyncio.sleep(1.0)  # the watchdog completes the dump
    return {"turns": turns, "calls": calls[0], "worst_turn": worst, "rounds": rounds,
            "freezes": w.state.freezes, "tasks": tasks}


def run(kind: str, coro: object) -> dict[str, object]:
    if kind == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type,no-any-return]
    return asyncio.run(coro)  # type: ignore[arg-type,no-any-return]


if __name__ == "__main__":
    base, kind, runs, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) > 5 else None
    tasks = run(kind, calibrate())
    for i in range(runs):
        regex = "a" * n + "b" if n is not None and i == runs - 1 else None
        got = run(kind, main(os.path.join(base, f"run-{i}"), secs, tasks, regex))
        freezewatch.uninstall()
        print(json.dumps(got), flush=True)
    os._exit(0)
