"""The two layers that see what no Python thread can: faulthandler and py-spy.

A C call that holds the GIL stops the watchdog thread too. The sentinel
process (``_sentinel``), outside our GIL, notices the watchdog's silence and
acts during the freeze. The watchdog drives it once per round (``round``)
and, when it runs again after such a stretch, the pipeline (``_pipeline``)
turns the captures into a normal freeze dump:

- faulthandler (``_faulthandler``): the sentinel signals each loop thread,
  whose faulthandler handler writes its own Python stack at a moment inside
  the freeze: ``blocking_frame``, ``loop_thread``, ``gil_held``;
- py-spy, run by the sentinel: native stacks taken inside the freeze
  (``native``), and the Python stacks too where faulthandler is off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from . import _state
from ._config import Config
from ._dumpread import parse_dump, read_dump_bytes
from ._events import FreezeEvent
from ._faulthandler import SIGNAL, Capture, SignalDump
from ._sentinel import Sentinel
from ._sentinel_freeze import LONG, LONG_MIN
from ._sinks import dumpdir
from ._sinks.dumpfile import rewrite_dump
from ._sinks.log import events
from ._snapshot.capture import _HOST, _PY
from ._snapshot.cpu import native_id_of
from ._snapshot.frames import _LIBRARY, _PKG_DIR, app_frame, blocking_frame, source_line
from ._snapshot.model import Frame, Native, Snapshot, TaskGroup
from ._snapshot.native import capture_native, find_pyspy, native_from_output

SENTINEL_RESTARTS = 3
"""How many times a sentinel that exited is replaced (one that keeps dying is left dead)."""


def _conflict(reason: str) -> None:
    # Called on whichever application thread touched faulthandler: only a
    # queue put (events.emit never blocks on a Python-level lock).
    events.emit(FreezeEvent("faulthandler_conflict", "*", 0.0, reason=reason), (), "warning")


class GilLayers:
    """Owned by the one Watchdog; every method runs on the watchdog thread."""

    def __init__(self) -> None:
        # Created by install() on the application's thread: tempfile's first
        # use takes a module lock; taken here, never on the watchdog thread
        # (a fork while the watchdog held it would block the child's watchdog).
        tempfile.gettempdir()
        self.signal_dump = SignalDump(_conflict)
        self.sentinel = Sentinel()
        self._sentinel_tried = False
        self._idents: tuple[tuple[int | None, int], ...] = ()
        self._signal_rounds = 0
        self._claim_checked = -1e9
        self._alive_checked = 0.0
        self._restarts = 0
        self.captures = 0
        # Per loop thread ident: its voluntary switches at the sentinel's first look in
        # the silence and right before its last py-spy run (``_detect.held_throughout``).
        self.native_switches: dict[int, list[int | None]] = {}

    def round(self, now: float, watches: Sequence[Any], silent: float) -> Capture | None:
        """Beat the sentinel; the faulthandler capture it had taken, if any."""
        if not watches:
            return None
        threshold = min(w.config.threshold for w in watches)
        cap: Capture | None = None
        # One handler per process: an opt-out by any watch (faulthandler=False)
        # leaves faulthandler entirely to the application.
        fh = all(w.config.faulthandler and w.config.sentinel for w in watches)
        # The kernel's handler (a sigaction call) once per interval at most: a
        # round that follows another at once (an idle loop's heartbeat wakes
        # us back) need not ask again.
        if fh and self.signal_dump.active and now - self._claim_checked >= 0.5 * min(
                w.config.interval for w in watches):
            self._claim_checked = now
            if not self.signal_dump.still_ours():
                self.sentinel.allow_signal(False)  # py-spy alone from now on
        if fh and self.signal_dump.active:
            sp = self.sentinel
            sp.allow_signal(True)
            if sp.signalling():
                # The sentinel is between two loop threads: let it finish.
                sp.wait_signalling(0.3)
            rounds = sp.signal_rounds()
            if rounds != self._signal_rounds:  # read the file only when it was written
                self._signal_rounds = rounds
                text = self.signal_dump.take()
                if text:
                    self.captures += 1
                    # The silence the sentinel saw, from its start: a C call that
                    # took the GIL in the middle of our previous round leaves that
                    # round looking short (its end came after the call returned).
                    since = sp.signalled_since()
                    began = since if 0.0 < since <= now else now - silent
                    cap = Capture(text, now, now - began, sp.slept(min(began, now - silent)))
        elif not fh and self.signal_dump.active:
            self.sentinel.allow_signal(False)
            self.signal_dump.close()
        if self.sentinel.proc is not None and now - self._alive_checked >= 1.0:
            self._alive_checked = now  # a waitpid (a GIL hand-off): once a second
            if not self.sentinel.alive():
                self._sentinel_gone()
        if not self._sentinel_tried:
            self._start_sentinel(watches, threshold, fh)
        if self.sentinel.proc is not None:
            self._publish_loops(watches)
            self.sentinel.freeze_open(any(w.state.freeze is not None for w in watches))
            self.sentinel.answered({w.thread_ident: w.answered()[0] for w in watches})
            self.sentinel.beat(threshold, min(w.config.interval for w in watches) + 0.05)
        return cap

    def _sentinel_gone(self) -> None:
        """The sentinel exited under us (killed, out of memory, a bug of ours): said
        once, counted, and a new one started (``SENTINEL_RESTARTS`` times at most),
        so GIL-held freezes are dumped while they last again."""
        status = self.sentinel.proc.returncode if self.sentinel.proc is not None else None
        self.sentinel.close()
        self.sentinel = Sentinel()
        self._restarts += 1
        again = self._restarts <= SENTINEL_RESTARTS
        if again:
            self._sentinel_tried, self._idents, self._signal_rounds = False, (), 0
        _state.count_error("sentinel")
        then = "a new one is started" if again else (
            f"not restarted: it exited {self._restarts} times; GIL-held freezes "
            f"are dumped only once they end")
        events.emit(FreezeEvent("sentinel_exited", "*", 0.0, reason=(
            f"the sentinel process exited (status {status}); {then}")), (), "error")

    def prime(self, watches: Sequence[Any]) -> None:
        """On install()'s thread, before the watchdog thread starts: the sentinel is up
        and knows the loop threads before the application's next line runs (a loop
        whose first step holds the GIL would leave the watchdog no round to start
        it). The watchdog thread names itself to it when it runs (``watchdog_thread``)."""
        if not watches or self._sentinel_tried:
            return
        threshold = min(w.config.threshold for w in watches)
        fh = all(w.config.faulthandler and w.config.sentinel for w in watches)
        self._start_sentinel(watches, threshold, fh, watchdog_tid=0)
        if self.sentinel.proc is not None:
            self.sentinel.allow_signal(fh and self.signal_dump.active
                                       and self.signal_dump.still_ours())
            self._publish_loops(watches)
            self.sentinel.beat(threshold, min(w.config.interval for w in watches) + 0.05)

    def _start_sentinel(self, watches: Sequence[Any], threshold: float,
                        fh: bool, watchdog_tid: int | None = None) -> None:
        wanted = [w for w in watches if w.config.sentinel]
        if not wanted:
            return
        self._sentinel_tried = True
        cfg = wanted[0].config
        pyspy = find_pyspy(cfg.pyspy_path) if any(w.config.native for w in wanted) else None
        fd = self.signal_dump.fd if fh and self.signal_dump.ensure() else -1
        self.sentinel.start(threshold, pyspy, cfg.native_timeout, fd, int(SIGNAL),
                            watchdog_tid)
        if fd >= 0 and self.sentinel.proc is None:
            self.signal_dump.close()  # nobody would send the signal

    def _publish_loops(self, watches: Sequence[Any]) -> None:
        """Tell the sentinel which threads run our loops, and what it needs to write
        their dumps itself (when that changes)."""
        # A handle still waiting for its loop: the loop will run on the thread
        # that installed it.
        idents = tuple((w.thread_ident or w.install_thread, w.idle_line) for w in watches)
        if idents == self._idents:
            return
        self._idents = idents
        native = {i: n for i in dict.fromkeys(x[0] for x in idents)
                  if i is not None and (n := native_id_of(i)) is not None}
        self.sentinel.set_loops(tuple(native.items()))
        loops = []
        for w in watches:
            tid = w.thread_ident or w.install_thread
            if tid is None or tid not in native or not w.config.sentinel:
                continue
            info = w.info()
            cfg = w.config
            loops.append({"ident": tid, "native_id": native[tid], "name": info.name,
                          "thread_name": info.thread_name, "threshold": cfg.threshold,
                          "dump_dir": cfg.dump_dir, "update_after": list(cfg.update_after),
                          "idle_at": [os.path.abspath(code.co_filename), w.idle_line]
                          if (code := w.idle_code) else None})
        self.sentinel.configure({"loops": loops, "hostname": _HOST, "python": _PY,
                                 "libs": list(_LIBRARY), "pkg": _PKG_DIR})

    def settle_sentinel_dumps(self, since: float, watched: Sequence[tuple[int | None, Config]],
                              seconds: float, why: str) -> list[str]:
        """The watchdog explained a silence of ``seconds`` as ``why`` (an overloaded
        machine, a suspended process, a busy loop): not a freeze, so a dump the sentinel
        wrote in it is removed - unless the silence was long for that loop
        (``_sentinel_freeze.LONG`` thresholds): then that evidence is kept, completed
        with its ``duration`` and ``ended_because`` = ``why`` (``complete: false``
        keeps meaning "the process never ran again"). Returns the kept dumps."""
        sp = self.sentinel
        kept: list[str] = []
        if sp.proc is None:
            return kept
        for ident, cfg in watched:
            sp.settle(ident)  # first: the sentinel's rewrites stop before ours
            got = sp.dump_of(ident, since, wait=sp.limit + 2.0)
            if got is None:
                continue
            path = got[0]
            if seconds >= max(LONG_MIN, LONG * cfg.threshold):
                if _complete_kept(path, seconds, why, cfg):
                    kept.append(path)
                continue
            directory, name = os.path.split(path)
            with contextlib.suppress(OSError):
                fd = dumpdir.open_dir(directory, create=False)
                try:
                    for n in (name, name[: -len(".json")] + ".txt"):
                        if dumpdir.is_our_file(fd, n):
                            os.unlink(n, dir_fd=fd)
                finally:
                    os.close(fd)
        return kept

    def sentinel_dump(self, since: float, ident: int | None) -> tuple[str, float] | None:
        """The dump the sentinel wrote for the loop on thread ``ident`` during the
        freeze that began at ``since`` (monotonic): its path and ``detected_at``.
        The pipeline completes that file instead of writing a new one."""
        sp = self.sentinel
        if sp.proc is None:
            return None
        sp.settle(ident)  # ours from now on: the sentinel never rewrites it over our rewrite
        return sp.dump_of(ident, since, wait=sp.limit + 2.0)

    def sentinel_native(self, since: float, sentinel_on: bool, threshold: float) -> Native:
        """The sentinel's native trace taken during the freeze that began at ``since``."""
        sp = self.sentinel
        if not sentinel_on:
            why = "the sentinel is disabled (sentinel=False)"
        elif sp.proc is None:
            why = sp.error or "the sentinel is not running"
        elif not sp.alive():
            why = "the sentinel process died"
        elif not sp.pyspy:
            why = sp.error or "py-spy not found: pip install py-spy"
        else:
            raw = sp.take(since, wait=sp.limit + 2.0) if sp.pyspy else None
            if raw is not None and raw.get("over"):
                return Native(False, error="py-spy output exceeded its bound and was dropped",
                              source="sentinel")
            if raw is not None:
                sw = raw.get("switches")
                self.native_switches = {int(k): v for k, v in sw.items()} \
                    if isinstance(sw, dict) else {}
                code = raw.get("code")
                return native_from_output(
                    code if isinstance(code, int) else None, str(raw.get("stdout") or ""),
                    str(raw.get("stderr") or ""), sp.limit, "sentinel")
            why = ("the sentinel took no trace during this freeze (it acts once the "
                   f"watchdog was silent for the threshold, {threshold:g} s)")
        return Native(False, error=f"no native trace from inside the GIL-held freeze: {why}",
                      source="sentinel")

    def close(self) -> None:
        self.signal_dump.close()
        self.sentinel.close()


