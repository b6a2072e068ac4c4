"""aiohttp integration against real servers on 127.0.0.1: client phases, server requests."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import assert_contract, dumps, wait_for
from core_support import pin

import freezewatch
import freezewatch.aiohttp

FAST = {"threshold": 0.3, "interval": 0.05, "native": False}


class ServerThread:
    """A real aiohttp server on 127.0.0.1, on its own loop in a named thread."""

    def __init__(self, make_app: Callable[[], web.Application], name: str) -> None:
        self.make_app = make_app
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name=name,
                                       daemon=True)

    async def _serve(self) -> None:
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self._ready.wait(10), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


def users_app(hold: float) -> Callable[[], web.Application]:
    """The remote "users" service: status line and headers at once, the body after ``hold`` s."""

    async def list_users(request: web.Request) -> web.StreamResponse:
        body = b'[{"id": 1}]'
        resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Content-Length": str(len(body))})
        await resp.prepare(request)
        await asyncio.sleep(hold)
        await resp.write(body)
        await resp.write_eof()
        return resp

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/list-users", list_users)
        return app

    return make


@pytest.fixture
def users() -> Iterator[ServerThread]:
    with ServerThread(users_app(hold=20), "users-service") as srv:
        yield srv


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_client_stall_pins_await_line_and_request_phase(dump_dir: Path, events: Any,
                                                        users: ServerThread,
                                                        loop_kind: str) -> None:
    """A body that never comes: stall dump, app's await line, 'status 200, headers received'."""
    url = f"http://127.0.0.1:{users.port}/list-users"
    lock = asyncio.Lock()

    async def list_vless_users(session: aiohttp.ClientSession) -> bytes:
        async with session.get(url + "?token=secret") as resp:
            return await resp.read()  # pin: await-body

    async def reconcile(session: aiohttp.ClientSession) -> None:
        async with lock, freezewatch.watch("reconcile", stall_after=1.0):
            await list_vless_users(session)

    async def main() -> freezewatch.LoopWatch:
        handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        async with aiohttp.ClientSession(
                trace_configs=[freezewatch.aiohttp.trace_config()]) as session:
            task = asyncio.create_task(reconcile(session), name="reconcile")
            while not handle.stalls:  # heartbeats flow meanwhile: no freeze
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.2)
        return handle

    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
        try:
            handle = loop.run_until_complete(main())
        finally:
            loop.close()
    else:
        handle = asyncio.run(main())
    assert handle.freezes == 0
    (path,) = dumps(dump_dir, kind="stall")
    doc = assert_contract(path)
    line = pin(__file__, "await-body").line
    assert doc["app_frame"]["file"] == __file__ and doc["app_frame"]["line"] == line
    assert doc["app_frame"]["code"] == "return await resp.read()  # pin: await-body"
    chain = doc["await_chain"]
    # (qualified names from Python 3.11, plain names before)
    assert [f["function"].split(".")[-1] for f in chain[:2]] == ["reconcile", "list_vless_users"]
    assert doc["blocking_frame"] == chain[-1]
    assert "site-packages/aiohttp" in doc["blocking_frame"]["file"]
    (client,) = [u for u in doc["inflight"] if u["kind"] == "client"]
    assert client["name"] == f"GET {url}"  # no query string: it may hold secrets
    assert re.fullmatch(
        rf"GET {re.escape(url)} — status 200, headers received \d+\.\d s ago, body not finished",
        client["detail"]), client["detail"]
    assert client["in_blocking_task"] is True
    assert "status 200, headers received" in Path(str(path)[:-5] + ".txt").read_text()
    assert events.wait("stall_ended")["reason"] == "watch 'reconcile'"
    assert handle.inflight == {}


