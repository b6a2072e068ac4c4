"""Build a Snapshot of a frozen loop from the watchdog thread.

Each part (loop stack, tasks, threads) is captured inside its own guard: a
part that fails leaves a marker in ``capture_errors`` and the rest of the
snapshot is still produced. Frame and task objects are dropped on return.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from typing import Any

from . import cause as _cause
from . import cpu as _cpu
from . import frames as _frames
from . import waitgraph as _waitgraph
from .context import task_context
from .model import Frame, InflightUnit, LoopInfo, Native, Snapshot, TaskGroup, ThreadStack
from .otel_context import sentry_trace_of_task, span_of_task
from .tasks import all_tasks, group_tasks, task_chain
from .threads import thread_stacks
from .waits import WaitSampler

UNKNOWN_FRAME = Frame("<unknown>", 0, "<unknown>", None)
_HOST = socket.gethostname()
_PY = sys.version.split()[0] + f" ({sys.implementation.name}, {sys.executable})"


def _safe(errors: list[str], part: str, fn: Any, default: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # boundary: one snapshot part
        errors.append(f"{part}: {type(e).__name__}: {e}")
        return default


def capture(
    *,
    kind: str,
    loop: asyncio.AbstractEventLoop,
    info: LoopInfo,
    detected_at: float,
    blocked_for: float,
    threshold: float,
    inflight: tuple[InflightUnit, ...],
    native: Native,
    stalled_task: asyncio.Task[Any] | None = None,
    extra: dict[str, Any] | None = None,
    waits: WaitSampler | None = None,
    cpu_before: _cpu.CpuSample | None = None,
    contextvars: tuple[str, ...] = (),
) -> Snapshot:
    """``contextvars``: the structlog context keys allowed into the dump (the
    ``contextvars`` setting); none by default."""
    errors: list[str] = []
    # A freeze's kernel view compares the loop thread's CPU time with an
    # earlier sample: the one taken when the unanswered heartbeat was sent
    # (``cpu_before``, a threshold ago: no wait), else one taken now, which
    # cause.observe tops up to its minimum window (up to 0.1 s later).
    cpu0 = cpu_before
    if cpu0 is None and kind != "stall":
        cpu0 = _safe(errors, "kernel", lambda: _cpu.cpu_sample(info.thread_id), None)
    tops = _safe(errors, "threads", _frames.thread_top_frames, {})
    loop_frames: tuple[Frame, ...] = ()
    if info.thread_id is not None and info.thread_id in tops:
        loop_frames = _safe(
            errors, "loop_thread", lambda: _frames.stack_records(tops[info.thread_id]), ()
        )
    current = _safe(errors, "current_task", lambda: asyncio.current_task(loop), None)
    tasks = _safe(errors, "tasks", lambda: all_tasks(loop), [])
    groups: tuple[TaskGroup, ...] = _safe(
        errors, "tasks",
        lambda: group_tasks(tasks, current, waits.age_of(time.monotonic()) if waits else None), ()
    )
    chain: tuple[Frame, ...] = ()
    if stalled_task is not None:
        chain, _ = _safe(errors, "stalled_task", lambda: task_chain(stalled_task), ((), None))
    subject = stalled_task if stalled_task is not None else current
    context = _safe(errors, "context", lambda: task_context(subject, contextvars), None)
    # The trace of the request in flight, if OTel or Sentry is in use (their sinks).
    otel_span = _safe(errors, "otel_trace", lambda: span_of_task(subject), None)
    sentry_span = _safe(errors, "sentry_trace", lambda: sentry_trace_of_task(subject), None)
    skip = {info.thread_id} if info.thread_id is not None else set()
    threads: tuple[ThreadStack, ...] = _safe(
        errors, "threads", lambda: thread_stacks(tops, skip), ()
    )
    # Who the blocked party waits for (the loop thread of a freeze, the stalled
    # task of a stall): read from the same live frames and tasks, plain data out.
    graph = _safe(errors, "waits_for", lambda: _waitgraph.build(
        kind=kind, loop=loop, loop_ident=info.thread_id, tops=tops, tasks=tasks,
        current=current, stalled_task=stalled_task, inflight=inflight,
        age_of=waits.age_of(time.monotonic()) if waits else None), None)
    current_name = _safe(
        errors, "current_task", lambda: current.get_name() if current else None, None
    )
    # Frames and tasks die with this function's locals: only plain data is returned.

    stack = chain if kind == "stall" else loop_frames
    blocking = stack[-1] if stack else UNKNOWN_FRAME
    doc_extra = dict(extra or {})
    if kind == "stall":
        doc_extra["await_chain"] = [f.to_json() for f in chain]
    if context is not None:  # Python >= 3.12, a task, keys allowed: its structlog contextvars
        doc_extra["context"] = context
    if otel_span is not None:
        doc_extra["otel_trace"] = {"trace_id": otel_span[0], "span_id": otel_span[1]}
    if sentry_span is not None:
        doc_extra["sentry_trace"] = {"trace_id": sentry_span[0], "span_id": sentry_span[1]}
    if kind != "stall":  # a stall's loop is alive: nothing to classify
        doc_extra.update(_safe(errors, "kernel", lambda: _cause.observe(
            info.thread_id, _cpu.native_id_of(info.thread_id), cpu0, loop_frames,
            gil_held=bool(doc_extra.get("gil_held"))), {}))
    request = next((u for u in inflight if u.in_blocking_task), None)
    if request is not None:  # the outermost unit (request) the blocking task serves
        doc_extra.setdefault("request", request.to_json())
    return Snapshot(
        kind=kind,
        pid=os.getpid(),
        hostname=_HOST,
        python=_PY,
        loop=info,
        detected_at=detected_at,
        blocked_for=blocked_for,
        threshold=threshold,
        loop_frames=loop_frames,
        blocking_frame=blocking,
        app_frame=_frames.app_frame(stack),
        current_task=current_name,
        tasks=groups,
        task_count=sum(g.count for g in groups),
        threads=threads,
        native=native,
        inflight=inflight,
        errors=tuple(errors),
        extra=doc_extra,
        waits=graph,
    )