def layers() -> GilLayers | None:
    wd = _state.watchdog
    return getattr(wd, "gil", None) if wd is not None else None


def live_native(pyspy: str | None, limit: float) -> Native:
    """py-spy run by the watchdog during a live freeze; the sentinel stands down meanwhile
    and gets the PR_SET_PTRACER slot back afterwards."""
    gl = layers()
    sp = gl.sentinel if gl is not None and gl.sentinel.alive() else None
    if sp is not None:
        sp.stand_down(limit + 3.0)
    try:
        return capture_native(os.getpid(), pyspy, limit, ptracer_after=sp.pid if sp else 0)
    finally:
        if sp is not None:
            sp.resume()


MAX_FAULTHANDLER_TEXT = 64_000


def pin(snap: Snapshot, frames: tuple[Frame, ...], blocked_for: float,
        cap: Capture | None, captured_by: str = "faulthandler") -> Snapshot:
    """A live snapshot re-pinned on the loop thread's stack from the faulthandler capture.

    Tasks, threads and in-flight units stay live (as of now, after the GIL came
    back); faulthandler's raw text (the loop threads, during the freeze) is kept too.
    """
    extra = dict(snap.extra)
    extra.update(gil_held=True, captured_by=captured_by)
    if cap is not None:
        extra["faulthandler"] = cap.text[:MAX_FAULTHANDLER_TEXT]
    return dataclasses.replace(
        snap, loop_frames=frames, blocking_frame=blocking_frame(frames) or frames[-1],
        app_frame=app_frame(frames),
        blocked_for=blocked_for, extra=extra,
        waits=None,  # the live graph is of after the GIL came back, not of the freeze
        current_task=snap.current_task or running_task(frames, snap.tasks),
    )


