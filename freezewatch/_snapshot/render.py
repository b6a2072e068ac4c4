"""A dump document (the JSON dict) -> the .txt report a person reads with ``less``.

Reads top-down like a crash report: one headline, the blocking line and the
application line that led to it, then the detail. Renders from the JSON
document, not from live objects, so the same code can render a dump file.

Every string of the document is escaped first (``clean``): request paths,
task names, file names and source lines come from the application and its
clients, and a control character in them (ESC, BEL, CR, a newline, C1, a
bidi override) must reach neither a terminal nor a forged line of the .txt.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from .._redact import escape, escape_lines
from . import render_waits

MAX_GROUPS_SHOWN = 50
MAX_DEPTH = 32
"""Nesting kept by ``clean``; deeper (a hostile file) becomes a marker, not a RecursionError."""


def clean(value: Any, depth: int = 0, key: str = "") -> Any:
    """A copy of a JSON value with every string escaped (``_redact.escape``);
    multi-line ``text`` (py-spy's) keeps its line breaks."""
    if isinstance(value, str):
        return escape_lines(value) if key == "text" else escape(value)
    if depth >= MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {escape(k) if isinstance(k, str) else k: clean(v, depth + 1, str(k))
                for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v, depth + 1) for v in value]
    return value


def _when(ts: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(float(ts), datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC"
        )
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"


def _frame_line(f: dict[str, Any] | None) -> str:
    if not f:
        return "(none)"
    return f"{f.get('file')}:{f.get('line')} in {f.get('function')}"


def _frames(lines: list[str], frames: list[dict[str, Any]], indent: str = "  ") -> None:
    if not frames:
        lines.append(f"{indent}(no frames)")
    for f in frames:
        lines.append(f"{indent}{_frame_line(f)}")
        if f.get("code"):
            lines.append(f"{indent}    {f['code']}")


def _secs(x: Any) -> str:
    try:
        return f"{float(x):.2f} s"
    except (TypeError, ValueError):
        return "?"


def _waiting(g: dict[str, Any]) -> str:
    """``, waiting ≥ 41 s`` for a task group whose wait age is known (waits.py)."""
    low, high = g.get("waiting"), g.get("waiting_longest")
    if not isinstance(low, (int, float)):
        return ""
    text = f", waiting \u2265 {_age(low)}"
    if isinstance(high, (int, float)) and high - low >= 1.0:
        text += f" (longest \u2265 {_age(high)})"
    return text


def _age(x: float) -> str:
    """Floored (the ages are lower bounds): 0.9 s, 41 s, 11 min, 3 h."""
    if x < 10:
        return f"{int(x * 10) / 10:.1f} s"
    if x < 600:
        return f"{int(x)} s"
    return f"{int(x // 60)} min" if x < 36000 else f"{int(x // 3600)} h"


def _loop_native(lines: list[str], doc: dict[str, Any]) -> None:
    """The loop thread's native stack (py-spy), right under its Python stack."""
    native = doc.get("native") or {}
    tid = (doc.get("loop") or {}).get("thread_id")
    for t in native.get("threads") or []:
        if tid is not None and t.get("thread_id") == tid:
            who = "sentinel, during the freeze" if native.get("source") == "sentinel" else "py-spy"
            lines.append(f"Loop thread native stack ({who}; most recent call last):")
            for f in t.get("frames") or []:
                where = (os.path.basename(str(f.get("file"))) if f.get("native")
                         else f"{f.get('file')}:{f.get('line')}")
                lines.append(f"  {f.get('function')} ({where})")
            return


def render(doc: dict[str, Any]) -> str:
    """The .txt report of a dump document (escaped: see ``clean``)."""
    doc = clean(doc)
    kind = doc.get("kind", "?")
    loop = doc.get("loop") or {}
    lines: list[str] = []
    if kind == "stall":
        head = (
            f"STALL: {doc.get('stalled', {}).get('name', '?')!s} open for "
            f"{_secs(doc.get('blocked_for'))} (stall_after {_secs(doc.get('threshold'))}); "
            f"loop {loop.get('name')!r} is alive"
        )
    else:
        word = "FREEZE (update)" if kind == "freeze-update" else "FREEZE"
        head = (
            f"{word}: event loop {loop.get('name')!r} blocked for {_secs(doc.get('blocked_for'))}"
            f" (threshold {_secs(doc.get('threshold'))})"
        )
    lines.append(head)
    lines.append(
        f"  at {_when(doc.get('detected_at'))}, pid {doc.get('pid')} on {doc.get('hostname')}, "
        f"thread {loop.get('thread_name')!r} ({loop.get('thread_id')})"
    )
    if "duration" in doc:
        lines.append(f"  the freeze ended after {_secs(doc['duration'])} in all")
    if doc.get("complete") is False:
        lines.append("  written by the sentinel during the freeze; the process did not run "
                     "again to complete it (no tasks, threads or requests)")
    if kind == "freeze-update":
        moved = doc.get("frame_moved")
        lines.append(
            "  the blocking frame MOVED since the previous dump"
            if moved
            else "  the blocking frame has not moved since the previous dump"
        )
    lines.append("")
    bf, af = doc.get("blocking_frame"), doc.get("app_frame")
    lines.append(f"Blocked at:  {_frame_line(bf)}")
    if bf and bf.get("code"):
        lines.append(f"             {bf['code']}")
    if af and af != bf:
        lines.append(f"App line:    {_frame_line(af)}")
        if af.get("code"):
            lines.append(f"             {af['code']}")
    elif not af:
        lines.append("App line:    (no application frame on this stack)")
    wait_cause = render_waits.cause_line(doc)  # who holds what it waits for
    if wait_cause:
        lines.append(f"Cause:       {wait_cause}")
    elif doc.get("cause"):  # the kernel's view (procview, cause): freezes only
        why = f" \u2014 {doc['kernel_summary']}" if doc.get("kernel_summary") else ""
        lines.append(f"Cause:       {doc['cause']}{why}")
    if kind == "stall":
        lines.append(f"Task:        {(doc.get('stalled') or {}).get('task')} (stalled)")
    else:
        lines.append(f"Task:        {doc.get('current_task') or '(no task: a plain callback)'}")
    req = doc.get("request")
    if req:
        rid = f", request id {req['request_id']}" if req.get("request_id") else ""
        lines.append(f"Request:     {req.get('name')} (open {_secs(req.get('age'))}{rid})")
    if doc.get("context"):
        lines.append("Context:     " + " ".join(f"{k}={v!r}" for k, v in doc["context"].items()))
    units = doc.get("inflight") or []
    shown = [u for i, u in enumerate(units) if i < 20 or u.get("in_blocking_task")]
    for u in shown:
        name, detail = str(u.get("name")), u.get("detail")
        if detail and str(detail).startswith(name):  # "GET url — status 200, ..."
            name, detail = str(detail), None
        detail = f", {detail}" if detail else ""
        rid = f", request id {u['request_id']}" if u.get("request_id") else ""
        mark = "  <- this task" if u.get("in_blocking_task") else ""
        lines.append(
            f"In flight:   {name} ({u.get('kind')}, {_secs(u.get('age'))}, "
            f"task {u.get('task')}{rid}{detail}){mark}"
        )
    if len(units) > len(shown):
        lines.append(f"In flight:   ... {len(units) - len(shown)} more in the .json")
    if doc.get("gil_held"):
        # The same words as the JSON's captured_by: who took the stack during the freeze.
        by = escape(str(doc.get("captured_by") or "faulthandler"))
        lines.append(f"GIL:         held during the freeze (captured by {by})")
    lines.append("")
    lines.extend(render_waits.section(doc))

    if kind == "stall":
        lines.append("Await chain of the stalled task (outermost first):")
        _frames(lines, doc.get("await_chain") or [])
        lines.append("")
    lines.append("Loop thread stack (most recent call last):")
    _frames(lines, (doc.get("loop_thread") or {}).get("frames") or [])
    _loop_native(lines, doc)
    lines.append("")

    tasks = doc.get("tasks") or []
    lines.append(f"Tasks: {doc.get('task_count', '?')} in {len(tasks)} group(s)")
    for g in tasks[:MAX_GROUPS_SHOWN]:
        names = ", ".join(g.get("names") or [])
        more = f" (+{g['count'] - len(g.get('names') or [])} more)" if g.get("count", 1) > len(
            g.get("names") or []
        ) else ""
        lines.append(
            f"  [{g.get('count', 1)}x {g.get('state')}{_waiting(g)}] {g.get('coroutine')}  "
            f"{names}{more}"
        )
        _frames(lines, g.get("await_chain") or [], indent="      ")
        if g.get("awaiting"):
            lines.append(f"      awaiting {g['awaiting']}")
    if len(tasks) > MAX_GROUPS_SHOWN:
        lines.append(f"  ... {len(tasks) - MAX_GROUPS_SHOWN} more group(s) in the .json")
    lines.append("")

    for t in doc.get("threads") or []:
        lines.append(f"Thread {t.get('name')!r} ({t.get('id')}):")
        _frames(lines, t.get("frames") or [])
    lines.append("")
    native = doc.get("native") or {}
    lines.append("Native stacks (py-spy):")
    if native.get("ok"):
        lines.extend("  " + ln for ln in (native.get("text") or "").splitlines())
    else:
        lines.append(f"  unavailable: {native.get('error')}")
    if doc.get("capture_errors"):
        lines.append("")
        lines.append("Capture errors (parts of this dump may be missing):")
        lines.extend(f"  {e}" for e in doc["capture_errors"])
    return "\n".join(lines) + "\n"
