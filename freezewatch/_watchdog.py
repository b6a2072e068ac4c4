"""The one watchdog thread: every loop's heartbeats, deadlines and captures.

It waits on a threading.Event with a timeout (never a bare sleep), so
uninstall() wakes it at once. It runs in a fresh contextvars.Context, so the
installer's request context does not leak into its events.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
import types

from . import _health, _state
from ._events import FreezeEvent
from ._faulthandler import Capture
from ._gil import GilLayers
from ._loopwatch import LoopWatch
from ._sched import RunDelay
from ._sinks.log import events
from ._snapshot.frames import thread_top_frames

THREAD_NAME = "freezewatch-watchdog"
RUN_DELAY_EVERY = 0.5
MAX_PARK = 5.0
"""Longest parked sleep, a cap: the idle heartbeat (``idle_beat_every``) decides."""
PARK_MAX_EXITS = 4
"""A loop whose selector returned more often than this since the previous round
is busy: do not park on it. A busy server sits in select() between requests
most of the time, so the instant test alone parked the watchdog only for the
loop to wake it a millisecond later: ~50 % more rounds and a wake-up
(Event.set, a futex call) on the loop thread each time. An idle loop's own
heartbeat answer costs it about two selector returns. After a loop woke a parked
watchdog, one round runs unparked first, so the count spans a whole interval."""


_NO_FRAMES: dict[int, types.FrameType] = {}  # never written: tick() only reads it


def _needs_frames(w: LoopWatch) -> bool:
    """Does this round's tick() of ``w`` read the threads' frames?

    Only to find a loop not yet running, to tell idle from busy without a
    selector wrapper (uvloop), or to declare a freeze (debugger check, loop
    thread lookup), which needs a heartbeat out. A busy loop with its beat
    answered needs none: sys._current_frames() builds a dict of every
    thread, so it is skipped in most rounds. Cannot go stale before the
    tick: only this thread sends beats; the loop thread can only answer one
    (then the tick does not declare)."""
    return w.loop is None or w.idle is None or (w._pending and w._answered_seq != w._sent_seq)


class _Wakeup:
    """A wake-up flag for the watchdog: ``set()`` from any thread, ``wait()`` on the watchdog.

    A bare lock used as a binary semaphore: released means set. It does what
    the watchdog needs of a threading.Event for a fraction of the cost:
    Event.wait builds a Condition waiter (a new lock, a deque append, three
    lock operations in Python) on every round, this is one C call. ``wait``
    consumes the flag (the watchdog clears it at every round anyway)."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held: not set

    def set(self) -> None:
        # Lock.release may be called by any thread; two set() racing: the
        # second finds it released already, which is the state it wants.
        with contextlib.suppress(RuntimeError):
            self._lock.release()

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self, timeout: float) -> bool:
        """Sleep until set() or ``timeout`` seconds; True if set (the flag is consumed)."""
        return self._lock.acquire(True, max(0.0, timeout))


