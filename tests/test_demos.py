"""The demonstrations run as a user runs them, and pin the lines they promise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, assert_contract, dumps, only_dump

SCRIPTS = ROOT / "scripts"


def _demo_line(script: str, comment: str) -> int:
    """The line of a demo script that ends with ``comment``.

    The demos are for people: their ``# <- ...`` comment explains the line and is
    part of the code a dump shows (README.md quotes it), so they carry no
    ``# pin:`` marker; the test finds the promised line by that comment.
    """
    lines = Path(script).read_text().splitlines()
    (hit,) = [i for i, text in enumerate(lines, 1) if text.rstrip().endswith(comment)]
    return hit


def _run(script: str, dump_dir: Path, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / script)], capture_output=True, text=True, timeout=50,
        env={**os.environ, "FREEZEWATCH_DUMP_DIR": str(dump_dir), **env},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_make_demo_pins_the_body_read(dump_dir: Path) -> None:
    """`make demo`: a freeze dump whose app_frame is the demo's blocking body read."""
    out = _run("list_users_hang.py", dump_dir, DEMO_HOLD="2.5")
    script = str(SCRIPTS / "list_users_hang.py")
    doc = only_dump(dump_dir)
    assert (doc["app_frame"]["file"], doc["app_frame"]["line"]) == (
        script, _demo_line(script, "# <- blocks the event loop until the body arrives"))
    assert doc["blocking_frame"]["file"].endswith("socket.py")
    assert doc["duration"] >= 2.0
    assert "app line" in out and "HTTP/1.1 200 OK" in out


def test_async_stall_demo_pins_the_await(dump_dir: Path) -> None:
    """The async list-users demo: a stall dump at the app's await, body not finished."""
    _run("async_list_users_stall.py", dump_dir, DEMO_HOLD="4", DEMO_STALL_AFTER="1.5")
    script = str(SCRIPTS / "async_list_users_stall.py")
    doc = only_dump(dump_dir, kind="stall")
    assert (doc["app_frame"]["file"], doc["app_frame"]["line"]) == (
        script, _demo_line(script, "# <- the body never comes"))
    details = [u.get("detail") or "" for u in doc["inflight"]]
    assert any("status 200, headers received" in d and "body not finished" in d
               for d in details), details


def test_fastapi_demo_names_the_request(dump_dir: Path) -> None:
    """The FastAPI demo under uvicorn: the freeze names the request and the sleep line."""
    pytest.importorskip("fastapi")
    _run("fastapi_freeze.py", dump_dir)
    script = str(SCRIPTS / "fastapi_freeze.py")
    path = dumps(dump_dir)[0]
    doc = assert_contract(path)
    assert (doc["blocking_frame"]["file"], doc["blocking_frame"]["line"]) == (
        script, _demo_line(script, "# <- blocks the event loop: every request waits"))
    assert doc["request"]["name"] == "GET /reports/daily"
