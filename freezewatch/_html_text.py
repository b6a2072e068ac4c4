"""Text for the HTML report: escaping what comes from dumps, times, durations, causes.

Everything a dump holds (paths, function names, source lines, request and
task names) comes from the application and its clients, so every string
goes through :func:`esc` on its way into the page: control characters,
Unicode line and direction overrides and lone surrogates become visible
``\\xNN``/``\\uNNNN`` escapes (as ``freezewatch show`` does for terminals), long
strings are cut, then ``html.escape`` with quotes makes it text in an
element or an attribute alike.
"""

from __future__ import annotations

import datetime
import html
import re
from typing import Any

MAX_TEXT = 400
"""Characters kept of any one string from a dump (a source line, a name)."""

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e"
                     "\u2060-\u2069\ufeff\ufff9-\ufffb\ud800-\udfff]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as one line of plain text: unsafe characters made visible, cut at ``limit``."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "\u2026"
    return _UNSAFE.sub(_visible, text.replace("\t", " ").replace("\n", "\\n"))


def esc(value: Any, limit: int = MAX_TEXT) -> str:
    """``value`` as HTML text (safe inside an element and inside a quoted attribute)."""
    return html.escape(clean(value, limit), quote=True)


# -- causes ---------------------------------------------------------------------------------
# One colour per cause (Okabe-Ito, readable by colour-blind people), in legend order.
CAUSE_COLOURS: dict[str, str] = {
    "blocked syscall": "#0072b2",
    "CPU spin": "#e69f00",
    "lock wait": "#cc79a7",
    "GIL held": "#d55e00",
    "garbage collection": "#009e73",
    "import in progress": "#8c6d1f",
    "stall": "#56b4e9",
    "unknown": "#8a8f98",
}


def cause_of(kind: str, cause: str | None) -> str:
    """The timeline's cause for one freeze or stall (a key of CAUSE_COLOURS)."""
    if kind == "stall":
        return "stall"
    return cause if cause in CAUSE_COLOURS and cause != "stall" else "unknown"


def pill(cause: str) -> str:
    colour = CAUSE_COLOURS.get(cause, CAUSE_COLOURS["unknown"])
    return f'<span class="pill" style="--c:{colour}">{esc(cause)}</span>'


# -- numbers and times ---------------------------------------------------------------------
def dur(seconds: float) -> str:
    """A duration for people: 0.42 s, 12.3 s, 4 min 05 s, 2 h 10 min, 3 d 4 h."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def utc(ts: float) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):  # inf, nan, year 10000
        return None


def when(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    d = utc(ts)
    return d.strftime(fmt) if d else "?"


def short_when(ts: float, same_day: bool) -> str:
    """``19:50:02`` when the whole report is within one UTC day, else ``Dec 01 19:50``."""
    return when(ts, "%H:%M:%S" if same_day else "%b %d %H:%M")


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"
