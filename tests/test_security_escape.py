"""Control characters from the application never reach a terminal; hostile dump files give
one clear line in the CLI (issue 11, defects 5 and 8)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, dumps
from security_support import all_text

import freezewatch
from freezewatch._events import FreezeEvent
from freezewatch._redact import escape
from freezewatch._sinks.log import _log_fields
from freezewatch.asgi import FreezewatchMiddleware

BIN = Path(sys.executable).parent / "freezewatch"
FAST = {"threshold": 0.3, "interval": 0.05, "native": False}
# /%1B%5D0%3BPWNED%07%1B%5B2J as the server decodes it: retitle the terminal, clear it.
HOSTILE = "/\x1b]0;PWNED\x07\x1b[2J\r\x9bmore\u202eevil"
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


@pytest.mark.parametrize(("text", "expected"), [
    ("plain /path ü", "plain /path ü"),
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("bell\x07", "bell\\x07"),
    ("line\nforged", "line\\nforged"),
    ("cr\r", "cr\\r"),
    ("c1\x9b", "c1\\x9b"),
    ("bidi\u202e", "bidi\\u202e"),
    ("del\x7f", "del\\x7f"),
])
def test_escape(text: str, expected: str) -> None:
    """Every control character becomes a visible escape; other text stays."""
    assert expected == escape(text)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def hostile_dump(dump_dir: Path, events: Any) -> Path:
    """A real freeze dump of a request whose path carries terminal escapes."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        time.sleep(0.8)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = FreezewatchMiddleware(app, dump_dir=str(dump_dir), **FAST)
    scope = {"type": "http", "method": "GET", "path": HOSTILE, "headers": [
        (b"x-request-id", b"id\x1b[31m")]}

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any) -> None:
            pass

        await wrapped(scope, receive, send)
        await asyncio.sleep(0.3)
        freezewatch.uninstall()

    asyncio.run(main())
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir, kind="freeze")
    assert_contract(path)
    return path


def test_no_raw_control_characters_in_txt_or_events(hostile_dump: Path, events: Any) -> None:
    """The .txt and the log events carry the request path escaped, never raw."""
    txt = hostile_dump.with_suffix(".txt").read_text()
    assert "\\x1b]0;PWNED\\x07" in txt
    for c in RAW:
        assert c not in txt
    assert json.loads(hostile_dump.read_text())["request"]["name"].startswith("GET /\x1b]0;")
    for c in RAW:
        assert c not in str([_log_fields(FreezeEvent(e["event"], "loop", 0.0,
                                                     reason=e.get("reason")))
                             for e in events.items])
    assert "PWNED" in all_text(hostile_dump.parent)


def test_show_no_color_escapes(hostile_dump: Path) -> None:
    """`freezewatch show --no-color` (and with colour) prints no raw control character."""
    for flag in ("--no-color", "--color"):
        proc = _cli("show", flag, str(hostile_dump))
        assert proc.returncode == 0, proc.stderr
        assert "\\x1b]0;PWNED\\x07" in proc.stdout
        out = re.sub("\x1b\\[[0-9;]*m", "", proc.stdout)  # our own colours (--color) only
        if flag == "--no-color":
            assert out == proc.stdout
        for c in RAW:
            assert c not in out


def test_log_fields_escaped() -> None:
    """Text fields of an event are escaped before they reach structlog."""
    ev = FreezeEvent("stall_detected", "loop", 1.0, blocked_at="/a\x1b.py:1 in f",
                     reason="server 'GET /\x1b]0;x\x07'")
    fields = _log_fields(ev)
    assert fields["reason"] == "server 'GET /\\x1b]0;x\\x07'"
    assert fields["blocked_at"] == "/a\\x1b.py:1 in f"


def _bad(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(("content", "says"), [
    ('{"schema": "freezewatch/1", "kind": "freeze", "tasks": ' + "[" * 100_000
     + "]" * 100_000 + "}", "nested too deeply"),
    ('{"schema": "freezewatch/1", "kind": "freeze", "loop": [], "tasks": 5, "inflight": 3}',
     "malformed freezewatch dump"),
    ('{"schema": "freezewatch/1", "kind": "freeze", "blocking_frame": "x", "native": []}',
     "malformed freezewatch dump"),
    ('{"schema": "freezewatch/1", "kind": "\\u001b]0;PWNED\\u0007"}', ""),
])
def test_show_hostile_file_one_line(tmp_path: Path, content: str, says: str) -> None:
    """Deep nesting, wrong types, escapes in values: one line (or an escaped report),
    never a traceback nor a raw control character."""
    path = _bad(tmp_path, "freeze-20250101T000000Z-1-0001.json", content)
    proc = _cli("show", "--no-color", str(path))
    assert "Traceback" not in proc.stderr
    for c in RAW:
        assert c not in proc.stdout + proc.stderr
    if says:
        assert proc.returncode != 0
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert says in proc.stderr


def test_report_hostile_files_skipped(tmp_path: Path) -> None:
    """`freezewatch report` over hostile files: a warning each, one error line, no traceback."""
    _bad(tmp_path, "freeze-20250101T000000Z-1-0001.json", "[" * 100_000 + "]" * 100_000)
    _bad(tmp_path, "freeze-20250101T000001Z-1-0002.json", json.dumps(
        {"kind": "freeze", "blocking_frame": {"line": 1, "file": [], "function": {}},
         "detected_at": 1.0, "blocked_for": 1.0, "duration": "x", "first_dump": 3}))
    _bad(tmp_path, "freeze-20250101T000002Z-1-0003.json", json.dumps(
        {"kind": "freeze", "blocking_frame": {"line": 1, "file": "/a\x1b[2J.py",
                                              "function": "f\x07", "code": "x\ry"},
         "detected_at": 1.0, "blocked_for": 1.0}))
    proc = _cli("report", str(tmp_path))
    assert "Traceback" not in proc.stderr
    for c in RAW:
        assert c not in proc.stdout + proc.stderr
    assert "nested too deeply" in proc.stderr
    assert "/a\\x1b[2J.py:1 in f\\x07" in proc.stdout
