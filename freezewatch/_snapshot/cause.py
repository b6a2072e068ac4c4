"""A freeze's ``cause``: what the blocked thread was doing, in one word and one line.

Combines the kernel's view (``procview``), the thread's CPU clock (``cpu``),
the Python stack and how the freeze was seen (GIL held, a collection).
"""

from __future__ import annotations

import os
import time
from typing import Any

from .cpu import CpuSample, cpu_sample
from .gcwatch import gc_during, gc_running_on
from .model import Frame
from .procview import KernelView, read_view

CPU_WINDOW = 0.1
"""Seconds between the two CPU samples when the capture itself took less."""

CAUSES = ("blocked syscall", "CPU spin", "lock wait", "GIL held", "garbage collection",
          "import in progress", "unknown")

def _importing(frames: tuple[Frame, ...]) -> bool:
    return any(f.file.startswith("<frozen importlib._bootstrap") for f in frames)


def _python_lock_wait(frames: tuple[Frame, ...]) -> bool:
    top = frames[-1] if frames else None
    return top is not None and os.path.basename(top.file) == "threading.py" and (
        top.function in ("wait", "acquire", "_wait_for_tstate_lock", "join"))


def classify(view: KernelView | None, frames: tuple[Frame, ...], *, gil_held: bool = False,
             in_gc: bool = False) -> str:
    """One of CAUSES, the most specific first: what the thread was doing (GC,
    an import), how the freeze was seen (GIL held), then the kernel's view."""
    if in_gc:
        return "garbage collection"
    if _importing(frames):
        return "import in progress"
    if gil_held:
        return "GIL held"
    if view is None:
        return "unknown"
    if view.ok:
        if view.state == "D":  # uninterruptible: disk or NFS I/O
            return "blocked syscall"
        if view.syscall == "futex":
            # A Python thread waiting for the GIL also sits in futex: a pure-Python
            # spin observed from another thread can look like this. CPU tells.
            return "CPU spin" if view.cpu_growing else "lock wait"
        if view.syscall_nr is not None and view.syscall_nr >= 0:
            return "blocked syscall"
        if view.syscall in ("running", "none") or view.state == "R" or view.cpu_growing:
            return "CPU spin"
        return "unknown"
    # No /proc: the CPU clock and the Python stack are all there is.
    if view.cpu_delta is None:
        return "unknown"
    if view.cpu_growing:
        return "CPU spin"
    return "lock wait" if _python_lock_wait(frames) else "blocked syscall"


def summary(view: KernelView | None, cause: str) -> str:
    """One line: ``blocked in recvfrom(fd 7) — TCP a:p → b:q, thread CPU 0.00 s over 0.1 s``."""
    if view is None:
        return cause
    parts: list[str] = []
    if view.ok:
        if view.syscall == "futex":
            head = "waiting in futex (a lock or condition held elsewhere)"
        elif view.syscall in ("running", "none") or view.syscall is None:
            head = f"running (state {view.state})"
        else:
            call = view.syscall + (f"(fd {view.fd})" if view.fd is not None else "()")
            head = f"blocked in {call}"
        if view.wchan and view.syscall_nr is None:  # not in a syscall: where, then
            head += f" at {view.wchan}"
        if view.tcp:
            head += f" \u2014 TCP {view.tcp['local']} \u2192 {view.tcp['peer']}"
            if view.tcp.get("state") not in (None, "ESTABLISHED"):
                head += f" ({view.tcp['state']})"
        elif view.fd_target:
            head += f" \u2014 {view.fd_target}"
        parts.append(head)
    elif view.error:
        parts.append(view.error)
    if view.cpu_delta is not None and view.cpu_window is not None:
        parts.append(f"thread CPU {view.cpu_delta:.2f} s over the last {view.cpu_window:.1f} s")
    return ", ".join(parts) or cause


def observe(ident: int | None, native_id: int | None, before: CpuSample | None,
            frames: tuple[Frame, ...], *, gil_held: bool = False,
            min_window: float = CPU_WINDOW) -> dict[str, Any]:
    """``kernel``, ``cause`` and ``kernel_summary`` for a dump (never raises).

    ``before`` is a CPU sample taken earlier (at the start of the capture);
    the watchdog sleeps only what is missing of ``min_window`` for the second."""
    try:
        in_gc = gc_running_on(ident)
        if before is not None:
            wait = min_window - (time.monotonic() - before.at)
            if wait > 0:
                time.sleep(wait)  # the watchdog thread only; releases the GIL
        view = read_view(native_id, before, cpu_sample(ident))
        cause = classify(view, frames, gil_held=gil_held, in_gc=in_gc)
        return {"kernel": view.to_json(), "cause": cause, "kernel_summary": summary(view, cause)}
    except Exception as e:  # boundary: the kernel view must never break a capture
        err = f"{type(e).__name__}: {e}"
        cause = classify(None, frames, gil_held=gil_held)
        return {"kernel": KernelView(False, error=err).to_json(), "cause": cause,
                "kernel_summary": err}


def held_gil(extra: dict[str, Any], frames: tuple[Frame, ...], ident: int | None = None,
             seconds: float = 0.0, until: float = 0.0, slack: float = 0.0) -> dict[str, Any]:
    """``extra`` re-classified for a dump re-pinned on a GIL-held capture (a new
    dict): its kernel view was read after the GIL came back, so the cause comes
    from how it was seen - or from a garbage collection on the loop thread that
    took most of the freeze (``seconds`` long, over by ``until``; see gc_during)."""
    out = dict(extra)
    collected = gc_during(ident, seconds, until, slack)
    out["cause"] = classify(None, frames, gil_held=True, in_gc=collected is not None)
    if isinstance(out.get("kernel"), dict):
        out["kernel"] = {**out["kernel"],
                         "note": "read after the GIL came back, not during the freeze"}
    if collected is not None:
        out["kernel_summary"] = (f"a generation-{collected[1]} garbage collection held "
                                 f"the GIL for {collected[0]:.2f} s")
    else:
        out["kernel_summary"] = "a C call held the GIL; no Python thread could run"
    return out
