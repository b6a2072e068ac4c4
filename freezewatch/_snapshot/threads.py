"""Every thread's stack, named, as plain records."""

from __future__ import annotations

import threading
import types

from .frames import stack_records
from .model import ThreadStack

MAX_THREADS = 200


def thread_stacks(
    top_frames: dict[int, types.FrameType], skip: set[int]
) -> tuple[ThreadStack, ...]:
    """Stacks of every thread in ``top_frames`` except those in ``skip``."""
    # threading.enumerate() takes _active_limbo_lock only for a dict copy; the
    # loop thread holds that lock for a few bytecodes while starting a thread,
    # never across a blocking call, so this cannot wait on a frozen loop.
    known = {t.ident: t for t in threading.enumerate()}
    out = []
    for tid, frame in list(top_frames.items())[:MAX_THREADS]:
        if tid in skip:
            continue
        t = known.get(tid)
        out.append(
            ThreadStack(
                t.name if t else f"<thread {tid}>",
                tid,
                t.daemon if t else None,
                stack_records(frame),
            )
        )
    return tuple(out)


def thread_name(tid: int | None) -> str | None:
    for t in threading.enumerate():
        if t.ident == tid:
            return t.name
    return None
