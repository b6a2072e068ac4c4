"""The handle install() returns: one watched loop, and its heartbeat.

``LoopWatch`` is what a user holds. It carries the loop, its settings, the
detector's state (``state``, see ``_detect``), and the few attributes the
loop thread writes: the heartbeat's answer (``_beat``) and the
``allow_blocking()`` counters. Everything else the watchdog keeps about the
loop is in ``state``; what its sinks keep is in the pipeline.

Threading: ``_beat`` runs on the loop thread (two stores and an ident call);
``blocked_for`` and ``active`` run on any thread and only read single
attributes; everything else runs on the watchdog thread or at
install/uninstall. No lock is taken on the heartbeat path, so a frozen
loop thread can never hold something the watchdog waits for.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from typing import Any

from . import _detect, _registry, _state
from ._config import Config
from ._decisions import KernelWait
from ._events import FreezeEvent
from ._inflight import Unit
from ._loopwait import WaitReader
from ._rundelay import RunDelay
from ._selector import IdleState
from ._sinks.log import Hook, events
from ._sinks.report import Report
from ._snapshot.cpu import CpuSample, native_id_of
from ._snapshot.model import LoopInfo
from ._snapshot.native import find_pyspy
from ._snapshot.threads import thread_name
from ._snapshot.waits import WaitSampler

_HANDLE_RUN = asyncio.events.Handle._run.__code__


class LoopWatch:
    """The handle install() returns: one watched event loop.

    Read-only attributes for users: ``loop``, ``config``, ``name``, ``active``,
    ``freezes`` (count), ``dumps`` (paths of .json dumps written),
    ``dump_failures``, ``stalls``. ``uninstall()`` stops watching this loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None, config: Config,
                 hooks: tuple[Hook, ...] = (), install_thread: int | None = None) -> None:
        self.loop = loop
        self.config = config
        self.hooks = hooks
        self.state = _detect.LoopState(config.threshold, config.interval,
                                       config.idle_beat_every, tuple(config.update_after))
        self.inflight: dict[int, Unit] = {}
        self.dumps: list[str] = []
        self.dump_failures = 0
        self.last_dump_error: str | None = None
        self.closed = False
        self.install_thread = install_thread
        self.caller_thread = threading.get_ident()  # install() builds the handle
        self._thread_id: int | None = install_thread if loop is not None else None
        self._name_of: tuple[int | None, str] = (None, "")  # (thread, its name): see name
        # Written by the loop thread (the beat) and allow_blocking().
        self._answered_seq = 0
        self._answered_at = 0.0
        self.allow_depth = 0
        self.allow_exit_at = 0.0
        self.idle_code: types.CodeType | None = None
        self.idle_line = -1
        self._learned = False
        self._learned_on: int | None = None
        self._beat_cb = self._beat  # bound once: no allocation per beat
        # Observation resources (watchdog thread only).
        self.idle: IdleState | None = None  # the selector wrapper's state, once attached
        self.idle_tried = False
        self.exits_seen = -1
        self.waits = WaitSampler()
        self.pyspy = find_pyspy(config.pyspy_path) if config.native else None
        self.sent_cpu: CpuSample | None = None
        self.rd: RunDelay | None = None
        self.rd_tid: int | None = None
        self.rd_base: float | None = None  # loop thread's run delay, refreshed by the watchdog
        # uvloop: the last round saw the loop thread at its idle frame; its epoll wait.
        self.frame_idle = False
        self.kw: WaitReader | None = None
        self.kw_tid: int | None = None

    # -- for users ------------------------------------------------------------
    @property
    def name(self) -> str:
        if self.config.name:
            return self.config.name
        # The loop thread's name, looked up once per thread (a walk of every
        # thread under threading's lock; metrics ask for it on every beat).
        tid = self._thread_id
        if tid != self._name_of[0] or not self._name_of[1]:
            self._name_of = (tid, thread_name(tid) or "")
        return self._name_of[1] or "loop"

    @property
    def active(self) -> bool:
        """True while a watchdog thread is watching (or waiting for) this loop."""
        wd = _state.watchdog
        return not self.closed and wd is not None and wd.is_alive() and self in wd.watches

    @property
    def freezes(self) -> int:
        return self.state.freezes

    @property
    def stalls(self) -> int:
        return self.state.stalls

    @property
    def late_freezes(self) -> int:
        """Freezes not seen live (a C call held the GIL, or it ended between checks)."""
        return self.state.late_freezes

    @property
    def suspensions(self) -> int:
        """Times a late beat was explained by a suspended or starved process."""
        return self.state.suspensions

    @property
    def thread_ident(self) -> int | None:
        """The loop's thread (``threading.get_ident()``), once known."""
        return self._thread_id

    def blocked_for(self) -> float:
        """Seconds this loop has been unresponsive right now (0.0 when healthy)."""
        return _detect.blocked_for(self.state, time.monotonic(), self.allow_exit_at)

    def uninstall(self) -> None:
        """Stop watching this loop (idempotent)."""
        _registry.remove(self)

    def __repr__(self) -> str:
        state = ("frozen" if self.state.freeze else
                 ("active" if self.active else "inactive"))
        return f"<freezewatch.LoopWatch {self.name!r} {state} freezes={self.freezes}>"

    # -- lookups the watchdog and the pipeline need ----------------------------
    def set_thread(self, tid: int | None) -> None:
        if tid is not None and self._thread_id is None:  # the beat may have won meanwhile
            self._thread_id = tid

    def info(self) -> LoopInfo:
        tid = self._thread_id
        if tid is None:
            tid = getattr(self.loop, "_thread_id", None)
        return LoopInfo(self.name, tid, thread_name(tid))

    def loop_run_delay(self) -> float | None:
        """Seconds the loop's thread has waited for a CPU (see _rundelay); watchdog thread."""
        tid = self._thread_id
        if tid != self.rd_tid:
            self.close_run_delay()
            self.rd_tid = tid
            self.rd = RunDelay.of_thread(native_id_of(tid))
        return self.rd.read() if self.rd is not None else None

    def kernel_wait(self) -> KernelWait | None:
        """The loop thread's epoll wait as /proc shows it (``_loopwait``); watchdog thread."""
        tid = self._thread_id
        if tid != self.kw_tid or self.kw is None:
            if self.kw is not None:
                self.kw.close()
            self.kw_tid = tid
            nid = native_id_of(tid)
            self.kw = WaitReader(nid) if nid is not None else None
        return self.kw.read() if self.kw is not None else None

    def close_run_delay(self) -> None:
        if self.rd is not None:
            self.rd.close()
            self.rd = None

    def answered(self) -> tuple[int, float]:
        """The last beat the loop ran: (sequence, when). Sequence first: see _beat."""
        seq = self._answered_seq
        return seq, self._answered_at

    def send(self, now_fn: Any = time.monotonic) -> None:
        """Send a heartbeat (watchdog thread). Nothing between the stamp and the
        send may release the GIL: a busy loop can keep it from us for a while,
        and that wait would count as the loop's lag."""
        from ._snapshot.cpu import cpu_sample

        assert self.loop is not None
        # The loop thread's CPU clock at the send: a freeze's dump compares
        # against it (spinning or blocked).
        self.sent_cpu = cpu_sample(self._thread_id)
        seq = _detect.sent(self.state, now_fn(), self.rd_base)
        try:
            self.loop.call_soon_threadsafe(self._beat_cb, seq)
        except RuntimeError:  # closed between our check and the call: loop gone
            _detect.send_failed(self.state)

    # -- loop thread --------------------------------------------------------------
    def stall_ended(self, unit: Unit) -> None:
        """A stalled unit finally finished (loop thread, or the watchdog dropping a
        finished client request): one event, through the log sink's queue."""
        event = FreezeEvent("stall_ended", self.name,
                            round(time.monotonic() - unit.started, 3),
                            reason=f"{unit.kind} {unit.shown_name()!r}")
        events.emit(event, self.hooks, "info", Report(event, level="info"))

    def _beat(self, seq: int) -> None:
        # Runs on the loop thread. Store the time before the sequence: the
        # watchdog reads the sequence first, so a new sequence always comes
        # with its time.
        self._answered_at = time.monotonic()
        self._answered_seq = seq
        tid = self._thread_id = threading.get_ident()
        if not self._learned or tid != self._learned_on:
            self._learned_on = tid
            # The kernel's id of this thread, said by the thread itself:
            # threading's record is stale after a fork (kernel view, signals).
            _state.native_ids[tid] = threading.get_native_id()
            self._learn_idle_frame()

    def _learn_idle_frame(self) -> None:
        """Remember where this loop's thread sits when idle (for loops without
        a Python-level selector, e.g. uvloop: the frame that called run_forever)."""
        self._learned = True
        caller = sys._getframe(2)
        if caller.f_code is not _HANDLE_RUN:
            self.idle_code, self.idle_line = caller.f_code, caller.f_lineno
