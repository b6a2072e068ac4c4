"""The list-users freeze, reproduced and pinned (run by `make demo`).

A "users" service (a real aiohttp server on 127.0.0.1, in a thread of its
own) answers GET /list-users with `HTTP/1.1 200 OK` and its headers, then
withholds the body for a few seconds. The application, a reconcile loop in
an asyncio service, uses a synchronous HTTP client on the event loop thread:
it logs the status line, then blocks reading the body. Everything in the
service stops - the production symptom: a 200 OK in the log, then silence.

freezewatch.install() is the only line the application adds. While the loop
is still frozen the dump is written; this script then prints what it pinned.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os

from _demo_report import RULE, dump_of_this_run, frame_line, txt_head
from _users_service import run_demo

import freezewatch

HOLD_BODY = float(os.environ.get("DEMO_HOLD", "4"))  # seconds the server withholds the body
DUMP_DIR = os.path.abspath(os.environ.get("FREEZEWATCH_DUMP_DIR", "freezewatch-dumps"))
log = logging.getLogger("app")


# --- the application ------------------------------------------------------
def fetch_users(port: int) -> list[dict[str, object]]:
    """A synchronous client call, as found in many async services."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/list-users")
    resp = conn.getresponse()
    log.info('HTTP Request: GET http://127.0.0.1:%d/list-users "HTTP/1.1 %d %s"',
             port, resp.status, resp.reason)
    body = resp.read()  # <- blocks the event loop until the body arrives
    conn.close()
    return json.loads(body)  # type: ignore[no-any-return]


async def reconcile(port: int) -> None:
    users = fetch_users(port)
    log.info("reconciled %d users", len(users))


async def poll_updates() -> None:
    """Stands for the rest of the service: it stops too while the loop is frozen."""
    while True:
        await asyncio.sleep(0.25)


async def main(port: int) -> None:
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_freeze(ev: freezewatch.FreezeEvent) -> None:  # runs on freezewatch's event thread
        if ev.event == "freeze_ended" and not loop.is_closed():
            loop.call_soon_threadsafe(ended.set)

    freezewatch.install(threshold=1, dump_dir=DUMP_DIR, on_freeze=on_freeze)
    pollers = [asyncio.create_task(poll_updates(), name=f"poll-{i}") for i in range(3)]
    await asyncio.sleep(0.3)
    await asyncio.create_task(reconcile(port), name="reconcile")
    await asyncio.wait_for(ended.wait(), 10)
    for t in pollers:
        t.cancel()


def report(started: float) -> int:
    found = dump_of_this_run(DUMP_DIR, "freeze", started, last=True)
    if found is None:
        return 1
    path, doc = found
    print(f"\n{RULE}\ndump written while the loop was frozen: {path}")
    frame_line("blocked at", doc["blocking_frame"])
    frame_line("app line", doc["app_frame"])
    print(f"  freeze lasted {doc.get('duration', float('nan')):.2f} s in all "
          f"(detected after {doc['blocked_for']:.2f} s)")
    txt_head(path, 16)
    return 0


if __name__ == "__main__":
    run_demo(main, report, HOLD_BODY)
