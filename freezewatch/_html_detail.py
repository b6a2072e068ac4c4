"""The HTML report's detail of one signature, from its most recent dump.

The dump is read again (one file per signature shown) and trusted in
nothing: every part is looked up with a type check, every list is cut at a
bound (the page must stay small when a dump is huge), and every string goes
through ``esc``. A part that is missing or of the wrong shape is left out.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from ._html_text import dur, esc, when

MAX_FRAMES = 40
MAX_TASK_GROUPS = 20
MAX_CHAIN = 8
MAX_INFLIGHT = 20
MAX_LINKS = 10
MAX_DUMP_BYTES = 50_000_000
_STDLIB_MARKS = ("/lib/python3", "/site-packages/", "/dist-packages/", "<frozen ")


def read(path: str) -> dict[str, Any]:
    """The dump at ``path`` (ValueError/OSError when it cannot be one)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for a FIFO since the scan
            raise ValueError("not a regular file")
        data = f.read(MAX_DUMP_BYTES + 1)
    if len(data) > MAX_DUMP_BYTES:
        raise ValueError(f"larger than {MAX_DUMP_BYTES // 1_000_000} MB")
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def _d(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def where(f: dict[str, Any]) -> str:
    return f"{f.get('file')}:{f.get('line')} in {f.get('function')}"


def _is_library(f: dict[str, Any]) -> bool:
    file = str(f.get("file", ""))
    return any(m in file for m in _STDLIB_MARKS) or "/freezewatch/" in file


def frame_box(label: str, f: Any, note: str = "") -> str:
    """A labelled frame: function, file:line, and its source line."""
    f = _d(f)
    if not f:
        return ""
    code = f.get("code")
    src = f'<pre class="src">{esc(code, 1000)}</pre>' if code else (
        '<pre class="src none">(source line not available)</pre>')
    extra = f' <span class="dim">{esc(note)}</span>' if note else ""
    return (f'<div class="frame"><div class="flabel">{esc(label)}</div>'
            f'<div class="fwhere"><b>{esc(f.get("function"))}</b> '
            f'<span class="path">{esc(f.get("file"))}:{esc(f.get("line"))}</span>{extra}</div>'
            f"{src}</div>")


def stack(frames: Any, mark: dict[str, Any] | None = None) -> str:
    """A stack, outermost first: library frames dimmed, ``mark`` picked out, long ones cut."""
    items = [f for f in _l(frames) if isinstance(f, dict)]
    if not items:
        return '<p class="dim">(no frames)</p>'
    cut = 0
    if len(items) > MAX_FRAMES:
        cut = len(items) - MAX_FRAMES
        items = items[:10] + items[10 + cut:]
    out = ['<ol class="stack">']
    for i, f in enumerate(items):
        if cut and i == 10:
            out.append(f'<li class="dim">\u2026 {cut} more frames \u2026</li>')
        hit = mark is not None and (f.get("file"), f.get("line")) == (
            mark.get("file"), mark.get("line"))
        cls = "hit" if hit else ("lib" if _is_library(f) else "app")
        out.append(f'<li class="{cls}"><span class="fn">{esc(f.get("function"))}</span> '
                   f'<span class="path">{esc(f.get("file"))}:{esc(f.get("line"))}</span>'
                   f"{_code(f)}</li>")
    out.append("</ol>")
    return "".join(out)


def _code(f: dict[str, Any]) -> str:
    code = f.get("code")
    return f"<code>{esc(code, 300)}</code>" if code else ""


def _party(p: Any) -> str:
    p = _d(p)
    if "task" in p:
        return f"task <b>{esc(p['task'])}</b>"
    if "thread" in p:
        return f"thread <b>{esc(p['thread'])}</b>"
    return "?"


def waits_for(doc: dict[str, Any]) -> str:
    """The wait-for chain (optional key): who waits on what, held by whom, where."""
    links = [x for x in _l(doc.get("waits_for")) if isinstance(x, dict)]
    if not links:
        return ""
    out = ['<h4>Waits for</h4>']
    if doc.get("deadlock") is True:
        out.append('<p class="deadlock">Deadlock: the chain comes back to a party already '
                   "in it.</p>")
    out.append('<ol class="chain">')
    for link in links[:MAX_LINKS]:
        on = _d(link.get("on"))
        what = " ".join(esc(on[k]) for k in ("type", "name") if on.get(k))
        ident = f' <span class="dim">{esc(on["id"])}</span>' if on.get("id") else ""
        holders = []
        for h in [h for h in _l(link.get("holders")) if isinstance(h, dict)][:MAX_LINKS]:
            frame = _d(h.get("frame"))
            at = f' at <span class="path">{esc(where(frame))}</span>{_code(frame)}' if frame else ""
            count = f" \u00d7{esc(h['count'])}" if _num(h.get("count")) not in (None, 1.0) else ""
            guess = ' <span class="dim">(inferred)</span>' if h.get("certain") is False else ""
            holders.append(f"<li>{_party(h)}{count}{guess}{at}</li>")
        if link.get("holders_unknown"):
            holders.append(f'<li class="dim">holder unknown: {esc(link["holders_unknown"])}</li>')
        held = f'<ul class="holders">{"".join(holders)}</ul>' if holders else ""
        out.append(f"<li>{_party(link.get('waiter'))} waits on <b>{what or '?'}</b>{ident}"
                   f"{' held by' if holders else ''}{held}</li>")
    out.append("</ol>")
    if len(links) > MAX_LINKS:
        out.append(f'<p class="dim">\u2026 {len(links) - MAX_LINKS} more links in the dump</p>')
    return "".join(out)


def inflight(doc: dict[str, Any]) -> str:
    units = [u for u in _l(doc.get("inflight")) if isinstance(u, dict)]
    req = _d(doc.get("request"))
    if not units and not req:
        return "<h4>In flight</h4><p class=\"dim\">nothing in flight</p>"
    out = ["<h4>In flight</h4>"]
    if req:
        rid = f", request id {esc(req['request_id'])}" if req.get("request_id") else ""
        age = _num(req.get("age"))
        out.append(f'<p>Request of the blocked task: <b>{esc(req.get("name"))}</b>'
                   f'{f" (open {dur(age)}{rid})" if age is not None else rid}</p>')
    if units:
        out.append('<table class="inflight"><tr><th>name</th><th>kind</th><th>age</th>'
                   "<th>task</th></tr>")
        for u in units[:MAX_INFLIGHT]:
            age = _num(u.get("age"))
            mine = ' class="hit"' if u.get("in_blocking_task") else ""
            detail = f'<div class="dim">{esc(u["detail"])}</div>' if u.get("detail") else ""
            out.append(f"<tr{mine}><td>{esc(u.get('name'))}{detail}</td><td>{esc(u.get('kind'))}"
                       f"</td><td>{dur(age) if age is not None else '?'}</td>"
                       f"<td>{esc(u.get('task'))}</td></tr>")
        out.append("</table>")
        if len(units) > MAX_INFLIGHT:
            out.append(f'<p class="dim">\u2026 {len(units) - MAX_INFLIGHT} more in the dump</p>')
    return "".join(out)


def tasks(doc: dict[str, Any]) -> str:
    groups = [g for g in _l(doc.get("tasks")) if isinstance(g, dict)]
    total = doc.get("task_count")
    head = f"<h4>Tasks: {esc(total) if total is not None else len(groups)} in " \
           f"{len(groups)} group{'s' if len(groups) != 1 else ''}</h4>"
    if not groups:
        return head + '<p class="dim">(none recorded in this dump)</p>'
    out = [head, '<ul class="tasks">']
    for g in groups[:MAX_TASK_GROUPS]:
        names = [str(n) for n in _l(g.get("names"))][:5]
        count = _num(g.get("count")) or 1
        more = f" (+{int(count) - len(names)} more)" if count > len(names) and names else ""
        chain = [f for f in _l(g.get("await_chain")) if isinstance(f, dict)][-MAX_CHAIN:]
        frames = "".join(f'<div class="await"><span class="path">{esc(where(f))}</span>'
                         f"{_code(f)}</div>" for f in chain)
        awaiting = (f'<div class="dim">awaiting {esc(g["awaiting"])}</div>'
                    if g.get("awaiting") else "")
        out.append(f'<li><span class="count">{int(count)}\u00d7</span> '
                   f'<span class="state">{esc(g.get("state"))}</span> '
                   f'<b>{esc(g.get("coroutine"))}</b> '
                   f'<span class="dim">{esc(", ".join(names))}{esc(more)}</span>'
                   f"{frames}{awaiting}</li>")
    out.append("</ul>")
    if len(groups) > MAX_TASK_GROUPS:
        out.append(f'<p class="dim">\u2026 {len(groups) - MAX_TASK_GROUPS} more groups in the '
                   "dump</p>")
    return "".join(out)


def _dump_times(doc: dict[str, Any]) -> str:
    at, bfor, took = (_num(doc.get(k)) for k in ("detected_at", "blocked_for", "duration"))
    text = f"detected {when(at) if at is not None else '?'}, "
    text += "open " if doc.get("kind") == "stall" else "blocked "
    text += f"{dur(bfor) if bfor is not None else '?'} when captured"
    if took is not None:
        text += f", {dur(took)} in all"
    elif doc.get("kind") == "freeze":
        text += ", <b>never ended</b> (the process stopped first)"
    return text


def detail(path: str, doc: dict[str, Any], other_app_lines: list[tuple[str, int]],
           example: str) -> str:
    """The expanded part of one signature: ``doc`` is its most recent dump, at ``path``."""
    bf, af = _d(doc.get("blocking_frame")), _d(doc.get("app_frame"))
    parts = ['<div class="frames">', frame_box("Blocked at", bf)]
    if af and (af.get("file"), af.get("line")) != (bf.get("file"), bf.get("line")):
        parts.append(frame_box("Application line that led there", af))
    elif not af:
        parts.append('<div class="frame"><div class="flabel">Application line</div>'
                     '<p class="dim">no application frame on this stack</p></div>')
    parts.append("</div>")
    if other_app_lines:
        parts.append('<p class="dim">Application lines over all its dumps: ' + ", ".join(
            f'<span class="path">{esc(w)}</span> ({n}\u00d7)' for w, n in other_app_lines)
            + "</p>")
    facts = []
    if doc.get("kind") == "stall":
        stalled = _d(doc.get("stalled"))
        facts.append(f"<dt>Stalled</dt><dd><b>{esc(stalled.get('name', '?'))}</b>, task "
                     f"{esc(stalled.get('task', '?'))}</dd>")
    if doc.get("cause"):
        why = f" \u2014 {esc(doc['kernel_summary'])}" if doc.get("kernel_summary") else ""
        facts.append(f"<dt>Cause</dt><dd><b>{esc(doc['cause'])}</b>{why}</dd>")
    if doc.get("gil_held") is True:
        facts.append(f"<dt>GIL</dt><dd>held during the freeze (captured by "
                     f"{esc(doc.get('captured_by') or 'the sentinel')})</dd>")
    if doc.get("kind") != "stall":
        facts.append(f"<dt>Task</dt><dd>{esc(doc.get('current_task') or '(a plain callback)')}"
                     "</dd>")
    facts.append(f"<dt>This dump</dt><dd>{esc(os.path.basename(path))} \u2014 "
                 f"{_dump_times(doc)}; pid {esc(doc.get('pid'))} on "
                 f"{esc(doc.get('hostname'))}</dd>")
    if example and os.path.basename(example) != os.path.basename(path):
        facts.append(f"<dt>Longest</dt><dd>{esc(os.path.basename(example))}</dd>")
    folder = os.path.dirname(os.path.abspath(path))
    facts.append(f'<dt>Directory</dt><dd class="path">{esc(folder)}</dd>')
    parts.append('<dl class="facts">' + "".join(facts) + "</dl>")
    parts.append(waits_for(doc))
    parts.append(inflight(doc))
    if doc.get("kind") == "stall":
        parts.append("<h4>Await chain of the stalled task <span class=\"dim\">(outermost first)"
                     "</span></h4>" + stack(doc.get("await_chain"), bf))
    parts.append("<h4>Loop thread stack <span class=\"dim\">(outermost first)</span></h4>"
                 + stack(_d(doc.get("loop_thread")).get("frames"), bf))
    parts.append(tasks(doc))
    return "".join(parts)
