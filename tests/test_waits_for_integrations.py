"""The wait-for graph through the integrations: the reconcile case (an asyncio.Lock held
by an iteration whose aiohttp request never gets its body) and a FastAPI sync endpoint
running in the threadpool."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import wait_for
from core_support import FAST, assert_frame_is, pin
from waits_support import assert_holder, cause, only_dump

import freezewatch
import freezewatch.aiohttp
from freezewatch import _state

pytestmark = pytest.mark.timeout(40)


def _withholding_server(release: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """127.0.0.1: status line and headers at once, the body only after ``release``."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 2\r\n\r\n")
            release.wait(20)
            conn.sendall(b"[]")

    t = threading.Thread(target=serve, name="users-service", daemon=True)
    t.start()
    return srv, t


async def list_users(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        return await resp.read()  # pin: body


def test_reconcile_lock_held_by_iteration_waiting_for_body(dump_dir: Path) -> None:
    """Iteration #2 waits at `async with _worker_lock:`; #1 holds it, waiting for a body:
    the chain names #1 at its read line with the request's phase."""
    release = threading.Event()
    srv, server = _withholding_server(release)
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/list-users"

    async def main() -> None:
        handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        _worker_lock = asyncio.Lock()

        async def reconcile(session: aiohttp.ClientSession, n: int) -> None:
            async with freezewatch.watch(f"reconcile #{n}", stall_after=30 if n == 1 else 0.4):  # noqa: SIM117
                async with _worker_lock:  # pin: reconcile-lock
                    await list_users(session, url)

        async with aiohttp.ClientSession(
                trace_configs=[freezewatch.aiohttp.trace_config()]) as session:
            first = asyncio.create_task(reconcile(session, 1), name="reconcile #1")
            await asyncio.sleep(0.1)
            second = asyncio.create_task(reconcile(session, 2), name="reconcile #2")
            for _ in range(400):
                if handle.stalls and list(dump_dir.glob("stall-*.json")):
                    break
                await asyncio.sleep(0.025)
            for t in (first, second):
                t.cancel()
            await asyncio.gather(first, second, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        release.set()
        srv.close()
        server.join(5)
    doc, txt = only_dump(dump_dir, "stall")
    assert doc["stalled"]["name"] == "reconcile #2"
    link = doc["waits_for"][0]
    assert link["waiter"]["task"] == "reconcile #2"
    assert_frame_is(link["waiter"]["frame"], pin(__file__, "reconcile-lock"))
    assert link["on"]["name"] == "_worker_lock"
    holder = assert_holder(doc, txt, "task", "reconcile #1", pin(__file__, "body"),
                           on="asyncio.Lock")
    (phase,) = holder["inflight"]
    assert phase.startswith(f"GET {url} \u2014 status 200, headers received ")
    assert phase.endswith("body not finished")
    line = cause(txt)
    assert line.startswith("Cause:       stall \u2014 asyncio.Lock _worker_lock held by task "
                           "'reconcile #1', at test_waits_for_integrations.py:")
    assert "status 200, headers received" in line and "body not finished" in line


fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")


def test_fastapi_sync_endpoint_stall_names_worker_thread(dump_dir: Path) -> None:
    """A plain `def` endpoint runs in anyio's threadpool: the stall names the worker
    thread and the endpoint's line in it."""
    from freezewatch.asgi import FreezewatchMiddleware

    done = threading.Event()
    app = fastapi.FastAPI()
    app.add_middleware(FreezewatchMiddleware, dump_dir=str(dump_dir), stall_after=0.4, **FAST)

    @app.get("/export")
    def export() -> dict[str, str]:
        while not done.is_set(): time.sleep(0.01)  # pin: sync-endpoint  # noqa: E701
        return {"status": "done"}

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", ws="none",
                            log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-sync", daemon=True)
    thread.start()
    result: list[Any] = []
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 15)
        port = server.servers[0].sockets[0].getsockname()[1]

        def request() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/export")
            result.append(conn.getresponse().status)
            conn.close()

        client = threading.Thread(target=request, name="client", daemon=True)
        client.start()
        (handle,) = [w for w in _state.by_loop.values() if w.name == "uvicorn-sync"]
        wait_for(lambda: handle.stalls and list(dump_dir.glob("stall-*.json")), 15)
        done.set()
        client.join(10)
    finally:
        done.set()
        server.should_exit = True
        thread.join(15)
    assert result == [200]
    doc, txt = only_dump(dump_dir, "stall")
    link = doc["waits_for"][0]
    assert link["on"]["type"] == "executor"
    (holder,) = link["holders"]
    assert holder["thread"].startswith("AnyIO worker thread")
    assert_frame_is(holder["frame"], pin(__file__, "sync-endpoint"))
    assert holder["certain"] is True
    assert "run by thread 'AnyIO worker thread'" in cause(txt)
