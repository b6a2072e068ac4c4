"""ASGI integration (FastAPI, Starlette, any ASGI app under uvicorn or hypercorn).

One line for FastAPI/Starlette::

    app.add_middleware(freezewatch.asgi.FreezewatchMiddleware, threshold=0.5)

or, for any ASGI app, wrap it: ``app = FreezewatchMiddleware(app)``.

A pure ASGI middleware (no Starlette import): on the lifespan protocol's
``lifespan.startup`` it installs freezewatch on the server's loop (asyncio or
uvloop), before the app's startup handlers, and once the app has completed
``lifespan.shutdown`` it uninstalls what it installed; a server run without
lifespan gets it installed on the first request instead.
Every HTTP request (and websocket) is a unit of work named by its route
template once the router matched one (Starlette/FastAPI set
``scope["route"]``: ``"GET /webhook/{token}/update"``), else by its path
passed through the redaction rule (``_redact``), so a freeze dump says which
request was running (method, route, age, request id header) and a request
open longer than ``stall_after`` gets a ``stall`` dump. Runs on the loop
thread only (the route is read by the watchdog thread, see ``_route_namer``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from . import _state
from ._config import load
from ._handle import LoopWatch
from ._inflight import close_unit, open_unit
from ._install import install

__all__ = ["FreezewatchMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID = 200
SCOPE_MARK = "freezewatch.unit"
"""Scope key set by the middleware that has the request, so a request is one
unit: ``True`` from an app's own middleware (an inner one lets it through);
the unit itself from the one ``freezewatch run`` adds outermost (``yields``),
which an inner middleware of the app's own closes and replaces with its own
settings (stall_after, request id header)."""


def _route_namer(scope: Scope, method: str) -> Callable[[], str | None]:
    """The request's name from its route template, once the router has set
    ``scope["route"]`` (it does so after this middleware opened the unit).

    Called on the watchdog thread: one dict read and one attribute read of
    objects the router only ever replaces, never mutates in place.
    """

    def name() -> str | None:
        route = scope.get("route")
        path = getattr(route, "path", None)
        return f"{method} {path}" if isinstance(path, str) and path else None

    return name


class FreezewatchMiddleware:
    """Watch the server's loop and every request through ``app``.

    ``settings`` are install()'s (``threshold=``, ``dump_dir=``, ...),
    validated here; ``stall_after`` applies to HTTP requests (default:
    install()'s; websockets never stall); ``request_id_header`` names the
    header recorded as the request id (None: none).
    """

    def __init__(self, app: ASGIApp, *, stall_after: float | None = None,
                 request_id_header: str | None = REQUEST_ID_HEADER, **settings: Any) -> None:
        if stall_after is not None and not stall_after > 0:
            raise ValueError(f"stall_after must be > 0, got {stall_after!r}")
        load(settings)  # ValueError now, naming the setting
        self.app = app
        self.settings = settings
        self.stall_after = stall_after
        self._rid = request_id_header.lower().encode("latin-1") if request_id_header else None
        # Handles this middleware installed, per loop (one per server process
        # as a rule; several when one app object serves loops in threads).
        self._ours: dict[asyncio.AbstractEventLoop, LoopWatch] = {}
        self._tried: set[asyncio.AbstractEventLoop] = set()  # loop thread writes only
        self.yields = False
        """Set by ``freezewatch run`` (``_autoname``): an inner middleware of the app's
        own takes the request over."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" or kind == "websocket":
            outer = scope.get(SCOPE_MARK)
            if outer is True or (outer is not None and self.yields):
                await self.app(scope, receive, send)  # an outer middleware has this request
                return
            if outer is not None:  # freezewatch run's: the app's own settings win
                close_unit(outer)
            if asyncio.get_running_loop() not in self._tried:
                self._install()  # no lifespan (or it failed): install on first use
            method = scope.get("method", "WS")
            unit = open_unit(
                f"{method} {scope.get('path', '')}",
                "server" if kind == "http" else "websocket",
                self.stall_after if kind == "http" else float("inf"),
                self._request_id(scope),
            )
            if unit is None:
                await self.app(scope, receive, send)
                return
            unit.namer = _route_namer(scope, method)
            scope[SCOPE_MARK] = unit if self.yields else True
            try:
                await self.app(scope, receive, send)
            finally:
                close_unit(unit)
        elif kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
        else:
            await self.app(scope, receive, send)

    def _request_id(self, scope: Scope) -> str | None:
        name = self._rid
        if name is None:
            return None
        for key, value in scope.get("headers") or ():
            if key == name:  # ASGI header names are lower-cased bytes
                return str(value[:MAX_REQUEST_ID].decode("latin-1"))
        return None

    def _lifespan_receive(self, receive: Receive) -> Receive:
        # Installed before the app's startup handlers run: a freeze in them counts.
        async def wrapped() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                self._install()
            return message

        return wrapped

    def _lifespan_send(self, send: Send) -> Send:
        # Uninstalled once the app's shutdown handlers have run.
        async def wrapped(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self._uninstall()
            await send(message)

        return wrapped

    def _install(self) -> None:
        loop = asyncio.get_running_loop()
        self._tried.add(loop)
        if loop in _state.by_loop:  # watched already: leave it to its owner
            return
        self._ours[loop] = install(**self.settings)

    def _uninstall(self) -> None:
        handle = self._ours.pop(asyncio.get_running_loop(), None)
        if handle is not None:
            handle.uninstall()
