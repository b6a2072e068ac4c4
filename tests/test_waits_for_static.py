"""The wait-for graph's static reading: values come from dicts and slots, never from
application code (properties, __getattr__, __repr__); names from apps are escaped."""

from __future__ import annotations

import threading
import types
from typing import Any

import pytest

from freezewatch._snapshot import render_waits
from freezewatch._snapshot.wait_source import MISSING, path_of, static_attr

calls: list[str] = []


class Sneaky:
    """Every way an attribute read could run application code records it."""

    __slots__ = ("__dict__", "slot")

    def __init__(self) -> None:
        self.slot = "from a slot"
        self.__dict__["plain"] = "from the dict"

    @property
    def prop(self) -> str:
        calls.append("property")
        return "ran"

    def __getattr__(self, name: str) -> Any:
        calls.append(f"__getattr__ {name}")
        return "ran"

    def method(self) -> None:
        calls.append("method")


Sneaky.klass_lock = threading.Lock()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "expected"), [
    ("plain", "from the dict"),
    ("slot", "from a slot"),
    ("prop", MISSING),
    ("missing", MISSING),
    ("method", MISSING),
])
def test_static_attr_reads_only_data(name: str, expected: Any) -> None:
    """Instance dict and slots are read; a property, a method, __getattr__ never run."""
    calls.clear()
    assert static_attr(Sneaky(), name) is expected or static_attr(Sneaky(), name) == expected
    assert calls == []


def test_static_attr_class_and_module_values() -> None:
    """A plain class attribute and a module global are values."""
    assert type(static_attr(Sneaky(), "klass_lock")) is type(threading.Lock())
    mod = types.ModuleType("m")
    mod.lock = lock = threading.Lock()  # type: ignore[attr-defined]
    assert static_attr(mod, "lock") is lock


@pytest.mark.parametrize(("src", "path"), [
    ("self._state_lock", ("self", "_state_lock")),
    ("lock", ("lock",)),
    ("a.b.c", ("a", "b", "c")),
    ("locks[0]", None),
    ("get_lock()", None),
])
def test_path_of(src: str, path: tuple[str, ...] | None) -> None:
    """Only plain dotted names are followed."""
    import ast

    assert path_of(ast.parse(src, mode="eval").body) == path


def test_cause_line_escapes_control_characters() -> None:
    """A task name with an escape sequence reaches the .txt escaped."""
    doc = {"kind": "stall", "waits_for": [{
        "waiter": {"task": "w"}, "on": {"type": "asyncio.Lock", "name": "l", "mode": "acquire"},
        "holders": [{"task": "evil\x1b[2J", "certain": False,
                     "frame": {"file": "/a/b.py", "line": 3, "function": "f", "code": None}}]}]}
    line = render_waits.cause_line(doc)
    assert line is not None and "\x1b" not in line
    assert "task 'evil\\\\x1b[2J'" in line or "evil\\x1b[2J" in line
    assert all("\x1b" not in ln for ln in render_waits.section(doc))