class Watchdog:
    def __init__(self) -> None:
        # One flag for both reasons to wake early: stop(), and a parked
        # watchdog's loop leaving its selector (see _idle).
        self._event = _Wakeup()
        self._stopping = False
        # Set at the end of each round: releases a saturated loop that stood
        # aside so this thread could take the GIL (see _idle.WakingSelector).
        self.handoff = threading.Event()
        # Replaced as a whole (copy-on-write) by install/uninstall; the
        # watchdog reads the reference once per round, so it needs no lock.
        self.watches: tuple[LoopWatch, ...] = ()
        # Each loop's selector-return count at the previous round (watchdog
        # thread only): tells a busy loop from an idle one (see _park).
        self._exits_before: dict[LoopWatch, int] = {}
        self.errors = 0
        self.rounds = 0  # rounds run (tests and benchmarks: parking shows here)
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
        self._stopping = True
        self._event.set()
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

    def wake(self) -> None:
        """Called on a loop thread when its loop leaves select() while we are parked."""
        # The sleep we announced to the sentinel is cut short: silence counts
        # from now (a C call holding the GIL may follow at once).
        self.gil.sentinel.resume()
        self._event.set()

    def _park(self, watches: tuple[LoopWatch, ...], min_threshold: float,
              loop_woke: bool = False) -> float | None:
        """Sleep longer than ``interval`` when every loop waits in its selector.

        The sentinel is told the silence is chosen (``stand_down``)."""
        if not watches:
            self._exits_before = {}
            return None
        before, self._exits_before = self._exits_before, {
            w: w.idle.exits for w in watches if w.idle is not None}
        if loop_woke:
            # A loop cut our last parked sleep short: watch one interval
            # unparked, so the next round sees its selector's rate over a
            # whole interval (one return since a park a millisecond ago says
            # nothing about a loop that returns 500 times a second).
            return None
        for w, exits in self._exits_before.items():
            # Busy since the previous round: it will leave select() again soon.
            if exits - before.get(w, exits) > PARK_MAX_EXITS:
                return None
        now = time.monotonic()
        waits = []
        for w in watches:
            sleep = w.park_for(now)
            if sleep is None:
                for x in watches:
                    x.unpark()
                return None
            waits.append(sleep)
        notifier = _state.notifier
        if notifier is not None:  # systemd must be fed on time
            waits.append(notifier.period / 2)
        return min([*waits, MAX_PARK])

    def _suspended(self, watches: tuple[LoopWatch, ...], seconds: float, reason: str) -> None:
        for w in watches:
            w.ignore_pending()
        events.emit(FreezeEvent("process_suspended", "*", round(seconds, 3), reason=reason),
                    (), "info")

    def _starved(self, watches: tuple[LoopWatch, ...], silent: float,
                 own_before: float | None, loops_before: dict[LoopWatch, float | None]) -> bool:
        """Was our silence an overloaded machine (we, or the GIL holder, sat on a
        run queue) rather than a C call holding the GIL? See _sched."""
        own = self._own_delay.read()
        if own is None or own_before is None:
            return False
        waited = own - own_before
        for w in watches:
            before, after = loops_before.get(w), w.loop_run_delay()
            if before is not None and after is not None:
                waited = max(waited, (own - own_before) + (after - before))
        return waited >= 0.5 * silent

    def _rounds(self) -> None:
        # Opened on this thread: /proc/thread-self is the watchdog's own entry.
        self._own_delay = RunDelay("/proc/thread-self/schedstat")
        expected = time.monotonic()
        cpu_before = time.process_time()
        wall_before = expected
        own_before: float | None = None
        rd_at = -RUN_DELAY_EVERY
        parked_wait = False
        loops_before: dict[LoopWatch, float | None] = {}
        loop_woke = False  # a loop ended our last parked sleep early
        while not self._stopping:
            self._event.clear()  # a wake-up after this point makes the next wait return
            self.rounds += 1
            now = time.monotonic()
            cpu_top = time.process_time()
            watches = self.watches
            min_threshold = min((w.config.threshold for w in watches), default=1.0)
            # Guard against false alarms: if we woke far later than asked and
            # the process used little CPU meanwhile, the whole process was
            # stopped or starved (SIGSTOP, suspend, a throttled container) -
            # not a frozen loop. A GIL-holding C call also delays us, but
            # burns CPU while it does.
            late = now - expected
            silent = now - wall_before  # how long this thread could not run
            if parked_wait:
                # We chose to sleep: only what came after the wake-up we asked
                # for (a loop leaving select, or the timeout) is silence.
                woke = max((w.idle.woke_at for w in watches if w.idle is not None),
                           default=0.0)
                loop_woke = woke > wall_before
                silent = now - woke if loop_woke else max(0.0, late)
                self.gil.sentinel.stand_down(0.0)
                parked_wait = False
            gil_capture = self._gil_round(now, watches, silent)
            explained = False  # our silence had a cause other than a held GIL
            if watches and silent > 0.5 * min_threshold and self._starved(
                    watches, silent, own_before, loops_before):
                explained = True
                gil_capture = None  # what faulthandler saw was load, not a held GIL
                self._suspended(watches, silent, "the machine was overloaded: the watchdog "
                                "or the loop thread waited for a CPU")
            elif watches and late > 0.5 * min_threshold:
                cpu = time.process_time() - cpu_before
                if cpu < 0.5 * (now - wall_before):
                    explained = True
                    # faulthandler saw a loop busy (not in its selector)
                    # meanwhile: a GIL-held freeze, not a suspension.
                    busy = [w for w in watches if w.busy_in(gil_capture)]
                    self._suspended(tuple(w for w in watches if w not in busy), late,
                                    "the whole process was not running")
            tops: dict[int, types.FrameType] | None = None
            for w in watches:
                try:
                    if tops is None and _needs_frames(w):
                        tops = thread_top_frames()
                    w.gil_capture = gil_capture  # valid for this round only
                    w.watchdog_silent = 0.0 if explained else silent
                    w.tick(now, _NO_FRAMES if tops is None else tops)
                except Exception as e:  # boundary: one loop's round; the watchdog survives
                    self.errors += 1
                    if self.errors <= 20:
                        events.emit(FreezeEvent("watchdog_error", w.name, 0.0,
                                                reason=f"{type(e).__name__}: {e}"), (), "error")
            del tops
            _health.after_round(watches, now)  # gauges + systemd pings; never raises
            # A stop that lands inside this round (after `now` was read) is not
            # seen by the lateness check of the next round: check the round
            # itself. A long round that used little CPU was stopped or waited on
            # py-spy (which pauses us too): beats sent before it prove nothing.
            spent = time.monotonic() - now
            if watches and spent > 0.5 * min_threshold and (
                    time.process_time() - cpu_top) < 0.5 * spent:
                for w in watches:
                    w.ignore_pending()
            wait = min((w.next_wake(time.monotonic()) for w in watches), default=0.1)
            parked = self._park(watches, min_threshold, loop_woke)
            loop_woke = False
            if parked is not None:
                wait = parked
                parked_wait = True
                # The sentinel takes a silent watchdog for a held GIL: tell it
                # this silence is chosen (a loop that wakes clears it at once).
                self.gil.sentinel.stand_down(wait + 0.25)
            # Run-delay baselines, refreshed twice a second rather than every
            # round: each read is a syscall that hands the GIL to a busy loop
            # thread and back. A baseline up to 0.5 s old only widens the
            # window the starvation tests look at.
            if now - rd_at >= RUN_DELAY_EVERY:
                rd_at = now
                own_before = self._own_delay.read()
                for w in watches:
                    w.rd_base = w.loop_run_delay()
                loops_before = {w: w.rd_base for w in watches}
            wall_before = time.monotonic()
            cpu_before = time.process_time()
            expected = wall_before + wait
            self.handoff.set()  # wake loops standing aside for this round...
            self.handoff.clear()  # ...and re-arm for the next one
            for w in watches:
                if w.idle is not None:
                    w.idle.due = expected
            self._event.wait(wait)
