"""The one watchdog thread: every loop's heartbeats, deadlines and captures.

It waits on a threading.Event with a timeout (never a bare sleep), so
uninstall() wakes it at once. It runs in a fresh contextvars.Context, so the
installer's request context does not leak into its events.
"""

from __future__ import annotations

import contextvars
import threading
import time
import types

from . import _health
from ._events import FreezeEvent
from ._faulthandler import Capture
from ._gil import GilLayers
from ._loopwatch import LoopWatch
from ._sinks.log import events
from ._snapshot.frames import thread_top_frames

THREAD_NAME = "freezewatch-watchdog"


class Watchdog:
    def __init__(self) -> None:
        self._stop = threading.Event()
        # Replaced as a whole (copy-on-write) by install/uninstall; the
        # watchdog reads the reference once per round, so it needs no lock.
        self.watches: tuple[LoopWatch, ...] = ()
        self.errors = 0
        # faulthandler timer + sentinel process: see what this thread cannot
        # (a C call holding the GIL). Used by this thread only.
        self.gil = GilLayers()
        self._thread = threading.Thread(
            target=contextvars.Context().run, args=(self._run,), name=THREAD_NAME, daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _gil_round(self, now: float, watches: tuple[LoopWatch, ...],
                   silent: float) -> Capture | None:
        try:
            return self.gil.round(now, watches, silent)
        except Exception as e:  # boundary: the GIL layers; detection goes on without them
            self.errors += 1
            if self.errors <= 20:
                events.emit(FreezeEvent("watchdog_error", "*", 0.0,
                                        reason=f"gil layers: {type(e).__name__}: {e}"), (), "error")
            return None

    def _run(self) -> None:
        try:
            self._rounds()
        finally:
            self.gil.close()  # cancel our faulthandler timer, let the sentinel go

    def _rounds(self) -> None:
        expected = time.monotonic()
        cpu_before = time.process_time()
        wall_before = expected
        while not self._stop.is_set():
            now = time.monotonic()
            watches = self.watches
            # Guard against false alarms: if we woke far later than asked and
            # the process used little CPU meanwhile, the whole process was
            # stopped or starved (SIGSTOP, suspend, a throttled container) -
            # not a frozen loop. A GIL-holding C call also delays us, but
            # burns CPU while it does.
            late = now - expected
            silent = now - wall_before  # how long this thread could not run
            gil_capture = self._gil_round(now, watches, silent)
            if watches and late > 0.5 * min(w.config.threshold for w in watches):
                cpu = time.process_time() - cpu_before
                if cpu < 0.5 * (now - wall_before):
                    for w in watches:
                        # faulthandler saw this loop busy (not in its selector)
                        # meanwhile: a GIL-held freeze, not a suspension.
                        if not w.busy_in(gil_capture):
                            w.ignore_pending()
                    events.emit(FreezeEvent("process_suspended", "*", round(late, 3),
                                            reason="the whole process was not running"),
                                (), "info")
            tops: dict[int, types.FrameType] | None = None
            for w in watches:
                try:
                    if tops is None:
                        tops = thread_top_frames()
                    w.gil_capture = gil_capture  # valid for this round only
                    w.watchdog_silent = silent
                    w.tick(now, tops)
                except Exception as e:  # boundary: one loop's round; the watchdog survives
                    self.errors += 1
                    if self.errors <= 20:
                        events.emit(FreezeEvent("watchdog_error", w.name, 0.0,
                                                reason=f"{type(e).__name__}: {e}"), (), "error")
            del tops
            _health.after_round(watches, now)  # gauges + systemd pings; never raises
            wait = min((w.next_wake(time.monotonic()) for w in watches), default=0.1)
            wall_before = time.monotonic()
            cpu_before = time.process_time()
            expected = wall_before + wait
            self._stop.wait(wait)
