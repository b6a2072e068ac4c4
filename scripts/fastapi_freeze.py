"""A FastAPI endpoint that blocks the event loop, under a real uvicorn server.

The app adds one line, the freezewatch ASGI middleware; uvicorn's lifespan
startup installs freezewatch on the server's loop (uvloop when installed,
as uvicorn picks by default). GET /reports/daily calls a synchronous
"database driver" on the loop thread; every other request waits behind it.
While the loop is still frozen the dump is written, naming the request
(`GET /reports/daily`, its X-Request-ID) and the exact line. This script
prints what it pinned. Runs in about 5 s:
    .venv/bin/python scripts/fastapi_freeze.py
"""

from __future__ import annotations

import http.client
import os
import sys
import threading
import time

import uvicorn
from _demo_report import RULE, dump_of_this_run, frame_line
from fastapi import FastAPI

import freezewatch.asgi

BLOCK = float(os.environ.get("DEMO_BLOCK", "2.5"))  # seconds the endpoint blocks the loop
DUMP_DIR = os.path.abspath(os.environ.get("FREEZEWATCH_DUMP_DIR", "freezewatch-dumps"))

app = FastAPI()
app.add_middleware(freezewatch.asgi.FreezewatchMiddleware, threshold=1, dump_dir=DUMP_DIR)


def fetch_daily_totals() -> list[int]:
    """Stands for a synchronous DB driver call made from async code."""
    time.sleep(BLOCK)  # <- blocks the event loop: every request waits
    return [1, 2, 3]


@app.get("/reports/daily")
async def daily_report() -> dict[str, int]:
    totals = fetch_daily_totals()
    return {"total": sum(totals)}


@app.get("/health")
async def health() -> str:
    return "ok"


def serve() -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="info", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, thread


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


def report(started: float) -> int:
    found = dump_of_this_run(DUMP_DIR, "freeze", started)
    if found is None:
        return 1
    path, doc = found
    req = doc.get("request") or {}
    print(f"\n{RULE}\ndump written while the loop was frozen: {path}")
    print(f"  loop       : {doc['loop']['name']} ({doc['python'].split()[0]}), "
          f"frozen {doc['blocked_for']:.2f} s when captured, "
          f"{doc.get('duration', 0):.2f} s in all")
    print(f"  request    : {req.get('name')} (request id {req.get('request_id')}, "
          f"open {req.get('age', 0):.2f} s)")
    frame_line("blocked at", doc["blocking_frame"])
    frame_line("app line", doc["app_frame"])
    print(f"  read it    : less {path[:-5]}.txt")
    print(RULE)
    return 0


if __name__ == "__main__":
    t0 = time.time()
    server, thread = serve()
    port = server.servers[0].sockets[0].getsockname()[1]
    status, body = get(port, "/reports/daily", {"X-Request-ID": "req-4711"})
    print(f"GET /reports/daily -> {status} {body.decode()}")
    time.sleep(0.5)  # let freeze_ended rewrite the dump with its duration
    server.should_exit = True
    thread.join(10)
    sys.exit(report(t0))
