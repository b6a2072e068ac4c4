"""The list-users case, async variant: the loop is alive, the request never ends.

A "users" service (a real aiohttp server on 127.0.0.1, in a thread of its
own) answers GET /list-users with `HTTP/1.1 200 OK` and its headers, then
withholds the body. The application's reconcile task awaits the body with
an async aiohttp client while holding a lock, so nothing else reconciles.
No thread is blocked and heartbeats flow: there is no freeze to see.

freezewatch pins it anyway: the reconcile is a unit of work (`watch()`), the
client session carries `freezewatch.aiohttp.trace_config()`, and past
`stall_after` the watchdog writes a `stall` dump with the task's await chain
and how far the outbound request got. This script prints what it pinned.
Runs in about 10 s:  .venv/bin/python scripts/async_list_users_stall.py
"""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
from _demo_report import RULE, dump_of_this_run, frame_line, txt_head
from _users_service import run_demo

import freezewatch
import freezewatch.aiohttp

HOLD_BODY = float(os.environ.get("DEMO_HOLD", "6"))  # seconds the server withholds the body
STALL_AFTER = float(os.environ.get("DEMO_STALL_AFTER", "2"))
DUMP_DIR = os.path.abspath(os.environ.get("FREEZEWATCH_DUMP_DIR", "freezewatch-dumps"))
log = logging.getLogger("app")


# --- the application ------------------------------------------------------
reconcile_lock = asyncio.Lock()


async def list_vless_users(session: aiohttp.ClientSession, port: int) -> list[dict[str, object]]:
    async with session.get(f"http://127.0.0.1:{port}/list-users") as resp:
        log.info('HTTP Request: GET http://127.0.0.1:%d/list-users "HTTP/1.1 %d %s"',
                 port, resp.status, resp.reason)
        users: list[dict[str, object]] = await resp.json()  # <- the body never comes
        return users


async def reconcile(session: aiohttp.ClientSession, port: int) -> None:
    async with reconcile_lock, freezewatch.watch("reconcile", stall_after=STALL_AFTER):
        users = await list_vless_users(session, port)
        log.info("reconciled %d users", len(users))


async def poll_updates() -> None:
    """Stands for the rest of the service: it keeps running (the loop is alive)."""
    while True:
        await asyncio.sleep(0.25)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    stalled, ended = asyncio.Event(), asyncio.Event()

    def on_event(ev: freezewatch.FreezeEvent) -> None:  # runs on freezewatch's event thread
        flag = {"stall_detected": stalled, "stall_ended": ended}.get(ev.event)
        if flag is not None and not loop.is_closed():  # later units may end after we exit
            loop.call_soon_threadsafe(flag.set)

    freezewatch.install(threshold=1, dump_dir=DUMP_DIR, on_freeze=on_event)
    pollers = [asyncio.create_task(poll_updates(), name=f"poll-{i}") for i in range(3)]
    async with aiohttp.ClientSession(
            trace_configs=[freezewatch.aiohttp.trace_config()]) as session:
        first = asyncio.create_task(reconcile(session, port), name="reconcile")
        await asyncio.sleep(0.2)
        second = asyncio.create_task(reconcile(session, port), name="reconcile-next")
        await asyncio.wait_for(stalled.wait(), 20)
        await asyncio.wait_for(asyncio.gather(first, second), HOLD_BODY * 3)
        await asyncio.wait_for(ended.wait(), 10)
    for t in pollers:
        t.cancel()


def report(started: float) -> int:
    found = dump_of_this_run(DUMP_DIR, "stall", started)
    if found is None:
        return 1
    path, doc = found
    print(f"\n{RULE}\nstall dump written while the loop stayed alive: {path}")
    print(f"  unit       : {doc['stalled']['name']} open {doc['blocked_for']:.2f} s "
          f"(stall_after {doc['threshold']:g} s), task {doc['stalled']['task']}")
    frame_line("waits at", doc["blocking_frame"])
    frame_line("app line", doc["app_frame"])
    for u in doc["inflight"]:
        if u["kind"] == "client":
            print(f"  outbound   : {u['detail']}")
    for g in doc["tasks"]:
        if g.get("waiting") is not None and g["await_chain"]:
            top = g["await_chain"][-1]
            print(f"  tasks      : {g['count']}x {', '.join(g['names'])} waiting \u2265 "
                  f"{g['waiting']:.1f} s in {top['function']} ({top['code']})")
    txt_head(path, 14)
    return 0


if __name__ == "__main__":
    run_demo(main, report, HOLD_BODY)
