"""Where freezewatch's log events go: the application's structlog configuration,
else stdlib logging, else stderr — never the program's stdout."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from freezewatch._events import FreezeEvent
from freezewatch._sinks.log import EventSink

BIN = Path(sys.executable).parent / "freezewatch"

TOOL = '''
import asyncio, json, time

async def main():
    await asyncio.sleep(0.3)
    time.sleep(0.8)          # a freeze, logged while the tool writes its output
    await asyncio.sleep(0.3)

asyncio.run(main())
print(json.dumps({"users": [1, 2, 3]}))
'''

EVENT = FreezeEvent("freeze_detected", "MainThread", 0.5, blocked_at="x.py:1 in f")


def _deliver(event: FreezeEvent = EVENT) -> None:
    sink = EventSink()
    try:
        sink.emit(event)
        assert sink.flush(5.0)
        assert sink.failures == 0
    finally:
        sink.stop()


@pytest.fixture
def unconfigured() -> None:
    structlog.reset_defaults()
    assert not structlog.is_configured()


def test_run_redirected_stdout_is_only_the_tools_output(tmp_path: Path) -> None:
    """`freezewatch run -- python tool.py > out.json` leaves out.json exactly the tool's
    output while a freeze is logged (to stderr)."""
    (tmp_path / "tool.py").write_text(TOOL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREEZEWATCH_")}
    env.update(FREEZEWATCH_NATIVE="0", FREEZEWATCH_SENTINEL="0", NO_COLOR="1")
    out = tmp_path / "out.json"
    with out.open("wb") as f:
        proc = subprocess.run(
            [str(BIN), "run", "--threshold", "0.3", "--dump-dir", str(tmp_path / "dumps"), "--",
             sys.executable, "tool.py"],
            cwd=tmp_path, env=env, stdout=f, stderr=subprocess.PIPE, text=True, timeout=40,
        )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == '{"users": [1, 2, 3]}\n'
    assert "freeze_detected" in proc.stderr
    assert "freeze_ended" in proc.stderr


def _emit_in_child(setup: str) -> subprocess.CompletedProcess[str]:
    # A fresh process: pytest's logging plugin puts handlers on every logger here.
    code = (
        "import logging, sys\n" + setup + "\n"
        "from freezewatch._events import FreezeEvent\n"
        "from freezewatch._sinks.log import EventSink\n"
        "s = EventSink()\n"
        "s.emit(FreezeEvent('freeze_detected', 'MainThread', 0.5, blocked_at='x.py:1 in f'))\n"
        "assert s.flush(5.0) and s.failures == 0\n"
    )
    env = {**os.environ, "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, env=env, check=True)


def test_unconfigured_structlog_logs_to_stderr() -> None:
    """structlog not configured, logging without handlers: the event goes to stderr."""
    proc = _emit_in_child("")
    assert proc.stdout == ""
    assert "freeze_detected" in proc.stderr and "blocked_at='x.py:1 in f'" in proc.stderr


def test_basic_config_logging_receives_the_event() -> None:
    """structlog not configured, logging.basicConfig done: the application's format applies."""
    proc = _emit_in_child(
        "logging.basicConfig(stream=sys.stderr, format='%(name)s|%(levelname)s|%(message)s')"
    )
    assert proc.stdout == ""
    assert proc.stderr.startswith("freezewatch|WARNING|freeze_detected "), proc.stderr


def test_stdlib_logging_used_when_it_has_handlers(
    unconfigured: None, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """structlog not configured, stdlib logging configured: a WARNING record on the
    `freezewatch` logger carries the event and its fields."""
    with caplog.at_level(logging.INFO, logger="freezewatch"):
        _deliver()
    (record,) = [r for r in caplog.records if r.name == "freezewatch"]
    assert record.levelno == logging.WARNING
    assert "freeze_detected" in record.getMessage()
    assert "loop=MainThread" in record.getMessage()
    assert capsys.readouterr().out == ""


def test_configured_structlog_gets_the_event(events: object) -> None:
    """structlog configured by the application: the event goes through it."""
    _deliver()
    (got,) = events.named("freeze_detected")  # type: ignore[attr-defined]
    assert got["loop"] == "MainThread" and got["log_level"] == "warning"
