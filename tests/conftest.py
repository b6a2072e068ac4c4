"""Shared fixtures (global state reset, a dump directory, captured structlog events)
and the one way to read dumps: ``dumps()``, ``only_dump()``, ``assert_contract()``.

Lines a dump should name are marked ``# pin: NAME`` and found with
``core_support.pin(path, NAME)``, in a test's own file or in a script it writes.
freezewatch's process-global state is reset after every test by the autouse
fixture below (``_state.reset()``, the documented reset); no test does it by hand.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import freezewatch
from freezewatch import _state
from freezewatch._sinks.log import events as _events

ROOT = Path(__file__).resolve().parents[1]


def _load_check_dump() -> Any:
    """The contract checker: ../shared/contract (the source of truth) when it is
    beside the checkout, else the copy in tests/contract (a clone elsewhere)."""
    for cand in (ROOT.parent / "shared" / "contract" / "check_dump.py",
                 ROOT / "tests" / "contract" / "check_dump.py"):
        if cand.exists():
            spec = importlib.util.spec_from_file_location("check_dump", cand)
            assert spec and spec.loader
            mod = importlib.util.module_from_spec(spec)
            sys.modules["check_dump"] = mod
            spec.loader.exec_module(mod)
            return mod
    raise RuntimeError("check_dump.py not found")


check_dump = _load_check_dump()


def assert_contract(path: str | Path) -> dict[str, Any]:
    """The dump at ``path`` conforms to the contract; returns its JSON document."""
    import json

    problems = check_dump.problems(path)
    assert problems == [], problems
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def dumps(dump_dir: Path, *, kind: str = "freeze") -> list[Path]:
    """The ``<kind>-*.json`` dumps in ``dump_dir``, oldest (lowest sequence number)
    first; none if the directory does not exist. ``kind="*"`` is every kind."""
    found = dump_dir.glob(f"{kind}-*.json") if dump_dir.exists() else []
    return sorted(found, key=lambda p: (int(p.stem.rsplit("-", 1)[1]), p.name))


def only_dump(dump_dir: Path, *, kind: str = "freeze") -> dict[str, Any]:
    """The JSON document of the one ``kind`` dump in ``dump_dir`` (checked against
    the contract); fails if there is not exactly one."""
    found = dumps(dump_dir, kind=kind)
    assert len(found) == 1, f"expected one {kind} dump in {dump_dir}: {[p.name for p in found]}"
    return assert_contract(found[0])


@pytest.fixture(autouse=True)
def _reset_freezewatch() -> Iterator[None]:
    yield
    freezewatch.uninstall()
    _events.flush(2.0)
    _state.reset()
    # A watchdog that stopped itself (its last loop closed) may still be letting
    # its sentinel go: the next test starts without it.
    for t in threading.enumerate():
        if t.name == "freezewatch-watchdog":
            t.join(5.0)


@pytest.fixture
def dump_dir(tmp_path: Path) -> Path:
    return tmp_path / "dumps"


class Events:
    """structlog events emitted by freezewatch during a test (thread-safe)."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, _logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        with self._lock:
            self.items.append({**event_dict, "log_level": method})
        raise structlog.DropEvent

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self.items if e.get("event") == name]

    def wait(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        return wait_for(lambda: (self.named(name) or [None])[-1], timeout)  # type: ignore[no-any-return]


@pytest.fixture
def events() -> Iterator[Events]:
    ev = Events()
    structlog.configure(processors=[ev])
    try:
        yield ev
    finally:
        structlog.reset_defaults()


SERIAL = (
    "tests/test_gil.py", "tests/test_gil_sentinel.py", "tests/test_gil_fork.py",
    "tests/test_core_busy_cost.py",
    "tests/test_core_idle.py", "tests/test_overload.py",
    "tests/test_saturated.py::test_a_saturated_loop_is_never_reported_frozen",
    "tests/test_saturated.py::test_the_same_harness_still_pins_a_real_gil_held_regex",
    "tests/test_core_tasks.py::test_busy_healthy_loop_no_false_freeze",
    "tests/test_core_install.py::test_loop_stopped_then_closed_with_beat_pending",
    "tests/test_native.py::test_back_to_back_freezes_while_pyspy_runs_are_each_detected",
    "tests/test_pytest_plugin.py::test_gil_holding_blocks_fail_naming_the_line",
    "tests/test_sentry.py::test_fifty_freezes_at_one_line_are_rate_limited",
)
"""Tests whose subject is timing on this machine itself: a C call holding the GIL, the
guards that tell an overloaded machine from a frozen loop, wake-up counts. They pass
under load too, but not reliably beside a second suite: .ci/run runs them (``-m
serial``) after the rest, one Python at a time. ``make test`` runs everything."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SERIAL):
            item.add_marker(pytest.mark.serial)
