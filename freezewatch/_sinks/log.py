"""structlog events and on_freeze hooks, delivered from their own thread.

The watchdog never logs itself: a logging handler may be blocked by the very
thread that froze (a full stderr pipe, a handler lock held mid-write). Events
go through a SimpleQueue (put() never blocks on a Python-level lock) to the
``freezewatch-events`` thread, which calls structlog and the hooks. If that
thread is stuck, the watchdog goes on detecting and writing dumps.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

from .._events import FreezeEvent
from .._redact import escape

Hook = Callable[[FreezeEvent], Any]
_STOP = object()


class EventSink:
    def __init__(self) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def emit(
        self, event: FreezeEvent, hooks: tuple[Hook, ...] = (), level: str = "warning"
    ) -> None:
        self._ensure_thread()
        self._q.put((event, hooks, level))

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
        import structlog  # imported here only: the log sink is structlog's one user

        log = structlog.get_logger("freezewatch")
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            event, hooks, level = item
            try:
                getattr(log, level)(event.event, **_log_fields(event))
            except Exception:  # boundary: the application's logging config
                self.failures += 1
            for hook in hooks:
                try:
                    hook(event)
                except Exception as e:  # boundary: user hook
                    self.failures += 1
                    with contextlib.suppress(Exception):
                        log.error("hook_failed", hook=repr(hook), error=repr(e))

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
