"""pytest plugin: fail a test during which an event loop was blocked too long.

Registered through the ``pytest11`` entry point, so it loads in every pytest
run of every project that installs freezewatch, and is inert unless asked:
``pytest --freezewatch`` (default threshold), ``--freezewatch=0.1``, or the
ini option ``freezewatch = 0.1``. ``@pytest.mark.freezewatch(threshold=2.0)``
raises the threshold for one test, ``enabled=False`` turns it off there,
``enabled=True`` turns it on there even when the run does not ask for it.
The marker works on a class or a module too (``pytestmark =
pytest.mark.freezewatch(enabled=False)``): the closest one to the test wins.
The ini option ``freezewatch_exempt`` lists node id prefixes (a directory,
a file, a class) whose tests are not checked unless a marker turns them on.

How the test's loop is watched: before each test phase (setup, call,
teardown) the plugin calls ``freezewatch.install()`` with no loop, which
watches the first loop that starts running in this thread: the loop
pytest-asyncio (or pytest-aiohttp, or ``asyncio.run`` in the test) runs the
test on. After the phase the handle is removed; a freeze it saw fails the
phase with the blocking line, the application line and the stack.

Loading the plugin imports nothing heavy and starts no thread: freezewatch's
machinery is imported on the first watched test only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._handle import LoopWatch

DEFAULT_THRESHOLD = 0.25
"""Threshold for a bare ``--freezewatch``: above a CI machine's scheduling noise."""
HELP = (
    "fail a test during which an event loop was blocked longer than THRESHOLD "
    f"seconds (bare --freezewatch: {DEFAULT_THRESHOLD:g}; 0 or 'off': off)"
)
EXEMPT_HELP = (
    "node id prefixes, one a line, whose tests freezewatch does not check unless a "
    "marker turns them on (e.g. tests/legacy/, tests/test_sync.py::TestBlocking)"
)
MAX_FREEZES_SHOWN = 3
MAX_STACK_SHOWN = 25
_OFF = {"0", "off", "false", "no", ""}
_ON = {"on", "true", "yes"}

_threshold_key = pytest.StashKey[float | None]()
_dump_dir_key = pytest.StashKey[str]()
_item_threshold_key = pytest.StashKey[float | None]()
_exempt_key = pytest.StashKey[tuple[str, ...]]()


def _parse_threshold(value: object, where: str) -> float | None:
    """A threshold setting -> seconds, or None for off; ValueError naming ``where``."""
    text = str(value).strip().lower()
    if text in _OFF:
        return None
    if text in _ON:
        return DEFAULT_THRESHOLD
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(
            f"freezewatch threshold must be seconds (e.g. 0.1) or 'off', got {value!r} from {where}"
        ) from None
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"freezewatch threshold must be >= 0, got {value!r} from {where}")
    return seconds or None


def _cli_threshold(value: str) -> str:
    # argparse type: reject a path swallowed as the optional value with a hint,
    # e.g. `pytest --freezewatch tests/` (the value is optional, like --cov's).
    try:
        _parse_threshold(value, "--freezewatch")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a threshold in seconds, got {value!r} "
            "(write --freezewatch=0.1, or put --freezewatch after the test paths)"
        ) from None
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("freezewatch", "event loop freezes (freezewatch)")
    group.addoption(
        "--freezewatch", action="store", nargs="?", const=str(DEFAULT_THRESHOLD),
        default=None, type=_cli_threshold, metavar="THRESHOLD", dest="freezewatch", help=HELP,
    )
    parser.addini("freezewatch", HELP, default="")
    parser.addini("freezewatch_exempt", EXEMPT_HELP, type="linelist", default=[])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "freezewatch(threshold=None, enabled=None): per-test freezewatch threshold; "
        "enabled=False turns the check off, enabled=True on",
    )
    option = config.getoption("freezewatch")
    try:
        if option is not None:
            threshold = _parse_threshold(option, "--freezewatch")
        else:
            threshold = _parse_threshold(config.getini("freezewatch"),
                                         "the 'freezewatch' ini option")
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if threshold is not None and _wrapper is None:
        raise pytest.UsageError("freezewatch's pytest plugin needs pluggy >= 1.2 (pytest >= 8)")
    config.stash[_threshold_key] = threshold
    config.stash[_exempt_key] = tuple(p.strip() for p in config.getini("freezewatch_exempt")
                                      if p.strip())


def pytest_report_header(config: pytest.Config) -> str | None:
    threshold = config.stash.get(_threshold_key, None)
    if threshold is None:
        return None
    return f"freezewatch: a test fails if an event loop is blocked > {threshold:g} s"


