"""Snapshot -> sinks: dump files first (plain os calls), then metrics, then events.

Each sink is isolated: a dump that cannot be written is counted, reported as
``dump_failed`` and survived; the event still goes out.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from . import _state
from ._events import FreezeEvent
from ._sinks import metrics as _metrics
from ._sinks.dumpfile import dump_name, rewrite_dump, write_dump
from ._sinks.log import events
from ._sinks.report import Report
from ._snapshot.model import Snapshot

if TYPE_CHECKING:
    from ._loopstate import LoopState


def write(w: LoopState, snap: Snapshot | dict[str, Any], rewrite: str | None = None,
          signature: str | None = None) -> str | None:
    """Write (or rewrite) a dump for ``w``; returns the .json path, None on failure.

    A written dump starts the rate-limit window of ``signature``; a failed one
    does not, so the next freeze at that frame is dumped once the directory
    is writable again.
    """
    cfg = w.config
    doc = snap.to_json() if isinstance(snap, Snapshot) else snap
    try:
        if rewrite is not None:
            return rewrite if rewrite_dump(rewrite, doc) else None
        name = dump_name(doc["kind"], doc["detected_at"], next(_state.dump_seq))
        path = write_dump(cfg.dump_dir, name, doc, cfg.max_dumps, cfg.max_dump_bytes)
    except Exception as e:  # boundary: the dump-file sink (full disk, directory gone, ...)
        w.dump_failures += 1
        _metrics.dump_failed(w)
        reason = f"{type(e).__name__}: {e}"
        emit(w, FreezeEvent("dump_failed", w.name, doc.get("blocked_for", 0.0), reason=reason),
             level="error")
        return None
    if signature is not None:
        _state.last_dump_by_signature[signature] = time.monotonic()
    w.dumps.append(path)
    _metrics.dump_written(w)
    return path


def rate_limited(signature: str, window: float) -> bool:
    """True if a dump with this blocking-frame signature was written within ``window`` s."""
    last = _state.last_dump_by_signature.get(signature)
    return last is not None and time.monotonic() - last < window


def emit(w: LoopState, event: FreezeEvent, level: str = "warning",
         snap: Snapshot | None = None) -> None:
    events.emit(event, w.hooks, level, Report(event, snap, level=level))


def event_for(event: str, w: LoopState, snap: Snapshot, seconds: float, path: str | None,
              reason: str | None = None) -> FreezeEvent:
    return FreezeEvent(
        event,
        w.name,
        round(seconds, 3),
        blocked_at=snap.blocking_frame.where,
        app_line=snap.app_frame.where if snap.app_frame else None,
        dump_path=path,
        reason=reason,
    )


def short(path: str | None) -> str | None:
    return os.path.basename(path) if path else None