def running_task(frames: tuple[Frame, ...], groups: Sequence[TaskGroup]) -> str | None:
    """The task that was running in a stack captured during the freeze.

    The live snapshot is taken after the GIL came back, when that task no
    longer runs; but its outermost coroutine frame is in the captured stack.
    The first frame (outermost first) that starts exactly one task's await
    chain names it; None if no frame does, or several tasks could be it."""
    def key(f: Frame) -> tuple[str, str]:
        # faulthandler names a function by co_name, the await chain by co_qualname.
        return f.file, f.function.rsplit(".", 1)[-1]

    for f in frames:
        hits = [g for g in groups if g.await_chain and key(g.await_chain[0]) == key(f)]
        if hits:
            if sum(g.count for g in hits) == 1 and hits[0].names:
                return hits[0].names[0]
            return None
    return None


def idle(frames: tuple[Frame, ...], idle_at: tuple[str, int] | None) -> bool:
    """True if the captured loop stack sits in its selector (waiting, not frozen)."""
    top = frames[-1]
    if top.function == "select" and top.file.endswith("selectors.py"):
        return True
    return idle_at is not None and (top.file, top.line) == idle_at


def python_frames(native: Native, thread_id: int | None) -> tuple[Frame, ...] | None:
    """The Python frames of one thread in a py-spy capture (outermost first), as
    plain records with their source lines; None if that thread is not in it.
    py-spy reads a ptrace-stopped process, so unlike a faulthandler timer it is
    safe to take while the application runs."""
    if not native.ok or thread_id is None:
        return None
    for t in native.threads:
        if t.thread_id == thread_id:
            frames = tuple(
                Frame(f.file, f.line, f.function, source_line(f.file, f.line))
                for f in t.frames if not f.native
            )
            return frames or None
    return None


def holds_gil_in_c(native: Native, thread_id: int | None) -> bool:
    """py-spy saw this thread owning the GIL with a C function innermost (a
    regex engine, a parser, an extension): a held GIL, not Python code running."""
    for t in native.threads:
        if t.thread_id == thread_id:
            return t.owns_gil and bool(t.frames) and t.frames[-1].native
    return False


def _complete_kept(path: str, seconds: float, why: str, cfg: Config) -> bool:
    """Complete the sentinel's dump of a long silence the watchdog did not call a
    freeze: the same files, with how long it lasted and what the watchdog made of it."""
    try:
        doc = parse_dump(read_dump_bytes(path))
    except (OSError, ValueError):
        return False  # gone (retention) or not ours to read: nothing to complete
    if not isinstance(doc, dict) or doc.get("written_by") != "sentinel":
        return False
    blocked = doc.get("blocked_for")  # the sentinel's count starts at the last beat it saw
    longest = max(seconds, blocked) if isinstance(blocked, (int, float)) else seconds
    doc.update(duration=round(longest, 6), complete=True, ended_because=why,
               written_by="sentinel (during the silence), completed by the watchdog")
    return rewrite_dump(path, doc, cfg.max_dumps, cfg.max_dump_bytes, redact=cfg.redact)