def _exempt(nodeid: str, prefixes: tuple[str, ...]) -> bool:
    """``nodeid`` lies under one of ``prefixes`` (whole path parts and names only:
    ``tests/test_a.py`` covers ``tests/test_a.py::test_x``, not ``tests/test_ab.py``)."""
    for p in prefixes:
        if nodeid == p or (nodeid.startswith(p) and (
                p.endswith(("/", "::")) or nodeid[len(p)] in "/:[")):
            return True
    return False


def _threshold_for(item: pytest.Item) -> float | None:
    """The threshold in force for ``item`` (None: not watched). The closest marker
    (test, class, module) decides; ``freezewatch_exempt`` turns the run's setting
    off for the tests it lists, which only a marker's ``enabled=True`` turns on."""
    run = base = item.config.stash.get(_threshold_key, None)
    if base is not None and _exempt(item.nodeid, item.config.stash.get(_exempt_key, ())):
        base = None
    mark = item.get_closest_marker("freezewatch")
    if mark is None:
        return base
    unknown = set(mark.kwargs) - {"threshold", "enabled"}
    if unknown or len(mark.args) > 1:
        pytest.fail(f"{item.nodeid}: mark.freezewatch takes threshold= and enabled= only",
                    pytrace=False)
    enabled = mark.kwargs.get("enabled")
    raw = mark.kwargs.get("threshold", mark.args[0] if mark.args else None)
    try:
        threshold = None if raw is None else _parse_threshold(raw, "mark.freezewatch")
    except ValueError as e:
        pytest.fail(f"{item.nodeid}: {e}", pytrace=False)
    if enabled is False or (raw is not None and threshold is None):
        return None
    if enabled is True:
        return threshold or run or DEFAULT_THRESHOLD
    if base is None:
        return None
    return threshold or base


def _dump_dir(config: pytest.Config) -> str:
    """FREEZEWATCH_DUMP_DIR when set (keep dumps as CI artifacts), else a session temp dir."""
    path = config.stash.get(_dump_dir_key, None)
    if path is None:
        path = os.environ.get("FREEZEWATCH_DUMP_DIR") or ""
        if not path:
            factory = getattr(config, "_tmp_path_factory", None)  # pytest's own --basetemp
            path = (str(factory.mktemp("freezewatch", numbered=True)) if factory is not None
                    else tempfile.mkdtemp(prefix="freezewatch-pytest-"))
        config.stash[_dump_dir_key] = path
    return path


# Production layers a test run does not want, unless its environment asks:
# py-spy is slow, a sentinel process per test phase is waste (and the
# faulthandler layer needs it), systemd is not there.
_OFF_IN_TESTS = ("native", "systemd_watchdog")


def _start(item: pytest.Item, threshold: float) -> LoopWatch:
    import dataclasses

    from ._config import ENV_PREFIX, Config
    from ._install import install  # imported here: loading the plugin stays cheap

    known = {f.name for f in dataclasses.fields(Config)}
    off: dict[str, Any] = {name: False for name in _OFF_IN_TESTS
           if name in known and ENV_PREFIX + name.upper() not in os.environ}
    # No loop given: this watches the first loop that starts running in this
    # thread during the phase (the one pytest-asyncio runs the test on). The
    # interval is a fraction of the threshold so a block just past it is
    # still seen live, with its stack.
    return install(
        threshold=threshold, interval=min(0.05, threshold / 4), dump_dir=_dump_dir(item.config),
        dump_rate_window=0.0,  # every test's freeze gets its own dump
        **off,
    )


def _finish(w: LoopWatch) -> tuple[list[str], int]:
    """Stop watching; return the .json dumps of the freezes seen, and how many had none."""
    # A beat answered late but not yet examined, or a freeze not yet ended,
    # shows as blocked_for() > 0: give the watchdog a few rounds to settle it,
    # so the freeze is counted and its dump gets its duration.
    deadline = time.monotonic() + 4 * w.config.interval + 0.5
    while w.blocked_for() > 0 and time.monotonic() < deadline:
        time.sleep(w.config.interval / 2)
    w.uninstall()  # joins the watchdog when it was the last handle: counters are final
    dumps = [p for p in w.dumps if not _is_update(p)]
    return dumps, max(0, w.freezes - len(dumps))


def _is_update(path: str) -> bool:
    doc = _read(path)
    return doc is not None and doc.get("kind") == "freeze-update"


