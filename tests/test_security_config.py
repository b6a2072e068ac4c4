"""Bad values refused at install; unknown FREEZEWATCH_* variables told once; context
variables only when allowed (issue 11, defects 4 and 7)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import assert_contract, dumps

import freezewatch
from freezewatch import _config
from freezewatch._snapshot.context import task_context

FAST = {"threshold": 0.3, "interval": 0.05, "native": False}


@pytest.mark.parametrize(("settings", "env", "message"), [
    ({"threshold": float("inf")}, {}, r"threshold must be a finite number, got inf from install"),
    ({"threshold": float("nan")}, {}, r"threshold must be a finite number, got nan"),
    ({}, {"FREEZEWATCH_NATIVE_TIMEOUT": "inf"},
     r"native_timeout must be a finite number, got 'inf' from FREEZEWATCH_NATIVE_TIMEOUT"),
    ({"native_timeout": float("nan")}, {}, r"native_timeout must be a finite number"),
    ({}, {"FREEZEWATCH_DUMP_RATE_WINDOW": "nan"},
     r"dump_rate_window must be a finite number, got 'nan' from FREEZEWATCH_DUMP_RATE_WINDOW"),
    ({"stall_after": float("inf")}, {}, r"stall_after must be a finite number"),
    ({"liveness_limit": float("inf")}, {}, r"liveness_limit must be a finite number"),
    ({"update_after": (10.0, float("inf"))}, {}, r"update_after must be finite seconds"),
    ({"name": "api\x1b]0;x\x07"}, {}, r"name must not contain control characters, got "
                                     r"'api\\x1b\]0;x\\x07' from install"),
    ({}, {"FREEZEWATCH_NAME": "a\nb"}, r"name must not contain control characters.*FREEZEWATCH"),
    ({"contextvars": ("request id",)}, {}, r"contextvars must be context variable names"),
    ({"contextvars": 5}, {}, r"contextvars must be a list of names, got 5"),
])
def test_bad_values_refused(settings: dict[str, Any], env: dict[str, str], message: str,
                            dump_dir: Path) -> None:
    """Each bad value: ValueError at install naming setting, value and source."""
    with pytest.raises(ValueError, match=message):
        _config.load({"dump_dir": str(dump_dir), **settings}, env)


def test_pyspy_path_missing_or_not_executable(tmp_path: Path, dump_dir: Path) -> None:
    """pyspy_path naming nothing, or a file that cannot be run: ValueError at install."""
    with pytest.raises(ValueError, match=r"pyspy_path must name an existing py-spy executable"
                                         r" \(no such file\), got '/nope/py-spy' from install"):
        _config.load({"pyspy_path": "/nope/py-spy", "dump_dir": str(dump_dir)})
    plain = tmp_path / "py-spy"
    plain.write_text("not a program")
    plain.chmod(0o644)
    with pytest.raises(ValueError, match=r"pyspy_path must name an executable file .*"
                                         r"FREEZEWATCH_PYSPY_PATH environment variable"):
        _config.load({"dump_dir": str(dump_dir)}, {"FREEZEWATCH_PYSPY_PATH": str(plain)})


def test_unknown_environment_variable_logged_once(dump_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt FREEZEWATCH_TRESHOLD: one warning on the 'freezewatch' logger, with the
    likely name; not again at the next install; known variables say nothing."""
    _config._warned.discard("FREEZEWATCH_TRESHOLD")
    env = {"FREEZEWATCH_TRESHOLD": "0.5", "FREEZEWATCH_THRESHOLD": "0.5",
           "FREEZEWATCH_AUTOSTART": "1"}
    with caplog.at_level(logging.WARNING, logger="freezewatch"):
        _config.load({"dump_dir": str(dump_dir)}, env)
        _config.load({"dump_dir": str(dump_dir)}, env)
    msgs = [r.getMessage() for r in caplog.records if r.name == "freezewatch"]
    assert msgs == ["freezewatch: unknown environment variable FREEZEWATCH_TRESHOLD ignored "
                    "(did you mean FREEZEWATCH_THRESHOLD?)"]


def test_contextvars_setting_parsed(dump_dir: Path) -> None:
    """Off by default; a comma list in the environment; a tuple as keyword."""
    assert _config.load({"dump_dir": str(dump_dir)}, {}).contextvars == ()
    env = {"FREEZEWATCH_CONTEXTVARS": "request_id, job"}
    assert _config.load({"dump_dir": str(dump_dir)}, env).contextvars == ("request_id", "job")
    cfg = _config.load({"dump_dir": str(dump_dir), "contextvars": ["request_id"]}, {})
    assert cfg.contextvars == ("request_id",)


class _FakeTask:
    """A task whose context holds structlog-named variables (Task.get_context: 3.12+)."""

    def __init__(self, **values: Any) -> None:
        def bind() -> contextvars.Context:
            for k, v in values.items():
                contextvars.ContextVar(f"structlog_{k}").set(v)
            return contextvars.copy_context()

        self._ctx = contextvars.Context().run(bind)

    def get_context(self) -> contextvars.Context:
        return self._ctx


def test_task_context_only_allowed_keys() -> None:
    """Nothing without an allow-list; with one, only its keys."""
    task = _FakeTask(request_id="r-1", api_key="sk-secret")
    assert task_context(task) is None
    assert task_context(task, ("request_id",)) == {"request_id": "r-1"}


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Task.get_context() is new in 3.12")
def test_bound_api_key_not_in_dump_by_default(dump_dir: Path, events: Any) -> None:
    """bind_contextvars(api_key=...) in the blocking task: no context in the dump."""

    async def handler() -> None:
        structlog.contextvars.bind_contextvars(api_key="sk-live-secret", request_id="r-9")
        await asyncio.sleep(0.1)
        time.sleep(0.8)

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        await asyncio.create_task(handler())
        await asyncio.sleep(0.3)

    asyncio.run(main())
    events.wait("freeze_ended")
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    assert "context" not in doc
    assert "sk-live-secret" not in path.read_text() + path.with_suffix(".txt").read_text()
