"""ASGI middleware under a real uvicorn server on 127.0.0.1 (FastAPI and a bare ASGI app)."""

from __future__ import annotations

import asyncio
import http.client
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from conftest import assert_contract, dumps, only_dump, wait_for
from core_support import pin

from freezewatch import _state
from freezewatch.asgi import FreezewatchMiddleware

fastapi = pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

FAST = {"threshold": 0.3, "interval": 0.05, "native": False}


@contextmanager
def uvicorn_thread(app: Any, name: str, loop: str = "asyncio",
                   lifespan: str = "on") -> Iterator[Any]:
    """A real uvicorn server on 127.0.0.1 in a named thread; yields the Server (port on .port)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop=loop, lifespan=lifespan,
                            ws="none", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 15)
        assert server.started, "uvicorn did not start"
        server.port = server.servers[0].sockets[0].getsockname()[1]
        yield server
    finally:
        server.should_exit = True
        thread.join(15)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def fastapi_app(dump_dir: Path) -> Any:
    app = fastapi.FastAPI()
    app.add_middleware(FreezewatchMiddleware, dump_dir=str(dump_dir), contextvars=("request_id",),
                       **FAST)

    @app.get("/reports/daily")
    async def daily_report() -> dict[str, str]:
        structlog.contextvars.bind_contextvars(request_id="req-fastapi")
        time.sleep(1.0)  # pin: freeze-fastapi
        return {"status": "done"}

    return app


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fastapi_endpoint_freeze_names_request_and_line(dump_dir: Path, events: Any,
                                                        loop: str) -> None:
    """FastAPI under uvicorn: time.sleep in an endpoint gives a freeze dump naming GET /path."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    name = f"uvicorn-{loop}"
    with uvicorn_thread(fastapi_app(dump_dir), name, loop=loop) as server:
        (handle,) = [w for w in _state.by_loop.values() if w.name == name]  # lifespan installed
        if loop == "uvloop":
            assert type(handle.loop).__module__.startswith("uvloop")
        status, body = get(server.port, "/reports/daily?day=1", {"X-Request-ID": "abc-123"})
        assert (status, body) == (200, b'{"status":"done"}')
        events.wait("freeze_ended")
    assert handle not in _state.by_loop.values()  # lifespan shutdown uninstalled it
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    assert doc["loop"]["thread_name"] == name
    assert doc["blocking_frame"]["file"] == __file__
    assert doc["blocking_frame"]["line"] == pin(__file__, "freeze-fastapi").line
    assert doc["blocking_frame"]["function"].endswith("daily_report")
    req = doc["request"]
    assert (req["name"], req["kind"], req["request_id"]) == ("GET /reports/daily", "server",
                                                           "abc-123")
    (unit,) = doc["inflight"]
    assert unit["in_blocking_task"] is True
    if sys.version_info >= (3, 12):
        assert doc["context"]["request_id"] == "req-fastapi"
    else:
        assert "context" not in doc


async def bare_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A plain ASGI app (no framework, no lifespan support) with a request that never ends."""
    assert scope["type"] == "http"
    if scope["path"] == "/hang":
        await asyncio.Event().wait()  # pin: asgi-hang
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_asgi_request_that_never_ends_gives_stall_dump(dump_dir: Path, events: Any) -> None:
    """Without lifespan the middleware installs on the first request; a hung request stalls."""
    app = FreezewatchMiddleware(bare_asgi_app, stall_after=0.8, dump_dir=str(dump_dir), **FAST)
    with uvicorn_thread(app, "uvicorn-bare", lifespan="off") as server:
        assert get(server.port, "/") == (200, b"ok")
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", "/hang", headers={"X-Request-ID": "hang-1"})
        (handle,) = [w for w in _state.by_loop.values() if w.name == "uvicorn-bare"]
        wait_for(lambda: handle.stalls, 10)
        conn.close()
        server.force_exit = True
    doc = only_dump(dump_dir, kind="stall")
    assert doc["stalled"]["name"] == "GET /hang"
    assert doc["stalled"]["request_id"] == "hang-1"
    assert doc["app_frame"]["file"] == __file__
    assert doc["app_frame"]["line"] == pin(__file__, "asgi-hang").line
    assert handle.freezes == 0


def test_thousand_concurrent_asgi_requests_no_dump(dump_dir: Path, events: Any) -> None:
    """1,000 concurrent requests through the ASGI middleware under uvicorn: no dump, none left."""
    app = fastapi.FastAPI()
    app.add_middleware(FreezewatchMiddleware, dump_dir=str(dump_dir), stall_after=20,
                       threshold=2.0, native=False)

    @app.get("/hello")
    async def hello() -> str:
        await asyncio.sleep(0.05)
        return "hi"

    with uvicorn_thread(app, "uvicorn-busy") as server:
        (handle,) = [w for w in _state.by_loop.values() if w.name == "uvicorn-busy"]

        async def client() -> list[str]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
                async def one() -> str:
                    async with s.get(f"http://127.0.0.1:{server.port}/hello") as r:
                        return await r.text()

                return await asyncio.gather(*(one() for _ in range(1000)))

        assert asyncio.run(client()) == ['"hi"'] * 1000
        assert wait_for(lambda: handle.inflight == {}, 5)
    assert dumps(dump_dir, kind="*") == []
    assert events.named("stall_detected") == [] and handle.stalls == 0