def _read(path: str) -> dict[str, Any] | None:
    import json

    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _frame(f: Any) -> str:
    if not isinstance(f, dict):
        return "(none)"
    return f"{f.get('file')}:{f.get('line')} in {f.get('function')}"


def _short(f: Any, item: pytest.Item) -> str:
    """``file:line`` with the file relative to the rootdir when it lies below it."""
    if not isinstance(f, dict):
        return "?"
    file = str(f.get("file"))
    root = str(item.config.rootpath) + os.sep
    return f"{file[len(root):] if file.startswith(root) else file}:{f.get('line')}"


def _describe(found: list[str], unseen: int, item: pytest.Item, threshold: float) -> str:
    """The failure text: blocking line, application line, stack, dump path."""
    lines: list[str] = []
    test_file = str(getattr(item, "path", ""))
    for path in found[:MAX_FREEZES_SHOWN]:
        doc = _read(path) or {}
        loop = (doc.get("loop") or {}).get("name", "?")
        took = doc.get("duration", doc.get("blocked_for"))
        took_text = f"{took:.2f} s" if isinstance(took, (int, float)) else "?"
        if "duration" not in doc:
            took_text = "at least " + took_text
        bf, af = doc.get("blocking_frame"), doc.get("app_frame")
        # First line (pytest's short summary shows it): where, short, and how long.
        at = af if isinstance(af, dict) else bf
        lines.append(
            f"freezewatch: {_short(at, item)} blocked event loop {loop!r} for {took_text} "
            f"(threshold {threshold:g} s)"
        )
        lines.append(f"Blocked at:  {_frame(bf)}")
        if isinstance(bf, dict) and bf.get("code"):
            lines.append(f"             {bf['code']}")
        if isinstance(af, dict) and af != bf:
            lines.append(f"App line:    {_frame(af)}")
            if af.get("code"):
                lines.append(f"             {af['code']}")
        frames = (doc.get("loop_thread") or {}).get("frames") or []
        # Start the stack at the test's own file when it is on it: the pytest
        # and pluggy frames above it say nothing about the freeze.
        start = next((i for i, f in enumerate(frames) if f.get("file") == test_file), None)
        shown = frames[start:] if start is not None else frames[-MAX_STACK_SHOWN:]
        lines.append("Loop thread stack (most recent call last):")
        for f in shown[-MAX_STACK_SHOWN:]:
            lines.append(f"  {_frame(f)}")
            if f.get("code"):
                lines.append(f"      {f['code']}")
        lines.append(f"Dump: {path}")
        lines.append("")
    if len(found) > MAX_FREEZES_SHOWN:
        lines.append(f"... and {len(found) - MAX_FREEZES_SHOWN} more freeze(s) in this test")
    if unseen:
        lines.append(
            f"freezewatch: an event loop was blocked longer than {threshold:g} s {unseen} "
            "time(s) during this test without a stack: the freeze ended before the watchdog "
            "could look (it could not run: a C call holding the GIL?) or its dump failed"
        )
    return "\n".join(lines).rstrip()


def _watched(item: pytest.Item, when: str) -> Generator[None, Any, Any]:
    if when == "setup":
        # Decided once per test, at setup: a bad marker errors the setup only.
        item.stash[_item_threshold_key] = None
        item.stash[_item_threshold_key] = _threshold_for(item)
    threshold = item.stash.get(_item_threshold_key, None)
    if threshold is None:
        return (yield)
    try:
        w = _start(item, threshold)
    except (ValueError, TypeError) as e:  # a bad FREEZEWATCH_* variable in the environment
        pytest.fail(f"freezewatch: {e}", pytrace=False)
    try:
        result = yield
    except BaseException:
        # The phase failed anyway: keep its own error, add the freeze as a section.
        found, unseen = _finish(w)
        if found or unseen:
            item.add_report_section(when, "freezewatch",
                                    _describe(found, unseen, item, threshold))
        raise
    found, unseen = _finish(w)
    if found or unseen:
        pytest.fail(_describe(found, unseen, item, threshold), pytrace=False)
    return result


_wrapper: Callable[[Any], Any] | None
try:
    _wrapper = pytest.hookimpl(wrapper=True)
except TypeError:  # pluggy < 1.2 has no new-style wrappers: the plugin stays out of the way
    _wrapper = None

if _wrapper is not None:

    @_wrapper
    def pytest_runtest_setup(item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from _watched(item, "setup"))

    @_wrapper
    def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from _watched(item, "call"))

    @_wrapper
    def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, Any, Any]:
        return (yield from _watched(item, "teardown"))
