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


def sentry_trace_of_task(task: Any) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the Sentry span (a request's transaction or a span
    in it) current in ``task``, or None.

    sentry-sdk 2.x keeps its current scope in a ContextVar
    (``sentry_sdk.scope._current_scope``) whose ``_span`` is the active span; only
    plain attributes are read. Without a span (no tracing) nothing is returned:
    the ids Sentry would give such a request's events are computed lazily from
    merged scopes, not something to reconstruct from another thread.
    """
    if task is None:
        return None
    scope_mod = sys.modules.get("sentry_sdk.scope")
    if scope_mod is None:  # the application never imported sentry_sdk
        return None
    var = getattr(scope_mod, "_current_scope", None)
    ctx = task_context(task)
    if ctx is None or not isinstance(var, contextvars.ContextVar):
        return None
    span = getattr(ctx.get(var), "_span", None)
    trace_id, span_id = getattr(span, "trace_id", None), getattr(span, "span_id", None)
    if (isinstance(trace_id, str) and len(trace_id) == 32 and isinstance(span_id, str)
            and len(span_id) == 16):
        return trace_id, span_id
    return None
