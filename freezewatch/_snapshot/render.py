"""A dump document (the JSON dict) -> the .txt report a person reads with ``less``.

Reads top-down like a crash report: one headline, the blocking line and the
application line that led to it, then the detail. Renders from the JSON
document, not from live objects, so the same code can render a dump file.
"""

from __future__ import annotations

import datetime
from typing import Any

MAX_GROUPS_SHOWN = 50


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


def render(doc: dict[str, Any]) -> str:
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
    lines.append(f"Task:        {doc.get('current_task') or '(no task: a plain callback)'}")
    for u in doc.get("inflight") or []:
        detail = f", {u['detail']}" if u.get("detail") else ""
        lines.append(
            f"In flight:   {u.get('name')} ({u.get('kind')}, {_secs(u.get('age'))}, "
            f"task {u.get('task')}{detail})"
        )
    if doc.get("gil_held"):
        lines.append("GIL:         held during the freeze (captured by faulthandler)")
    lines.append("")

    if kind == "stall":
        lines.append("Await chain of the stalled task (outermost first):")
        _frames(lines, doc.get("await_chain") or [])
        lines.append("")
    lines.append("Loop thread stack (most recent call last):")
    _frames(lines, (doc.get("loop_thread") or {}).get("frames") or [])
    lines.append("")

    tasks = doc.get("tasks") or []
    lines.append(f"Tasks: {doc.get('task_count', '?')} in {len(tasks)} group(s)")
    for g in tasks[:MAX_GROUPS_SHOWN]:
        names = ", ".join(g.get("names") or [])
        more = f" (+{g['count'] - len(g.get('names') or [])} more)" if g.get("count", 1) > len(
            g.get("names") or []
        ) else ""
        lines.append(
            f"  [{g.get('count', 1)}x {g.get('state')}] {g.get('coroutine')}  {names}{more}"
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
