"""Interim redaction for the OpenTelemetry and Sentry sinks.

Until the dump's documented redaction rule (``freezewatch._redact``) lands,
text that came from the application (request and task names, URLs, code
lines, the .txt attachment) leaves through ``clean()``: query strings and
fragments are cut and bot-API tokens in a path (``/bot<id>:<token>/...``) are
masked. Each sink routes everything through its own ``_clean`` so the rule can
be swapped in one place per sink.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"
MAX_FIELD = 1000
"""Characters kept of one attribute or tag value (an attachment is not cut)."""

# "?a=b&token=..." or "#frag" up to the next whitespace or quote
_QUERY = re.compile(r"(?<=[^\s?#])[?#][^\s'\"<>]+")
# Telegram-style bot tokens in a path: /bot123456:AAE-abc.../getUpdates
_BOT_TOKEN = re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+")


def clean(text: str) -> str:
    """``text`` with query strings, fragments and bot tokens redacted."""
    text = _BOT_TOKEN.sub(r"\1" + REDACTED, text)
    return _QUERY.sub("?" + REDACTED, text)


def field(text: str | None) -> str | None:
    """``clean(text)``, cut to ``MAX_FIELD`` characters (None stays None)."""
    if text is None:
        return None
    out = clean(str(text))
    return out if len(out) <= MAX_FIELD else out[: MAX_FIELD - 1] + "\u2026"
