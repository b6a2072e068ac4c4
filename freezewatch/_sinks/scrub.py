"""Redaction for the OpenTelemetry and Sentry sinks: the dumps' rule, and a length cap.

Text that came from the application (request and task names, URLs, code
lines, the .txt attachment) leaves through ``clean()``: the documented
redaction rule of the dumps (``freezewatch._redact``: credentials, query
strings, fragments, token-like path segments) and control characters
escaped. Each sink routes everything through its own ``_clean``.
"""

from __future__ import annotations

from .. import _redact

REDACTED = "<redacted>"
MAX_FIELD = 1000
"""Characters kept of one attribute or tag value (an attachment is not cut)."""

def clean(text: str) -> str:
    """``text`` redacted by the dumps' rule, its control characters escaped."""
    return _redact.escape(_redact.redact(text))


def field(text: str | None) -> str | None:
    """``clean(text)``, cut to ``MAX_FIELD`` characters (None stays None)."""
    if text is None:
        return None
    out = clean(str(text))
    return out if len(out) <= MAX_FIELD else out[: MAX_FIELD - 1] + "\u2026"
