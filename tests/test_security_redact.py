"""No secret in a dump: route templates, one redaction rule, replaceable (issue 11, defect 3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import fastapi
import pytest
from aiohttp import web
from conftest import assert_contract, dumps, wait_for
from security_support import all_text
from test_integrations_aiohttp import ServerThread

import freezewatch
import freezewatch.aiohttp
from freezewatch._redact import REDACTED, apply, redact
from freezewatch.asgi import FreezewatchMiddleware

FAST = {"threshold": 0.3, "interval": 0.05, "native": False}
SECRET = "ABCdefGhIJKlmNoPQRstuVWxyz0123456789"
BOT_TOKEN = f"123456:{SECRET}"


@pytest.mark.parametrize(("text", "expected"), [
    (f"GET http://api.telegram.org/bot{BOT_TOKEN}/getUpdates?offset=1",
     f"GET http://api.telegram.org/bot123456:{REDACTED}/getUpdates"),
    (f"POST /webhook/bot777:{SECRET}/update", f"POST /webhook/bot777:{REDACTED}/update"),
    ("GET https://user:pw@host.example/a/b?x=1#frag", "GET https://host.example/a/b"),
    ("GET /search?q=secret&page=2", "GET /search"),
    ("GET /list-users", "GET /list-users"),
    ("GET /u/123e4567-e89b-12d3-a456-426614174000", "GET /u/123e4567-e89b-12d3-a456-426614174000"),
    ("GET /files/5d41402abc4b2a76b9719d911017c592", f"GET /files/{REDACTED}"),
    ("GET /t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9",
     f"GET /t/{REDACTED}"),
    ("GET /k/ghp_16C7e42F292c6912E7710c838347Ae178B4a", f"GET /k/{REDACTED}"),
    ("ClientError: token=abc123 password:hunter2", f"ClientError: token={REDACTED} "
                                                    f"password:{REDACTED}"),
    ("Authorization: Bearer abcdefghijklmnop", f"Authorization: Bearer {REDACTED}"),
    ("reconcile_all_users_in_the_database", "reconcile_all_users_in_the_database"),
    ("api-gateway.mycompany.internal", "api-gateway.mycompany.internal"),
    ("Is this ok? yes", "Is this ok? yes"),
    ("Task-123", "Task-123"),
])
def test_default_rule(text: str, expected: str) -> None:
    """The default rule (docs/security.md), row by row: expected value first."""
    assert expected == redact(text)


def test_a_failing_rule_falls_back_to_the_default() -> None:
    """A user rule that raises or returns a non-string is replaced by the default."""

    def broken(text: str) -> str:
        raise RuntimeError("oops")

    assert apply(broken, f"GET /bot{BOT_TOKEN}/x") == f"GET /bot123456:{REDACTED}/x"
    assert apply(lambda s: None, "GET /a?token=1") == "GET /a"  # type: ignore[arg-type,return-value]
    assert apply(str.upper, "GET /a") == "GET /A"


def _telegram_app() -> web.Application:
    async def get_updates(request: web.Request) -> web.Response:
        await asyncio.sleep(30)  # long polling: nothing new
        return web.json_response({"ok": True, "result": []})

    app = web.Application()
    app.router.add_get("/bot{token}/getUpdates", get_updates)
    return app


def test_bot_token_in_outbound_url_never_recorded(dump_dir: Path, events: Any) -> None:
    """getUpdates through trace_config(): the stall dump, the freeze dump (In flight),
    their .txt and every event name the request without the bot token."""
    with ServerThread(_telegram_app, "telegram") as tg:
        url = f"http://127.0.0.1:{tg.port}/bot{BOT_TOKEN}/getUpdates?offset=1"

        async def poll(session: aiohttp.ClientSession) -> None:
            async with session.get(url) as resp:
                await resp.read()

        async def main() -> None:
            handle = freezewatch.install(dump_dir=str(dump_dir), **FAST)
            async with aiohttp.ClientSession(
                    trace_configs=[freezewatch.aiohttp.trace_config(stall_after=0.5)]) as s:
                task = asyncio.create_task(poll(s))
                while not handle.stalls:
                    await asyncio.sleep(0.05)
                time.sleep(0.8)  # and a freeze while the request is in flight
                await asyncio.sleep(0.2)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(main())
        events.wait("freeze_ended")
        events.wait("stall_ended")
    (stall,) = dumps(dump_dir, kind="stall")
    (freeze,) = dumps(dump_dir, kind="freeze")
    for path in (stall, freeze):
        assert_contract(path)
    text = all_text(dump_dir, events)
    assert SECRET not in text
    assert "offset=1" not in text
    assert f"/bot123456:{REDACTED}/getUpdates" in freeze.with_suffix(".txt").read_text()
    assert f"bot123456:{REDACTED}" in events.named("stall_detected")[0]["reason"]


def test_inbound_aiohttp_request_named_by_route_template(dump_dir: Path, events: Any) -> None:
    """aiohttp server: a webhook carrying the token in its path is named by its route."""

    async def update(request: web.Request) -> web.Response:
        time.sleep(0.8)
        return web.Response(text="ok")

    def make() -> web.Application:
        app = web.Application()
        app.router.add_post("/webhook/{token}/update", update)
        freezewatch.aiohttp.setup(app, dump_dir=str(dump_dir), **FAST)
        return app

    with ServerThread(make, "bot-server") as srv:
        async def client() -> int:
            async with aiohttp.ClientSession() as s, s.post(
                    f"http://127.0.0.1:{srv.port}/webhook/bot777:{SECRET}/update") as r:
                return r.status

        assert asyncio.run(client()) == 200
        events.wait("freeze_ended")
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    assert doc["request"]["name"] == "POST /webhook/{token}/update"
    assert SECRET not in all_text(dump_dir, events)


async def _call_asgi(app: Any, path: str) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    await asyncio.sleep(0.3)


def test_inbound_fastapi_request_named_by_route_template(dump_dir: Path, events: Any) -> None:
    """FastAPI: the request is named by scope['route'].path, set after the middleware ran."""
    api = fastapi.FastAPI()
    api.add_middleware(FreezewatchMiddleware, dump_dir=str(dump_dir), **FAST)

    @api.post("/webhook/{token}/update")
    async def update(token: str) -> dict[str, str]:
        time.sleep(0.8)
        return {"ok": "yes"}

    asyncio.run(_call_asgi(api, f"/webhook/bot777:{SECRET}/update"))
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    assert doc["request"]["name"] == "POST /webhook/{token}/update"
    assert SECRET not in all_text(dump_dir, events)


def test_inbound_bare_asgi_path_redacted(dump_dir: Path, events: Any) -> None:
    """An ASGI app without a router: the path itself, through the redaction rule."""

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        time.sleep(0.8)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = FreezewatchMiddleware(bare, dump_dir=str(dump_dir), **FAST)
    asyncio.run(_call_asgi(app, f"/webhook/bot777:{SECRET}/update"))
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    assert doc["request"]["name"] == f"POST /webhook/bot777:{REDACTED}/update"
    assert SECRET not in all_text(dump_dir, events)


def test_rule_replaced_by_the_user(dump_dir: Path, events: Any) -> None:
    """install(redact=...) replaces the rule for the names of units in flight."""

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), redact=lambda s: s.replace("acme", "***"),
                            **FAST)
        async with freezewatch.watch("sync acme accounts"):
            time.sleep(0.7)
        await asyncio.sleep(0.2)

    asyncio.run(main())
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    assert [u["name"] for u in doc["inflight"]] == ["sync *** accounts"]
    wait_for(lambda: "acme" not in all_text(dump_dir, events))


def test_redact_setting_must_be_callable() -> None:
    """redact= something not callable: ValueError naming the setting."""
    from freezewatch import _config

    with pytest.raises(ValueError, match=r"redact must be a callable, got 'no' from install"):
        _config.load({"redact": "no"})
