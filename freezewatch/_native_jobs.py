"""py-spy for a live freeze, off the watchdog thread.

py-spy takes a while to start and then pauses the whole process for its
dump (0.1 s to a few seconds, ``native_timeout`` at most). Run on the
watchdog thread, that wait blinded it: a freeze that began meanwhile went
unseen. Here one ``freezewatch-native`` thread runs the captures the
pipeline asks for, one at a time, and hands each result back through a
queue; the watchdog applies it (rewrites the dump) in its next round, so
only the watchdog ever touches a dump's record or file.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from typing import Any

from . import _gil
from ._snapshot.model import Native

THREAD_NAME = "freezewatch-native"


class NativeJobs:
    """Owned by the pipeline (watchdog thread); the worker thread only runs py-spy."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[tuple[Any, Any] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[Any, Any, Native]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.waiting: dict[int, tuple[Any, Any]] = {}
        """Jobs submitted and not applied yet, by id of their record (watchdog thread)."""

    def submit(self, w: Any, rec: Any) -> None:
        """Take py-spy's trace for ``rec`` (a pipeline Record) of handle ``w``."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=contextvars.Context().run, args=(self._run,),
                                            name=THREAD_NAME, daemon=True)
            self._thread.start()
        self.waiting[id(rec)] = (w, rec)
        self._todo.put((w, rec))

    def _run(self) -> None:
        while True:
            job = self._todo.get()
            if job is None:
                return
            w, rec = job
            try:
                native = _gil.live_native(w.pyspy, w.config.native_timeout)
            except Exception as e:  # boundary: py-spy; the dump says why
                native = Native(False, error=f"native capture failed: {type(e).__name__}: {e}")
            self._done.put((w, rec, native))

    def done(self, wait: float = 0.0) -> list[tuple[Any, Any, Native]]:
        """Results ready now (watchdog thread); with ``wait``, up to that long for the
        captures still in flight."""
        out: list[tuple[Any, Any, Native]] = []
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(self._done.get(timeout=max(0.0, deadline - time.monotonic()))
                           if wait and len(self.waiting) > len(out) else self._done.get_nowait())
            except queue.Empty:
                break
        for _, rec, _ in out:
            self.waiting.pop(id(rec), None)
        return out

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._todo.put(None)
