"""structlog events and on_freeze hooks, delivered from their own thread.

The watchdog never logs itself: a logging handler may be blocked by the very
thread that froze (a full stderr pipe, a handler lock held mid-write). Events
go through a SimpleQueue (put() never blocks on a Python-level lock) to the
``freezewatch-events`` thread, which calls structlog and the hooks. If that
thread is stuck, the watchdog goes on detecting and writing dumps.

Where events go: through structlog when the application configured it;
otherwise through the standard ``logging`` module (logger ``freezewatch``)
when logging has handlers; otherwise to stderr in structlog's console format.
Never to stdout: stdout belongs to the program (``freezewatch run -- tool >
out.json`` must leave ``out.json`` as the tool wrote it). structlog's own
default, a ``PrintLogger`` on stdout, is what an unconfigured structlog would
do, so freezewatch does not leave the choice to it. Decided per event: an
application that configures logging after install() is followed.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from .._events import FreezeEvent
from .._redact import escape
from . import report as _report
from .report import Report

Hook = Callable[[FreezeEvent], Any]
_STOP = object()


class EventSink:
    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def emit(
        self, event: FreezeEvent, hooks: tuple[Hook, ...] = (), level: str = "warning",
        report: Report | None = None,
    ) -> None:
        self._ensure_thread()
        self._q.put((event, hooks, level, report))

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                ctx = contextvars.Context()  # the installer's context must not leak into events
                self._thread = threading.Thread(
                    target=ctx.run, args=(self._run,), name="freezewatch-events", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            event, hooks, level, rep = item
            try:
                log = _logger()
                getattr(log, level)(event.event, **_log_fields(event))
            except Exception:  # boundary: the application's logging config, a closed stderr
                self.failures += 1
                log = _NullLog()
            for hook in hooks:
                try:
                    hook(event)
                except Exception as e:  # boundary: user hook
                    self.failures += 1
                    with contextlib.suppress(Exception):
                        log.error("hook_failed", hook=repr(hook), error=repr(e))
            sinks = _report.sinks()
            if sinks:
                rep = rep if rep is not None else Report(event, level=level)
                for sink in sinks:
                    try:
                        sink.deliver(rep)
                    except Exception as e:  # boundary: an optional sink (OTel, Sentry)
                        self.failures += 1
                        with contextlib.suppress(Exception):
                            log.error("sink_failed", sink=sink.name, error=repr(e))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every event queued so far was delivered (tests, shutdown)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._q.put(done)
        return done.wait(timeout)

    def after_fork(self) -> None:
        """In a forked child: the thread did not survive the fork; start afresh."""
        self._q = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def stop(self, timeout: float = 1.0) -> None:
        t = self._thread
        if t is not None and t.is_alive():
            self._q.put(_STOP)
            t.join(timeout)
        self._thread = None


class _NullLog:
    """Where events go when no logger could be made (stderr closed): nowhere."""

    def error(self, *args: Any, **kwargs: Any) -> None:
        pass


def _log_fields(event: FreezeEvent) -> dict[str, object]:
    """The event's fields, plus the contract's names for its seconds: ``duration``
    on ``*_ended`` events, ``blocked_for`` on the others (``seconds`` stays too).

    Text fields are escaped (``_redact.escape``): a request name or a file name
    with ESC or a newline in it must not reach a console or forge a log line.
    """
    fields = {k: escape(v) if isinstance(v, str) else v for k, v in event.fields().items()}
    fields["duration" if event.event.endswith("_ended") else "blocked_for"] = event.seconds
    return fields


events = EventSink()


def _logger() -> Any:
    """The logger for one event: the application's structlog configuration,
    else stdlib logging when it has handlers, else stderr (never stdout)."""
    import structlog  # imported here only: the log sink is structlog's one user

    if structlog.is_configured():
        return structlog.get_logger("freezewatch")
    std = logging.getLogger("freezewatch")
    err = sys.stderr
    if std.hasHandlers() or err is None:  # no stderr (pythonw): logging's lastResort copes
        # The application uses the standard logging module: its handlers,
        # format and level apply. The message is the event and its fields.
        return structlog.wrap_logger(std, processors=[_plain],
                                     wrapper_class=structlog.BoundLogger)
    if getattr(err, "closed", False):  # a helper process closed it: nowhere to write
        raise ValueError("stderr is closed")
    colors = bool(getattr(err, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
    return structlog.wrap_logger(
        structlog.PrintLogger(err),
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ],
        wrapper_class=structlog.BoundLogger,
    )


def _plain(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
    """``freeze_detected key=value ...`` for a stdlib logging message (its
    handler adds the time and level)."""
    event = event_dict.pop("event", "")
    parts = [str(event)]
    for key, value in sorted(event_dict.items()):
        text = str(value)
        parts.append(f"{key}={text!r}" if not text or " " in text else f"{key}={text}")
    return " ".join(parts)
