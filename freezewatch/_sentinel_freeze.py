"""The sentinel's side of one freeze: decide, write the dump, its rewrites and updates.

Standard library only (run inside the sentinel, see ``_sentinel_main``).
When the watchdog has been silent for a threshold while blocked (it waits
for the GIL, or for a lock the frozen thread holds), and a loop thread's
stack, captured by its faulthandler handler, shows it busy (not waiting in
its selector) and it has not slept since (no voluntary context switch: a C
call holding the GIL, or one blocking call), the sentinel writes that
loop's ``freeze`` dump (``_sentinel_dump``). Where faulthandler is off, the
py-spy capture decides: the loop thread owning the GIL in a C function.
py-spy's native stack is added when it is in (a rewrite of the same
files), and ``freeze-update`` dumps follow at the install's ``update_after``.

The parent learns the paths from ``dump.json`` in the private directory
(``_sentinel.Sentinel.dump_of``) and completes the first dump when it runs
again. Its settings come from ``config.json`` there (``_sentinel.Sentinel.
configure``): per loop its name, thread, threshold, dump directory, where it
idles, the update schedule; the library prefixes for ``app_frame``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from typing import Any

try:
    from . import _sentinel_dump as dump
except ImportError:  # run as the sentinel's script: its directory is on sys.path
    import _sentinel_dump as dump  # type: ignore[import-not-found,no-redef]

CONFIG = "config.json"
LONG = 4.0
"""A silence of LONG thresholds (at least LONG_MIN s) is dumped even on an overloaded
machine: a freeze that long is evidence to keep, whatever slowed it."""
LONG_MIN = 2.0
REPORT = "dump.json"
SLEPT = "slept.json"
"""Loops whose thread slept after faulthandler's capture in this silence: not frozen."""
STEADY = 0.03
"""Seconds at least between the two looks at a loop thread's switches before py-spy."""


def steady(before: int | None, after: int | None) -> bool:
    """No voluntary context switch between two looks (``_detect.held_throughout``)."""
    return before is not None and before == after


