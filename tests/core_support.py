"""Helpers shared by the tests: loop factories, settings, and pinned lines.

The one line-marker convention: a test marks the line it expects a dump to name
with a trailing ``# pin: NAME`` comment, and ``pin(path, NAME)`` finds that line,
in the test's own source (``pin(__file__, NAME)``) or in a script the test writes
and runs (``pin(script_path, NAME)``), so the expected file, line and code come
from the file itself, never typed twice. Reading dumps: ``conftest.dumps()`` and
``conftest.only_dump()``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import uvloop
from conftest import dumps

LoopFactory = Callable[[], asyncio.AbstractEventLoop]

LOOP_FACTORIES = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]
"""Parametrize a ``loop_factory`` argument over the stdlib loop and uvloop."""

FAST: dict[str, Any] = {"threshold": 0.3, "interval": 0.05, "native": False}
"""Settings for most tests: a short threshold, frequent checks, no py-spy."""


class Pin(NamedTuple):
    file: str
    line: int
    code: str


def pin(path: str | Path, name: str) -> Pin:
    """The one line of ``path`` carrying the comment ``# pin: name``."""
    mark = re.compile(rf"# pin: {re.escape(name)}(?=\s|$)")
    lines = Path(path).read_text().splitlines()
    hits = [i for i, text in enumerate(lines, 1) if mark.search(text)]
    assert len(hits) == 1, f"'# pin: {name}' found {len(hits)} times in {path}"
    return Pin(str(path), hits[0], lines[hits[0] - 1].strip())


def assert_frame_is(frame: dict[str, Any] | None, expected: Pin) -> None:
    """A dump frame (``blocking_frame``/``app_frame``) is exactly the pinned line."""
    assert frame is not None
    assert (frame["file"], frame["line"], frame["code"]) == tuple(expected)


def run_loop(factory: LoopFactory, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` to completion on a fresh loop from ``factory``, then close it."""
    loop = factory()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def release_when_dumped(dump_dir: Path, release: Callable[[], object], count: int = 1,
                        timeout: float = 15.0) -> threading.Thread:
    """Call ``release()`` once ``count`` freeze dumps exist (or after ``timeout`` s).

    The blocked loop thread waits for that release: the block lasts as long
    as detection takes, which keeps the suite fast and not timing-bound. The
    timeout only ends a block that was never detected (the test then fails).
    """

    def run() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(dumps(dump_dir)) < count:
            time.sleep(0.01)
        release()

    t = threading.Thread(target=run, name="test-releaser", daemon=True)
    t.start()
    return t
