"""The OpenTelemetry span a task runs in, read from the watchdog thread.

A dump can name the trace of the request in flight, so a freeze shows up on
that request's trace in any OTel backend. opentelemetry-api keeps its current
``Context`` in one ``ContextVar`` (``ContextVarsRuntimeContext._current_context``,
named ``current_context``, on ``opentelemetry.context._RUNTIME_CONTEXT``); the
span is the value under ``trace.propagation._SPAN_KEY`` in that Context, which
``trace.get_current_span(context)`` reads. The task's own ``contextvars.Context``
is reachable without running it:

- ``Task.get_context()`` (Python >= 3.12);
- ``Task._context`` (the pure-Python Task);
- before 3.12, the C Task exposes neither: ``gc.get_referents(task)`` lists what
  its ``tp_traverse`` visits, the task's own context first (``TaskObj_traverse``
  visits ``task_context`` before the future's callbacks' contexts).

A Context is an immutable mapping, safe to read from another thread while the
task runs (a ``ContextVar.set()`` inside it swaps the mapping, it never mutates
what a reader holds). Nothing here imports OpenTelemetry: an application that
never imported it pays one ``sys.modules`` lookup.
"""

from __future__ import annotations

import contextvars
import gc
import sys
from typing import Any


def task_context(task: Any) -> contextvars.Context | None:
    """The ``contextvars.Context`` that ``task`` runs in, or None."""
    get_context = getattr(task, "get_context", None)
    if get_context is not None:
        ctx = get_context()
        return ctx if isinstance(ctx, contextvars.Context) else None
    ctx = getattr(task, "_context", None)
    if isinstance(ctx, contextvars.Context):
        return ctx
    for ref in gc.get_referents(task):  # C Task before 3.12: task_context is visited first
        if isinstance(ref, contextvars.Context):
            return ref
    return None


def _otel_var() -> contextvars.ContextVar[Any] | None:
    ctx_mod = sys.modules.get("opentelemetry.context")
    if ctx_mod is None:  # the application never imported OpenTelemetry
        return None
    runtime = getattr(ctx_mod, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)  # another OTEL_PYTHON_CONTEXT: unknown
    return var if isinstance(var, contextvars.ContextVar) else None


def span_of_task(task: Any) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` as lowercase hex (32 and 16 digits) of the OTel span
    current in ``task``, or None (no task, no OpenTelemetry, no valid span)."""
    if task is None:
        return None
    var = _otel_var()
    if var is None:
        return None
    ctx = task_context(task)
    if ctx is None:
        return None
    otel_ctx = ctx.get(var)
    if otel_ctx is None:
        return None
    from opentelemetry import trace  # already imported: the var above exists

    sc = trace.get_current_span(otel_ctx).get_span_context()
    if not sc.is_valid:
        return None
    return format(sc.trace_id, "032x"), format(sc.span_id, "016x")