def test_client_units_end_with_the_response(dump_dir: Path) -> None:
    """Outbound requests leave the in-flight table once the body arrives or is released."""
    with ServerThread(users_app(hold=0.0), "users-fast") as fast, \
            ServerThread(users_app(hold=20), "users-slow") as slow:

        async def main() -> tuple[int, int, int]:
            handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
            async with aiohttp.ClientSession(
                    trace_configs=[freezewatch.aiohttp.trace_config()]) as session:
                for _ in range(20):
                    async with session.get(f"http://127.0.0.1:{fast.port}/list-users") as r:
                        assert await r.read() == b'[{"id": 1}]'
                after_reads = len(handle.inflight)
                resp = await session.get(f"http://127.0.0.1:{slow.port}/list-users")
                during = len(handle.inflight)
                resp.release()  # given up on unread: the watchdog drops the unit
                del resp
                await asyncio.to_thread(wait_for, lambda: not handle.inflight, 5)
                return after_reads, during, len(handle.inflight)

        assert asyncio.run(main()) == (0, 1, 0)


def test_aiohttp_handler_freeze_names_request(dump_dir: Path, events: Any) -> None:
    """A handler calling time.sleep: freeze dump named by the route template, request id
    and exact line."""

    async def slow_report(request: web.Request) -> web.Response:
        time.sleep(1.0)  # pin: freeze-aiohttp
        return web.Response(text="done")

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/reports/{day}", slow_report)
        freezewatch.aiohttp.setup(app, dump_dir=str(dump_dir), **FAST)
        return app

    with ServerThread(make, "aiohttp-server") as srv:
        async def client() -> str:
            async with aiohttp.ClientSession() as s, s.get(
                    f"http://127.0.0.1:{srv.port}/reports/today?x=1",
                    headers={"X-Request-ID": "req-7"}) as r:
                return await r.text()

        assert asyncio.run(client()) == "done"
        events.wait("freeze_ended")
        loop = srv.loop
    assert loop is not None and loop not in freezewatch._state.by_loop  # cleanup uninstalled
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    assert doc["loop"]["thread_name"] == "aiohttp-server"
    assert doc["blocking_frame"]["file"] == __file__
    assert doc["blocking_frame"]["line"] == pin(__file__, "freeze-aiohttp").line
    req = doc["request"]
    assert (req["name"], req["kind"], req["request_id"]) == ("GET /reports/{day}", "server",
                                                           "req-7")
    assert req["age"] >= 0.3
    assert "Request:     GET /reports/{day}" in Path(str(path)[:-5] + ".txt").read_text()


def test_thousand_concurrent_requests_no_dump(dump_dir: Path, events: Any) -> None:
    """1,000 concurrent requests through the middleware, none stalled: no dump, none left."""
    handles: list[freezewatch.LoopWatch] = []

    async def hello(request: web.Request) -> web.Response:
        await asyncio.sleep(0.05)
        return web.Response(text="hi")

    def make() -> web.Application:
        app = web.Application()
        app.router.add_get("/hello", hello)
        freezewatch.aiohttp.setup(app, dump_dir=str(dump_dir), stall_after=20, threshold=2.0,
                                  native=False)

        async def keep(app: web.Application) -> None:
            handles.append(freezewatch._state.by_loop[asyncio.get_running_loop()])

        app.on_startup.append(keep)
        return app

    with ServerThread(make, "aiohttp-busy") as srv:
        async def client() -> list[str]:
            conn = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=conn) as s:
                async def one(i: int) -> str:
                    async with s.get(f"http://127.0.0.1:{srv.port}/hello") as r:
                        return await r.text()

                return await asyncio.gather(*(one(i) for i in range(1000)))

        assert asyncio.run(client()) == ["hi"] * 1000
        handle = handles[0]
        assert wait_for(lambda: handle.inflight == {}, 5)
    assert dumps(dump_dir, kind="*") == []
    assert events.named("stall_detected") == [] and handle.stalls == 0


def test_setup_rejects_bad_settings_at_once(tmp_path: Path) -> None:
    """setup() validates install() settings when called, naming the setting."""
    with pytest.raises(ValueError, match="threshold must be > 0, got -1"):
        freezewatch.aiohttp.setup(web.Application(), threshold=-1, dump_dir=str(tmp_path))


