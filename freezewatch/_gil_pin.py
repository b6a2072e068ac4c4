"""Pinning a freeze nobody saw live: the sentinel's py-spy stack, or why there is none.

Used by the pipeline for GIL-held freezes where faulthandler's signal was off
or missed (watchdog thread).
"""

from __future__ import annotations

from . import _detect, _gil
from ._handle import LoopWatch
from ._observe import idle_at
from ._snapshot.model import Frame, Native


def sentinel_pin(w: LoopWatch, since: float,
                 need_held_gil: bool = False) -> tuple[tuple[Frame, ...], Native] | None:
    """The loop thread's Python stack from the sentinel's py-spy capture taken
    during a GIL-held freeze (where faulthandler's signal is off or missed)."""
    gl = _gil.layers()
    cfg = w.config
    if gl is None or not (cfg.sentinel and cfg.native) or gl.sentinel.proc is None:
        return None
    gl.native_switches = {}
    native = gl.sentinel_native(since, cfg.sentinel, cfg.threshold)
    frames = _gil.python_frames(native, w.thread_ident)
    tid = w.thread_ident
    held = _detect.held_throughout(gl.native_switches.get(tid) if tid is not None else None)
    if frames is None or not _detect.pin_ok(_gil.idle(frames, idle_at(w)),
                                            _gil.holds_gil_in_c(native, tid),
                                            need_held_gil, held):
        return None
    return frames, native


def unseen_reason(w: LoopWatch) -> str:
    cfg = w.config
    if not cfg.sentinel or not ((cfg.native and w.pyspy) or cfg.faulthandler):
        return ("not seen live: the watchdog could not run during it (a C call holding "
                "the GIL?) and nothing else could look: install py-spy, and keep "
                "sentinel and faulthandler on (docs/native.md)")
    return ("not seen live: it ended before the watchdog could look, or a C call held "
            "the GIL and py-spy could not take the loop thread's stack (see native.md)")
