"""Helpers for the wait-for graph tests: a real freeze or stall, its dump, its Cause line."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from conftest import assert_contract
from core_support import FAST, Pin, assert_frame_is, dumps, release_when_dumped, run_loop

import freezewatch

STALL_AFTER = 0.4


def freeze_dump(dump_dir: Path, block: Callable[[], object],
                holders: list[tuple[str, Callable[[threading.Event, threading.Event], object]]],
                loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
                ) -> tuple[dict[str, Any], str]:
    """Start each named holder thread, wait until all hold, then block the loop thread
    with ``block()``; holders are released once the freeze dump exists."""
    done = threading.Event()
    threads = []

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.05)
        for name, target in holders:
            ready = threading.Event()
            t = threading.Thread(target=target, args=(ready, done), name=name, daemon=True)
            t.start()
            assert ready.wait(5), f"holder {name} did not start"
            threads.append(t)
        await asyncio.sleep(0.05)  # each holder now sits at its pinned line
        release_when_dumped(dump_dir, done.set)
        block()
        await asyncio.sleep(0.05)

    try:
        run_loop(loop_factory, main)
    finally:
        done.set()
        for t in threads:
            t.join(5)
    return only_dump(dump_dir, "freeze")


def stall_dump(dump_dir: Path, scenario: Callable[[asyncio.Event], Coroutine[Any, Any, Any]],
               waiter: Callable[[], Coroutine[Any, Any, Any]], *, waiter_name: str = "waiter",
               settle: float = 0.05, cancel: bool = False,
               loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
               ) -> tuple[dict[str, Any], str]:
    """Run ``scenario(done)`` (it starts the holders as named tasks and returns them), then a
    task ``waiter_name`` inside ``watch(stall_after=...)`` running ``waiter()``; ``done`` is
    set once the stall dump was written (and, with ``cancel``, every task cancelled)."""

    async def main() -> None:
        handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        done = asyncio.Event()
        started = await scenario(done)
        await asyncio.sleep(settle)

        async def watched() -> None:
            async with freezewatch.watch(waiter_name, stall_after=STALL_AFTER):
                await waiter()

        w = asyncio.create_task(watched(), name=waiter_name)
        for _ in range(400):  # the dump is written just after handle.stalls counts it
            if handle.stalls and dumps(dump_dir, kind="stall"):
                break
            await asyncio.sleep(0.025)
        done.set()
        if cancel:
            for t in [w, *(started or ())]:
                t.cancel()
        await asyncio.wait_for(asyncio.gather(w, *(started or ()), return_exceptions=True), 10)

    run_loop(loop_factory, main)
    return only_dump(dump_dir, "stall")


def only_dump(dump_dir: Path, kind: str) -> tuple[dict[str, Any], str]:
    paths = dumps(dump_dir, kind=kind)
    assert paths, f"no {kind} dump"
    doc = assert_contract(paths[0])
    return doc, paths[0].with_suffix(".txt").read_text()


def cause(txt: str) -> str:
    (line,) = [ln for ln in txt.splitlines() if ln.startswith("Cause:")]
    return line


def assert_holder(doc: dict[str, Any], txt: str, kind: str, name: str, at: Pin, *,
                  on: str, hop: int = 0, certain: bool | None = None,
                  count: int | None = None) -> dict[str, Any]:
    """Hop ``hop`` of waits_for waits on a ``on`` held by the named thread/task at ``at``,
    and the .txt Cause line names that holder."""
    links = doc["waits_for"]
    assert len(links) > hop, links
    link = links[hop]
    assert link["on"]["type"] == on, link["on"]
    hs = [h for h in link["holders"] if h.get(kind) == name or name in h.get("names", ())]
    assert hs, (name, link["holders"], link.get("holders_unknown"))
    holder = hs[0]
    assert_frame_is(holder["frame"], at)
    if certain is not None:
        assert holder["certain"] is certain
    if count is not None:
        assert holder.get("count", 1) == count
    line = cause(txt)
    assert any(f"{kind} {n!r}" in line for n in [name, *holder.get("names", ())]), line
    if hop == len(links) - 1 and not doc.get("deadlock"):
        assert f"at {os.path.basename(at.file)}:{at.line} in " in line, line
    return holder
