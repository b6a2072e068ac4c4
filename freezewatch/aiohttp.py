"""aiohttp integration: the server (``setup``) and the client (``trace_config``).

Server, one line::

    freezewatch.aiohttp.setup(app, threshold=0.5)

installs freezewatch when the app starts (on its loop), uninstalls it on
cleanup, and wraps every request in a unit of work named by its route
template (``"GET /webhook/{token}/update"``; a request no route matched: its
path, redacted): a freeze dump says which request was running (method,
route, age, request id), and a request open longer than ``stall_after``
gets a ``stall`` dump.

Client, one keyword::

    aiohttp.ClientSession(trace_configs=[freezewatch.aiohttp.trace_config()])

records every outbound request as a unit of work with its phase, so dumps
show e.g. ``GET http://users/list-users — status 200, headers received
41.2 s ago, body not finished``. The URL is recorded without credentials,
query or fragment, and through the redaction rule (``_redact``): a bot API's
``/bot<TOKEN>/getUpdates`` becomes ``/bot123456:<redacted>/getUpdates``.

Everything here runs on the loop thread; the units it opens are read by the
watchdog thread as described in ``_inflight``.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import web

from . import _state
from ._config import load
from ._handle import LoopWatch
from ._inflight import Unit, close_unit, open_unit
from ._install import install

__all__ = ["middleware", "setup", "trace_config"]

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID = 200

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# aiohttp >= 3.9 warns (an error in strict test suites) on str keys: use AppKey there.
_KEY: Any = (web.AppKey("freezewatch", tuple) if hasattr(web, "AppKey")
             else "freezewatch")


# -- server -------------------------------------------------------------------
def middleware(*, stall_after: float | None = None,
               request_id_header: str | None = REQUEST_ID_HEADER) -> Any:
    """The request middleware alone (``setup`` adds it for you)."""
    if stall_after is not None and not stall_after > 0:
        raise ValueError(f"stall_after must be > 0, got {stall_after!r}")

    @web.middleware
    async def freezewatch_middleware(request: web.Request,
                                     handler: _Handler) -> web.StreamResponse:
        rid = request.headers.get(request_id_header) if request_id_header else None
        unit = open_unit(f"{request.method} {_route(request)}", "server", stall_after,
                         rid[:MAX_REQUEST_ID] if rid else None)
        if unit is None:  # no watched loop here
            return await handler(request)
        try:
            return await handler(request)
        finally:
            close_unit(unit)

    return freezewatch_middleware


def _route(request: web.Request) -> str:
    """The matched resource's template (``/webhook/{token}/update``), else the path
    (redacted by ``open_unit``): a path can carry a secret, a template cannot."""
    try:
        resource = request.match_info.route.resource
        if resource is not None:
            return str(resource.canonical)
    except Exception:  # no match info (a sub-app mid-resolution, a test double)
        pass
    return request.path


def setup(app: web.Application, *, stall_after: float | None = None,
          request_id_header: str | None = REQUEST_ID_HEADER, **settings: Any) -> None:
    """Watch the loop ``app`` runs on and every request it serves.

    ``settings`` are install()'s (``threshold=``, ``dump_dir=``, ...); they
    are validated now, so a bad value fails here and not at start-up.
    ``stall_after`` applies to requests (default: install()'s). The
    middleware goes first, so the unit covers every other middleware.
    """
    load(settings)  # ValueError now, naming the setting
    app.middlewares.insert(0, middleware(stall_after=stall_after,
                                         request_id_header=request_id_header))

    async def _start(app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        ours = loop not in _state.by_loop  # watched already: leave it to its owner
        app[_KEY] = (install(**settings), ours)

    async def _cleanup(app: web.Application) -> None:
        handle, ours = app.get(_KEY, (None, False))
        if ours and isinstance(handle, LoopWatch):
            handle.uninstall()

    app.on_startup.append(_start)
    app.on_cleanup.append(_cleanup)


# -- client -------------------------------------------------------------------
def _unit(ctx: SimpleNamespace) -> Unit | None:
    return getattr(ctx, "freezewatch_unit", None)


def _safe_url(url: Any) -> str:
    """The URL without query, fragment and credentials (dumps must not leak secrets);
    ``open_unit`` then applies the redaction rule (token-like path segments)."""
    try:
        return str(url.with_user(None).with_query(None).with_fragment(None))
    except Exception:  # not a yarl URL
        return str(url).split("?", 1)[0].split("#", 1)[0]


def _phase(phase: str, tail: str | None = None) -> Any:
    async def on_signal(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        unit = _unit(ctx)
        if unit is not None:
            unit.set_phase(phase, tail)

    return on_signal


def _closed_probe(resp: aiohttp.ClientResponse) -> Callable[[], bool]:
    ref = weakref.ref(resp)

    def done() -> bool:  # watchdog thread: two attribute reads
        r = ref()
        return r is None or bool(r.closed)

    return done


def trace_config(*, stall_after: float | None = None) -> aiohttp.TraceConfig:
    """A TraceConfig recording each outbound request as a unit of work with its phase.

    Phases: started (connecting), queued for a pool connection, connecting,
    connected, request sent, ``status N, headers received`` (body not
    finished); the unit ends when the body has arrived, the response is
    closed or released, or the request fails. ``stall_after`` (default:
    install()'s) makes an outbound request that stays open that long a stall.
    """
    if stall_after is not None and not stall_after > 0:
        raise ValueError(f"stall_after must be > 0, got {stall_after!r}")
    tc = aiohttp.TraceConfig()

    async def on_start(session: Any, ctx: SimpleNamespace,
                       params: aiohttp.TraceRequestStartParams) -> None:
        unit = open_unit(f"{params.method} {_safe_url(params.url)}", "client", stall_after)
        if unit is not None:
            unit.set_phase("started", "connecting")
            ctx.freezewatch_unit = unit

    async def on_end(session: Any, ctx: SimpleNamespace,
                     params: aiohttp.TraceRequestEndParams) -> None:
        unit = _unit(ctx)
        if unit is None:
            return
        resp = params.response
        unit.set_phase(f"status {resp.status}, headers received", "body not finished")
        unit.done_probe = _closed_probe(resp)
        # Both run on the loop thread. feed_eof: the last body byte arrived (at
        # once if it already has), the normal end. The connection's callbacks:
        # released or closed (read cancelled, response released unread).
        end: Callable[[], None] = functools.partial(close_unit, unit)
        on_eof = getattr(resp.content, "on_eof", None)
        if on_eof is not None:
            on_eof(end)
        conn = resp.connection
        if conn is not None:
            conn.add_callback(end)

    async def on_done(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        unit = _unit(ctx)
        if unit is not None:
            close_unit(unit)

    async def on_redirect(session: Any, ctx: SimpleNamespace,
                          params: aiohttp.TraceRequestRedirectParams) -> None:
        unit = _unit(ctx)
        if unit is not None:
            unit.set_phase(f"redirected (status {params.response.status})", "following")

    tc.on_request_start.append(on_start)
    tc.on_connection_queued_start.append(
        _phase("queued for a pool connection", "no free connection yet"))
    tc.on_connection_create_start.append(_phase("connecting", "not connected yet"))
    tc.on_connection_create_end.append(_phase("connected", "request not sent yet"))
    tc.on_connection_reuseconn.append(_phase("reused a pooled connection",
                                             "request not sent yet"))
    tc.on_request_headers_sent.append(_phase("request sent", "no response yet"))
    tc.on_request_redirect.append(on_redirect)
    tc.on_request_end.append(on_end)
    tc.on_request_exception.append(on_done)  # failed: the unit ends
    tc.on_response_chunk_received.append(on_done)  # read() finished the whole body
    return tc
