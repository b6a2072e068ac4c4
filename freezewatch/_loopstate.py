"""The state of one watched loop, shared by the modules that act on it.

``LoopState`` holds every attribute of a watched loop and the small lookups
they all need (its name, thread, in-flight units). The behaviour is split by
subject, each a class in its own module, combined into ``LoopWatch``:

- ``_loopwatch``      heartbeat, the watchdog's round (``tick``), parking;
- ``_freezes``        freezes seen live: declare, update, end;
- ``_late_freezes``   freezes nobody saw live (a C call held the GIL, or it
                      ended between two checks);
- ``_stalls``         watch() units overdue while the loop is alive.

Threading: ``_beat`` runs on the loop thread; everything else runs on the
watchdog thread (``tick``) or at install/uninstall. The two sides share only
plain attributes whose single stores are atomic under the GIL; no lock is
taken on the heartbeat path, so a frozen loop thread can never hold
something the watchdog waits for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
import time
import types
from typing import Any

from . import _idle
from ._config import Config
from ._faulthandler import Capture
from ._inflight import Unit
from ._inflight import records as inflight_records
from ._sched import RunDelay
from ._sinks.log import Hook
from ._snapshot import kernel as _kernel
from ._snapshot.model import Frame, InflightUnit, LoopInfo, Native
from ._snapshot.native import find_pyspy
from ._snapshot.waits import WaitSampler

_HANDLE_RUN = asyncio.events.Handle._run.__code__
_OWN_FILES = os.path.dirname(os.path.abspath(__file__)) + os.sep
_DEBUGGER_FILES = ("bdb.py", "pdb.py")
NOT_SEEN = Frame("<not captured>", 0, "<freeze not seen live>", None)


def loops_on_stack(frame: types.FrameType | None,
                   any_name: bool = False) -> list[asyncio.AbstractEventLoop]:
    """Event loops referenced by the frames of a stack, innermost first: by the
    locals ``self``, ``loop`` and ``self._loop`` (what runs a loop), or by any
    local with ``any_name``. freezewatch's own frames are skipped: they only
    refer to loops (``install(loop=...)``), never run one. Reads another
    thread's frames: tolerates changes."""
    found: list[asyncio.AbstractEventLoop] = []
    depth = 0
    while frame is not None and depth < 200:
        depth += 1
        if frame.f_code.co_filename.startswith(_OWN_FILES):
            frame = frame.f_back
            continue
        try:
            local = frame.f_locals
            me = local.get("self")
            cands = [me, local.get("loop"), getattr(me, "_loop", None)]
            if any_name:
                cands.extend(local.values())
        except Exception:  # a frame changing under us: skip it
            cands = []
        found.extend(c for c in cands if isinstance(c, asyncio.AbstractEventLoop))
        frame = frame.f_back
    return found


@dataclasses.dataclass
class FreezeState:
    start: float  # monotonic: when the unanswered heartbeat was sent
    detected_at: float  # wall clock
    signature: str
    frame: tuple[str, int, str]
    json_path: str | None
    doc: dict[str, Any] | None
    next_update: float
    updates: int = 0


