"""The structlog context of the blocking (or stalled) task, to join a dump with logs.

Off by default: context variables often hold what must not reach a dump
(``bind_contextvars(api_key=...)``, a user's e-mail). Only the keys named in
the ``contextvars`` setting (``install(contextvars=("request_id",))``,
``FREEZEWATCH_CONTEXTVARS=request_id,job``) are copied; without any, the dump
has no ``context`` key.

structlog's ``bind_contextvars`` stores each key in a ``ContextVar`` named
``structlog_<key>`` and marks cleared keys with ``...``; reading the task's
context by that name prefix needs no structlog import. ``Task.get_context()``
exists from Python 3.12; on older Pythons there is nothing to read and the
dump has no ``context`` key (absent, never wrong).
"""

from __future__ import annotations

from typing import Any

PREFIX = "structlog_"
MAX_KEYS = 50
MAX_VALUE = 300
_PLAIN = (str, int, float, bool, type(None))


def _value(v: Any) -> Any:
    if isinstance(v, _PLAIN):
        return v[:MAX_VALUE] if isinstance(v, str) else v
    try:
        return repr(v)[:MAX_VALUE]
    except Exception as e:  # a broken __repr__ must not break a capture
        return f"<repr-error {type(e).__name__}>"


def task_context(task: Any, allow: tuple[str, ...] | frozenset[str] = ()) -> (
        dict[str, Any] | None):
    """``{key: value}`` of the task's structlog contextvars named in ``allow``;
    None if none are allowed or they are unknowable."""
    if task is None or not allow:
        return None
    allowed = frozenset(allow)
    get_context = getattr(task, "get_context", None)
    if get_context is None:  # Python < 3.12
        return None
    # A Context is an immutable mapping: safe to iterate from another thread.
    out: dict[str, Any] = {}
    for var, value in get_context().items():
        name = var.name
        if name.startswith(PREFIX) and value is not Ellipsis and name[len(PREFIX):] in allowed:
            out[name[len(PREFIX):]] = _value(value)
            if len(out) >= MAX_KEYS:
                break
    return out
