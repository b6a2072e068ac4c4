"""The remote "users" service of the list-users demos: a real aiohttp server on
127.0.0.1, in a thread of its own, whose GET /list-users sends `200 OK` and its
headers at once and withholds the body for ``hold`` seconds."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from aiohttp import web


def start_users_service(hold: float) -> int:
    """Start the service; return its port."""

    async def list_users(request: web.Request) -> web.StreamResponse:
        body = json.dumps([{"id": i, "name": f"user{i}"} for i in range(3)]).encode()
        resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                           "Content-Length": str(len(body))})
        await resp.prepare(request)  # status line + headers go out now
        await asyncio.sleep(hold)  # ... and the body does not
        await resp.write(body)
        await resp.write_eof()
        return resp

    ready: list[int] = []
    started = threading.Event()

    async def serve() -> None:
        app = web.Application()
        app.router.add_get("/list-users", list_users)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ready.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        started.set()
        await asyncio.Event().wait()

    threading.Thread(target=asyncio.run, args=(serve(),), name="users-service",
                     daemon=True).start()
    started.wait(10)
    return ready[0]


def run_demo(main: Callable[[int], Coroutine[Any, Any, None]],
             report: Callable[[float], int], hold: float) -> NoReturn:
    """Start the service, run the application's ``main(port)``, print ``report``, exit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stdout)
    started = time.time()
    port = start_users_service(hold)
    asyncio.run(main(port))
    sys.exit(report(started))