class LoopState:
    """Attributes of one watched loop and the lookups every part needs."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, config: Config,
                 hooks: tuple[Hook, ...] = (), install_thread: int | None = None) -> None:
        self.loop = loop
        self.config = config
        self.hooks = hooks
        self.inflight: dict[int, Unit] = {}
        self.freezes = 0
        self.stalls = 0
        self.late_freezes = 0
        self.suspensions = 0
        self.dumps: list[str] = []
        self.dump_failures = 0
        self.closed = False
        self._install_thread = install_thread
        self._caller_thread = threading.get_ident()  # install() builds the handle
        self._thread_id: int | None = install_thread if loop is not None else None
        self._name_of: tuple[int | None, str] = (None, "")  # (thread, its name): see name
        # Heartbeat. Sequence numbers tell a late answer from a current one.
        self._sent_seq = 0
        self._sent_at = 0.0
        self._pending = False
        self._answered_seq = 0
        self._answered_at = 0.0
        self._ignored_seq = -1  # a beat whose delay is explained (debugger, stopped loop)
        self._void_seq = -1  # a beat whose lag is void (process suspended meanwhile)
        self._last_real_beat = 0.0
        self._idle_code: types.CodeType | None = None
        self._idle_line = -1
        self._learned = False
        # Selector wrapper that lets the watchdog park while the loop is idle.
        self.idle: _idle.IdleState | None = None
        self._idle_tried = False
        self._exits_seen = -1
        self._beat_cb = self._beat  # bound once: no allocation per beat
        _kernel.watch_gc()  # a flag while a collection runs: cause "garbage collection"
        # allow_blocking(): depth > 0 suppresses; a beat sent before the last
        # exit is measured from that exit.
        self.allow_depth = 0
        self.allow_exit_at = 0.0
        self._freeze: FreezeState | None = None
        self._last_stall_scan = 0.0
        self.waits = WaitSampler()  # watchdog thread only
        self._next_wait_sample = 0.0
        self._pyspy = find_pyspy(config.pyspy_path) if config.native else None
        # Set by the watchdog before each tick: faulthandler's stacks when it
        # fired since the last round (the watchdog could not run: GIL held).
        self.gil_capture: Capture | None = None
        # A GIL-held freeze pinned on the sentinel's py-spy capture (frames, native).
        self._sentinel_pin: tuple[tuple[Frame, ...], Native] | None = None
        self._rd: RunDelay | None = None
        self._sent_rd: float | None = None
        self.rd_base: float | None = None  # loop thread's run delay, set by the watchdog
        self._sent_cpu: _kernel.CpuSample | None = None
        self._rd_tid: int | None = None
        self.watchdog_silent = 0.0  # seconds the watchdog could not run before this round
        self._woke_at = -1e9  # when the watchdog last came back from such a silence

    @property
    def name(self) -> str:
        if self.config.name:
            return self.config.name
        # The loop thread's name, looked up once per thread (a walk of every
        # thread under threading's lock; metrics ask for it on every beat).
        tid = self._thread_id
        if tid != self._name_of[0] or not self._name_of[1]:
            from ._snapshot.threads import thread_name

            self._name_of = (tid, thread_name(tid) or "")
        return self._name_of[1] or "loop"

    @property
    def thread_ident(self) -> int | None:
        """The loop's thread (``threading.get_ident()``), once known."""
        return self._thread_id

    def _locate_thread(self, tops: dict[int, types.FrameType]) -> None:
        """Learn the loop's thread before its first heartbeat ran (install(loop=...)
        on a loop that was already frozen): asyncio records it on the loop; for
        uvloop (a C run_forever) find the thread whose stack holds the loop."""
        tid = getattr(self.loop, "_thread_id", None)
        if tid is None:
            me = threading.get_ident()  # the watchdog's own stack holds the loop too
            holders = [ident for ident, top in tops.items() if ident != me and any(
                cand is self.loop for cand in loops_on_stack(top, any_name=True))]
            # The thread that called install(loop=...) holds a reference but
            # usually runs something else: prefer the others; guess only if unique.
            pick = [t for t in holders if t != self._caller_thread] or holders
            tid = pick[0] if len(pick) == 1 else None
        if tid is not None and self._thread_id is None:  # the beat may have won meanwhile
            self._thread_id = tid

    def _info(self) -> LoopInfo:
        tid = self._thread_id
        if tid is None:
            tid = getattr(self.loop, "_thread_id", None)
        from ._snapshot.threads import thread_name

        return LoopInfo(self.name, tid, thread_name(tid))

    def _inflight_records(self, now: float, subject: Any = None) -> tuple[InflightUnit, ...]:
        """Units in flight; those of ``subject`` (default: the running task) are marked."""
        if subject is None and self.loop is not None:
            try:
                subject = asyncio.current_task(self.loop)
            except Exception:  # a foreign loop type: no task to mark
                subject = None
        return inflight_records(self.inflight, now, subject)

    def _debugger_stopped(self, tops: dict[int, types.FrameType]) -> bool:
        frame = tops.get(self._thread_id) if self._thread_id is not None else None
        while frame is not None:
            f = frame.f_code.co_filename
            if f.endswith(_DEBUGGER_FILES) or "pydevd" in f:
                return True
            frame = frame.f_back
        return False

    # -- loop thread --------------------------------------------------------
    def _beat(self, seq: int) -> None:
        # Runs on the loop thread: two stores and an ident call. Store the time
        # before the sequence: the watchdog reads the sequence first, so a new
        # sequence always comes with its time.
        self._answered_at = time.monotonic()
        self._answered_seq = seq
        self._thread_id = threading.get_ident()
        if not self._learned:
            self._learn_idle_frame()

    def _learn_idle_frame(self) -> None:
        """Remember where this loop's thread sits when idle (for loops without
        a Python-level selector, e.g. uvloop: the frame that called run_forever)."""
        self._learned = True
        caller = sys._getframe(2)
        if caller.f_code is not _HANDLE_RUN:
            self._idle_code, self._idle_line = caller.f_code, caller.f_lineno
