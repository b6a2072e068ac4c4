"""What the watchdog sees of one loop in a round: the detector's ``Observation``.

Watchdog thread only. Reads the handle's beat cell and allow_blocking()
counters, the loop's state, the selector wrapper's flags, the faulthandler
capture of this round, and, only when the detector may decide on a late
beat (``_detect.needs_details``), the loop thread's run delay and whether
it sits in a debugger. Also the lookups that find a loop's thread, or the
loop of a handle installed before any loop ran. Nothing here decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import selectors
import threading
import types
from typing import Any

from . import _detect, _gil
from ._faulthandler import Capture
from ._handle import LoopWatch

# Code objects of the selectors' select(): a loop thread whose innermost
# Python frame is one of these sits in epoll/poll/select waiting for I/O. It
# cannot be frozen, so it need not be woken by a heartbeat to prove it.
_SELECT_CODES = frozenset(
    fn.__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and isinstance(fn := getattr(cls, "select", None), types.FunctionType)
)
_OWN_FILES = os.path.dirname(os.path.abspath(__file__)) + os.sep
_DEBUGGER_FILES = ("bdb.py", "pdb.py")


def observe(w: LoopWatch, now: float, tops: dict[int, types.FrameType],
            cap: Capture | None, watchdog_silent: float) -> _detect.Observation:
    loop = w.loop
    assert loop is not None
    seq, at = w.answered()
    closed = loop.is_closed()
    return _detect.Observation(
        now=now, answered_seq=seq, answered_at=at,
        running=not closed and loop.is_running(), closed=closed,
        allow_depth=w.allow_depth, allow_exit_at=w.allow_exit_at,
        watchdog_silent=watchdog_silent, gil=gil_seen(w, cap),
        idle=is_idle(w, tops), has_units=bool(w.inflight),
        last_ran=w.idle.left_at if w.idle is not None and w.idle.left_at else None,
    )


def with_details(w: LoopWatch, obs: _detect.Observation,
                 tops: dict[int, types.FrameType]) -> _detect.Observation:
    """The observation plus what only a decision on a late beat needs."""
    if w.thread_ident is None:
        locate_thread(w, tops)
    st = w.state
    if (obs.answered_seq == st.sent_seq
            and obs.answered_at - max(st.sent_at, obs.allow_exit_at) < st.threshold):
        # The beat came back in time (the common round on a busy loop): step()
        # only records its lag, so skip the run-delay read. That read is a
        # syscall, which hands the GIL to a busy loop thread and then takes
        # it back (a forced switch of the loop thread, every round).
        return obs
    return dataclasses.replace(obs, run_delay=w.loop_run_delay(),
                               debugger=debugger_stopped(w, tops))


def needs_frames(w: LoopWatch) -> bool:
    """Does this round's observation of ``w`` read the threads' frames?

    Only to find a loop not yet running, to tell idle from busy without a
    selector wrapper (uvloop), or to decide on a late beat (debugger check,
    loop thread lookup), which needs a heartbeat out. A busy loop with its
    beat answered needs none: sys._current_frames() builds a dict of every
    thread, so it is skipped in most rounds. Cannot go stale before the
    observation: only the watchdog sends beats; the loop thread can only
    answer one (then no late beat is decided on)."""
    return (w.loop is None or w.idle is None
            or (w.state.pending and w.answered()[0] != w.state.sent_seq))


def gil_seen(w: LoopWatch, cap: Capture | None) -> _detect.GilSeen | None:
    """This loop's stack in the round's faulthandler capture, if it is there."""
    frames = cap.frames_of(w.thread_ident) if cap is not None else None
    if cap is None or frames is None:
        return None
    return _detect.GilSeen(busy=not _gil.idle(frames, idle_at(w)), silent=cap.silent,
                           read_at=cap.read_at, slept=w.thread_ident in cap.slept)


# Python frames of a running asyncio loop: a captured stack with one of them was
# taken inside the loop, not before it started.
_LOOP_FRAMES = frozenset({
    ("base_events.py", "run_forever"), ("base_events.py", "_run_once"),
    ("base_events.py", "run_until_complete"), ("events.py", "_run"),
})


def ran_loop(cap: Capture | None, thread_id: int | None) -> bool:
    """The round's faulthandler capture shows this thread inside a running loop."""
    frames = cap.frames_of(thread_id) if cap is not None else None
    return frames is not None and any(
        (os.path.basename(f.file), f.function) in _LOOP_FRAMES
        and os.path.basename(os.path.dirname(f.file)) == "asyncio" for f in frames)


def idle_at(w: LoopWatch) -> tuple[str, int] | None:
    """Where the loop thread sits when idle without a Python selector (uvloop)."""
    code = w.idle_code
    return (os.path.abspath(code.co_filename), w.idle_line) if code else None


def is_idle(w: LoopWatch, tops: dict[int, types.FrameType]) -> bool:
    if w.idle is not None:
        return w.idle.in_select
    tid = w.thread_ident
    top = tops.get(tid) if tid is not None else None
    if top is None:
        return False
    code = top.f_code
    if code in _SELECT_CODES:
        # select(timeout=0) is the poll a busy asyncio loop makes between
        # ready callbacks: busy, not waiting. Reading one local of another
        # thread's frame is safe under the GIL; it costs about a microsecond.
        try:
            return top.f_locals.get("timeout") != 0
        except Exception:
            return True
    return code is w.idle_code and top.f_lineno == w.idle_line


def debugger_stopped(w: LoopWatch, tops: dict[int, types.FrameType]) -> bool:
    tid = w.thread_ident
    frame = tops.get(tid) if tid is not None else None
    while frame is not None:
        f = frame.f_code.co_filename
        if f.endswith(_DEBUGGER_FILES) or "pydevd" in f:
            return True
        frame = frame.f_back
    return False


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


def locate_thread(w: LoopWatch, tops: dict[int, types.FrameType]) -> None:
    """Learn the loop's thread before its first heartbeat ran (install(loop=...)
    on a loop that was already frozen): asyncio records it on the loop; for
    uvloop (a C run_forever) find the thread whose stack holds the loop."""
    tid = getattr(w.loop, "_thread_id", None)
    if tid is None:
        me = threading.get_ident()  # the watchdog's own stack holds the loop too
        holders = [ident for ident, top in tops.items() if ident != me and any(
            cand is w.loop for cand in loops_on_stack(top, any_name=True))]
        # The thread that called install(loop=...) holds a reference but
        # usually runs something else: prefer the others; guess only if unique.
        pick = [t for t in holders if t != w.caller_thread] or holders
        tid = pick[0] if len(pick) == 1 else None
    w.set_thread(tid)


def find_loop(w: LoopWatch, tops: dict[int, types.FrameType]) -> Any:
    """install() ran before any loop: a loop now running on the installing thread."""
    frame = tops.get(w.install_thread) if w.install_thread is not None else None
    for cand in loops_on_stack(frame):
        # asyncio records the thread a loop runs in; a loop this thread only
        # refers to (it runs in another one) is not the one we wait for.
        runs_in = getattr(cand, "_thread_id", None)
        if cand.is_running() and runs_in in (None, w.install_thread):
            return cand
    return None