class Loop:
    """What the sentinel knows of one watched loop during one silence."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.ident, self.tid = int(cfg["ident"]), int(cfg["native_id"])
        self.frames: list[dict[str, Any]] | None = None
        self.captured_by = "faulthandler"
        self.switches: int | None = None
        self.cpu0: float | None = None
        self.wait0: float | None = None
        self.at = 0.0
        self.stem: str | None = None
        self.path: str | None = None
        self.doc: dict[str, Any] | None = None
        self.updates = 0
        self.start = 0.0
        """When (monotonic) the silence in which it was dumped began."""
        self.refreshed = 0.0
        self.answered: int | None = None
        """The loop's last answered heartbeat when it was dumped: the same freeze
        goes on (over the watchdog's beats) until that moves."""
        self.mark: int | None = None
        """Its thread's voluntary switches at the sentinel's first look in this silence."""
        self.marked_at = 0.0
        self.steady = False
        """No switch from the mark to right before py-spy: it held the GIL throughout."""
        self.slept = False
        """Its thread switched (or its stack ``moved``) since faulthandler's capture,
        the watchdog still blocked."""
        self.moved = False
        self.rechecked = False
        self.rebase = False
        """py-spy ran since: its stop is a switch of every thread; count afresh."""


class Dumper:
    def __init__(self, parent: int, directory: str, next_seq: Callable[[], int],
                 switches: Callable[[int], int | None],
                 answered: Callable[[int], int | None]) -> None:
        self.parent, self.directory = parent, directory
        self.next_seq, self.switches, self.answered = next_seq, switches, answered
        self.cfg: dict[str, Any] = {}
        self.loops: dict[int, Loop] = {}
        self.recapture: Callable[[], str] | None = None
        """Signal the loop threads again: their stacks' text (``_Signaller.dump``)."""
        self.start = 0.0
        self.written = 0
        self._report: list[dict[str, Any]] = []

    def reload(self) -> None:
        try:
            with open(os.path.join(self.directory, CONFIG), encoding="utf-8") as f:
                self.cfg = json.load(f)
        except (OSError, ValueError):
            self.cfg = {}

    def reset(self, start: float) -> None:
        """A new silence, begun at ``start`` (monotonic: the watchdog's last beat). A
        loop dumped already whose heartbeat has not been answered since is the
        same freeze still (the watchdog ran between two GIL-held stretches):
        no second dump for it, its updates go on."""
        self.start = start
        old, self.loops = self.loops, {}
        for c in self.cfg.get("loops", []):
            if not c.get("dump_dir"):
                continue
            ident = int(c["ident"])
            lp = old.get(ident)
            if lp is None or lp.path is None or lp.answered is None \
                    or self.answered(ident) != lp.answered:
                lp = Loop(c)
            self.loops[ident] = lp

    def _taken_over(self, lp: Loop) -> bool:
        """The loop answered, or the watchdog took its dump over (``Sentinel.settle``),
        since it was dumped: that freeze is not the sentinel's to write any more."""
        if lp.answered is None or self.answered(lp.ident) == lp.answered:
            return False
        self.loops[lp.ident] = Loop(lp.cfg)
        return True

    def captured(self, text: str) -> None:
        """faulthandler's capture of this silence: each loop's stack, and its thread's
        switches and CPU from now on (a thread that sleeps after this is not frozen)."""
        now = time.monotonic()
        for ident, frames in dump.parse_faulthandler(text).items():
            lp = self.loops.get(ident)
            if lp is not None and lp.frames is None and frames:
                lp.frames, lp.at = frames, now
                lp.switches = self.switches(lp.tid)
                lp.cpu0 = dump.thread_cpu(self.parent, lp.tid)
                lp.wait0 = dump.thread_cpu(self.parent, lp.tid, 1)

    def look(self) -> None:
        """Inside a silence: the first look at each loop thread's switches (its mark)."""
        for lp in self.loops.values():
            if lp.mark is None:
                lp.mark, lp.marked_at = self.switches(lp.tid), time.monotonic()

    def before_native(self) -> dict[str, list[int | None]]:
        """Right before py-spy (which stops every thread: a switch each), each loop
        thread's switches at its mark and now, ``STEADY`` s apart at least. A busy
        loop that starves the watchdog of the GIL hands it over now and then, and
        blocks on the GIL meanwhile: it switches. One long C call never does."""
        self.look()
        if any(time.monotonic() - lp.marked_at < STEADY for lp in self.loops.values()):
            time.sleep(STEADY)
        out: dict[str, list[int | None]] = {}
        for lp in self.loops.values():
            now = self.switches(lp.tid)
            lp.steady, lp.rebase = steady(lp.mark, now), True
            out[str(lp.ident)] = [lp.mark, now]
        return out

    def _switched(self, lp: Loop) -> bool:
        """Its thread switched since faulthandler's capture. py-spy's stop (a switch of
        every thread) is not one of them: the count is taken afresh after a run."""
        now = self.switches(lp.tid)
        if lp.rebase:
            lp.switches, lp.rebase = now, False
        return lp.switches is None or now != lp.switches

    def frozen(self, lp: Loop, silence: float) -> bool:
        """Busy when captured, has not slept since, and was not kept off a CPU
        for half of that time (an overloaded machine, which the watchdog voids;
        unless the silence is long already)."""
        if lp.frames is None or dump.idle(lp.frames, lp.cfg.get("idle_at")):
            return False
        waited = dump.thread_cpu(self.parent, lp.tid, 1)
        long = silence >= max(LONG_MIN, LONG * lp.cfg["threshold"])
        if not long and lp.wait0 is not None and waited is not None and \
                waited - lp.wait0 > 0.5 * (time.monotonic() - lp.at):
            return False
        return lp.switches is not None and not self._switched(lp)

    def first(self, silence: float, blocked: bool, pending: bool) -> None:
        """Silent for a threshold: a dump for each loop seen frozen (``blocked``: the
        watchdog still waits; ``pending``: py-spy is yet to run)."""
        if not blocked:
            return
        self._note_slept()
        due = [lp for lp in self.loops.values()
               if lp.path is None and silence >= lp.cfg["threshold"] and self.frozen(lp, silence)]
        if due and self.recapture is not None and any(not lp.rechecked for lp in due):
            # A second stack before the dump: one C call is still on the same line, a
            # busy loop that never slept (it kept the GIL through switch intervals
            # of its own) has most likely moved on.
            # Not signalled again (it switched meanwhile, or the signal is no longer
            # ours): its switch count decides, as before.
            again = dump.parse_faulthandler(self.recapture())
            for lp in due:
                lp.rechecked = True
                if again.get(lp.ident) and [(f["file"], f["line"]) for f in again[lp.ident]] \
                        != [(f["file"], f["line"]) for f in lp.frames or ()]:
                    lp.moved = True
            self._note_slept()
        for lp in due:
            if not lp.slept:
                self._write(lp, "freeze", dump.PENDING if pending else None, silence)

    def _note_slept(self) -> None:
        """A loop thread captured busy that switched since, while the watchdog still
        waits: a busy loop keeping the watchdog from the GIL, not a C call holding
        it. Written for the watchdog (``_sentinel.Sentinel.slept``), which then
        does not take its silence for a GIL-held freeze of that loop."""
        new = [lp for lp in self.loops.values() if lp.frames is not None and not lp.slept
               and lp.captured_by == "faulthandler" and lp.switches is not None
               and (lp.moved or self._switched(lp))]
        if not new:
            return
        for lp in new:
            lp.slept = True
        doc = {"since": self.start, "idents": [lp.ident for lp in self.loops.values()
                                               if lp.slept]}
        tmp = os.path.join(self.directory, SLEPT + ".tmp")
        with contextlib.suppress(OSError):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            os.replace(tmp, os.path.join(self.directory, SLEPT))

    def native(self, nat: dict[str, Any], silence: float, may_write: bool) -> None:
        """py-spy's capture: into each dump written; a dump for a loop py-spy shows
        owning the GIL in C where faulthandler saw nothing, if its thread did not
        switch since the sentinel's first look in the silence (``before_native``;
        one sample of a uvloop thread, usually in C with the GIL, proves nothing;
        ``may_write``: the watchdog has no freeze open)."""
        for lp in self.loops.values():
            if lp.path is not None and lp.doc is not None:
                lp.doc["native"] = nat
                self._rewrite(lp)
                continue
            got = dump.python_frames(nat, lp.ident) if nat.get("ok") else None
            if may_write and lp.frames is None and got is not None and got[1] and \
                    lp.steady and not dump.idle(got[0], lp.cfg.get("idle_at")) and \
                    silence >= lp.cfg["threshold"]:
                lp.frames, lp.captured_by = got[0], "py-spy (sentinel)"
                lp.cpu0, lp.at = dump.thread_cpu(self.parent, lp.tid), time.monotonic()
                self._write(lp, "freeze", nat, silence)

    def refresh(self, every: float = 1.0) -> float | None:
        """While a freeze goes on, its dump's ``blocked_for`` grows (rewritten at most
        every ``every`` s): a process killed in it shows how long it had lasted.
        Returns when (monotonic) the next refresh is due, if any."""
        now = time.monotonic()
        due = []
        for lp in list(self.loops.values()):
            if lp.doc is None or lp.stem is None or self._taken_over(lp):
                continue
            if now - lp.refreshed >= every:
                lp.refreshed = now
                lp.doc["blocked_for"] = round(now - lp.start, 6)
                self._rewrite(lp)
            due.append(lp.refreshed + every)
        return min(due) if due else None

    def next_update(self) -> float | None:
        """When (monotonic) the next freeze-update of a dumped loop is due, if any."""
        due = [lp.start + sched[lp.updates] for lp in self.loops.values()
               if lp.path is not None
               and lp.updates < len(sched := list(lp.cfg.get("update_after") or ()))]
        return min(due) if due else None

    def update(self, text: str | None, nat: dict[str, Any] | None) -> None:
        """A freeze-update for every loop whose next update is due, from a fresh capture."""
        now = time.monotonic()
        fresh = dump.parse_faulthandler(text) if text else {}
        for lp in list(self.loops.values()):
            sched = list(lp.cfg.get("update_after") or ())
            if lp.path is None or lp.updates >= len(sched) or now < lp.start + sched[lp.updates] \
                    or self._taken_over(lp):
                continue
            lp.updates += 1
            frames = fresh.get(lp.ident)
            if not frames and nat is not None and nat.get("ok"):
                got = dump.python_frames(nat, lp.ident)
                frames = got[0] if got else None
            frames = frames or lp.frames or []
            before = lp.doc["blocking_frame"] if lp.doc else None
            doc = self._doc(lp, "freeze-update", frames, nat, now - lp.start)
            top = doc["blocking_frame"]
            doc.update(update=lp.updates, first_dump=os.path.basename(lp.path),
                       frame_moved=before is not None and (top["file"], top["line"]) != (
                           before["file"], before["line"]))
            with contextlib.suppress(OSError):
                dump.write_pair(lp.cfg["dump_dir"], doc, self.next_seq)
                self.written += 1

    # -- documents and files -------------------------------------------------------
    def _doc(self, lp: Loop, kind: str, frames: list[dict[str, Any]],
             nat: dict[str, Any] | None, blocked_for: float) -> dict[str, Any]:
        cfg, c = self.cfg, lp.cfg
        now = time.monotonic()
        view = dump.kernel(self.parent, lp.tid, lp.cpu0, now - lp.at)
        held = view["state"] == "R" or view["cpu_growing"] or view["syscall"] == "running"
        cause = "GIL held" if held else "unknown"
        summary = ("a C call held the GIL; no Python thread could run" if held else
                   "the watchdog could not run (a lock the frozen thread holds?)")
        summary += (f" (seen by the sentinel: thread state {view['state']}, "
                    f"CPU {view['cpu_delta'] or 0.0:.2f} s over the last "
                    f"{view['cpu_window'] or 0.0:.1f} s)")
        top = frames[-1] if frames else {"file": "<not captured>", "line": 0,
                                         "function": "<unknown>", "code": None}
        libs, pkg = list(cfg.get("libs") or ()), str(cfg.get("pkg") or "")
        return {
            "schema": "freezewatch/1", "kind": kind, "pid": self.parent,
            "hostname": cfg.get("hostname") or socket.gethostname(),
            "python": cfg.get("python") or "?",
            "loop": {"name": c.get("name"), "thread_id": lp.ident,
                     "thread_name": c.get("thread_name")},
            "detected_at": time.time(), "blocked_for": round(blocked_for, 6),
            "threshold": c["threshold"], "blocking_frame": top,
            "app_frame": dump.app_frame(frames, libs, pkg),
            "loop_thread": {"frames": frames}, "current_task": None, "task_count": None,
            "tasks": [], "threads": [], "inflight": [], "capture_errors": [],
            "native": nat or {"ok": False, "text": None, "threads": [], "source": "sentinel",
                              "error": "py-spy not available to the sentinel"},
            "gil_held": held, "captured_by": lp.captured_by, "complete": False,
            "written_by": "sentinel", "kernel": view, "cause": cause,
            "kernel_summary": summary,
        }

    def _write(self, lp: Loop, kind: str, nat: dict[str, Any] | None, silence: float) -> None:
        doc = self._doc(lp, kind, lp.frames or [], nat, silence)
        try:
            lp.path = dump.write_pair(lp.cfg["dump_dir"], doc, self.next_seq)
        except OSError:
            lp.frames = None if lp.captured_by != "faulthandler" else lp.frames
            return
        lp.doc, lp.stem = doc, os.path.basename(lp.path)[: -len(".json")]
        lp.start, lp.answered = self.start, self.answered(lp.ident)
        lp.refreshed = time.monotonic()
        self.written += 1
        self._report.append({"ident": lp.ident, "path": lp.path, "since": self.start,
                             "taken_at": time.monotonic(), "detected_at": doc["detected_at"]})
        self._report = self._report[-16:]
        tmp = os.path.join(self.directory, REPORT + ".tmp")
        with contextlib.suppress(OSError):
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self._report, f)
            os.replace(tmp, os.path.join(self.directory, REPORT))

    def _rewrite(self, lp: Loop) -> None:
        if lp.doc is None or lp.stem is None:
            return
        with contextlib.suppress(OSError):
            dump.write_pair(lp.cfg["dump_dir"], lp.doc, self.next_seq, stem=lp.stem)
