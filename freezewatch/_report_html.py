"""``freezewatch report DIR --html OUT.html``: the report as one self-contained page.

The same scan and grouping as the text report (``_cli_report.scan``); this
module only draws it: a headline, a timeline (``_html_timeline``), the
signatures ranked by time lost, each expandable to the detail of its most
recent dump (``_html_detail``). One file: inline CSS and SVG, no script at
all (``<details>`` expands, ``<title>`` is the tooltip), and a
Content-Security-Policy that forbids scripts and every network request, so
the page can be mailed or attached to a ticket and opened offline. Every
string from a dump is escaped by ``_html_text.esc``.

Bounded for big directories: the timeline merges marks past its limit, at
most MAX_SIGNATURES signatures are listed (the rest are summed in one row),
one dump per listed signature is read again, and each detail is capped.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections import Counter
from typing import TYPE_CHECKING

from . import _html_detail as detail
from . import _html_timeline as timeline
from ._html_css import CSS
from ._html_text import cause_of, dur, esc, pill, plural, short_when, when
from ._version import __version__

if TYPE_CHECKING:
    from ._cli_report import Group, Result, _Dump

MAX_SIGNATURES = 100


class Collector:
    """Told of every freeze and stall as ``scan`` counts it (its ``counted`` hook)."""

    def __init__(self) -> None:
        self.marks: list[tuple[Group, tuple[str, str, str], float, float, str, bool]] = []
        self.latest: dict[int, _Dump] = {}  # id(group) -> its most recent dump
        self.causes: dict[int, Counter[str]] = {}

    def __call__(self, group: Group, dump: _Dump, seconds: float, unfinished: bool) -> None:
        cause = cause_of(group.kind, dump.cause)
        # A freeze began when the loop stopped answering, blocked_for before it was seen.
        start = dump.detected_at - max(dump.blocked_for, 0.0)
        self.marks.append((group, dump.lane, start, max(seconds, 0.0), cause, unfinished))
        key = id(group)
        latest = self.latest.get(key)
        if latest is None or dump.detected_at >= latest.detected_at:
            self.latest[key] = dump
        self.causes.setdefault(key, Counter())[cause] += 1


def write(path: str, result: Result, seen: Collector, top: int | None = None) -> int:
    """Write the page for ``result`` to ``path`` atomically; returns its size in bytes."""
    page = render(result, seen, top).encode("utf-8")
    where = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".freezewatch-report-", suffix=".tmp", dir=where)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(page)
        os.chmod(tmp, 0o644)  # a page to share, unlike the 0600 dumps
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return len(page)


def render(result: Result, seen: Collector, top: int | None = None) -> str:
    limit = min(top, MAX_SIGNATURES) if top else MAX_SIGNATURES
    groups = result.groups
    rank = {id(g): i for i, g in enumerate(groups, 1)}
    marks = [timeline.Mark(lane, start, secs, cause, unf, g.kind, rank[id(g)])
             for g, lane, start, secs, cause, unf in seen.marks]
    labels = {rank[id(g)]: f"{g.function} \u2014 {g.file}:{g.line}" for g in groups}
    tl = timeline.build(marks, labels)
    same_day = bool(marks) and when(tl.start, "%Y%m%d") == when(tl.end, "%Y%m%d")
    body = [_headline(result, seen, tl),
            '<section><h2>Timeline</h2>'
            '<p class="hint">One lane per process and event loop. Each mark is a freeze or a '
            "stall, placed when it began, as long as it lasted (at least a few pixels wide) and "
            "taller the longer it was; hover for details.</p>",
            timeline.legend(tl.causes, tl.unfinished), tl.svg,
            "".join(f'<p class="note">{esc(n, 1000)}</p>' for n in tl.notes), "</section>",
            _ranking(result, seen, groups[:limit], same_day), _skipped(result)]
    title = f"freezewatch report \u2014 {os.path.abspath(result.directory)}"
    return PAGE.format(title=esc(title), css=CSS, body="\n".join(body),
                       footer=esc(f"freezewatch {__version__} \u00b7 generated "
                                  f"{when(datetime.datetime.now().timestamp())} from "
                                  f"{result.read:,} dumps"))


def _headline(result: Result, seen: Collector, tl: timeline.Timeline) -> str:
    lanes = {lane for _, lane, *_ in seen.marks}
    processes = {(host, pid) for host, pid, _ in lanes}
    hosts = {host for host, _, _ in lanes}
    unfinished = sum(g.unfinished for g in result.groups)
    if tl.causes:  # something was drawn: the period is what the timeline shows
        period = (f"{when(tl.start)} \u2013 {when(tl.end)}" if when(tl.start, "%Y%m%d") !=
                  when(tl.end, "%Y%m%d") else
                  f"{when(tl.start, '%Y-%m-%d %H:%M:%S')} \u2013 {when(tl.end)}")
        span = dur(max(tl.end - tl.start, 0.0))
    else:
        period, span = ("no freezes or stalls" if not seen.marks else "no plausible times"), ""
    since = f" (dumps since {when(result.since)})" if result.since else ""
    span = f" \u00b7 {span}" if span else ""
    cards = [
        ("Freezes", f"{result.freezes:,}",
         f"{unfinished:,} unfinished" if unfinished else "all ended"),
        ("Stalls", f"{result.stalls:,}", "awaits stuck, loop alive"),
        ("Time lost", dur(result.total), "loops frozen or work stuck"),
        ("Processes", f"{len(processes):,}",
         plural(len(lanes), "loop") + (f" on {plural(len(hosts), 'host')}"
                                       if len(hosts) > 1 else "")),
        ("Signatures", f"{len(result.groups):,}", "places they blocked at"),
    ]
    html = [f'<header><div class="brand">freezewatch report</div>'
            f'<h1>{esc(os.path.abspath(result.directory))}</h1>'
            f'<p class="period">{esc(period + span + since)}</p>'
            "</header>", '<section class="cards">']
    for label, value, sub in cards:
        html.append(f'<div class="card"><div class="label">{label}</div>'
                    f'<div class="value">{value}</div><div class="sub">{esc(sub)}</div></div>')
    html.append("</section>")
    return "".join(html)


def _ranking(result: Result, seen: Collector, groups: list[Group], same_day: bool) -> str:
    total = result.total or 1.0
    out = ['<section><h2>Where the time went</h2>'
           '<p class="hint">Freezes and stalls grouped by the line they blocked at, the '
           "costliest first. Click a row for its most recent dump: the lines, the cause, what "
           "was in flight, the stack and the tasks.</p>",
           '<div class="ranking"><div class="row head"><span>#</span><span>signature</span>'
           '<span>cause</span><span class="n">count</span><span class="n">total</span>'
           '<span class="n">longest</span><span>first seen</span><span>last seen</span>'
           "<span>share</span></div>"]
    for i, g in enumerate(groups, 1):
        causes = seen.causes.get(id(g), Counter())
        main = causes.most_common(1)[0][0] if causes else g.kind
        others = len(causes) - 1
        share = g.total / total * 100
        plus = '<span class="plus" title="at least: some had not ended">+</span>' \
            if g.unfinished else ""
        code = f'<code class="code">{esc(g.code, 200)}</code>' if g.code else ""
        via = _via(g)
        row = (f'<summary class="row"><span class="rank">{i}</span>'
               f'<span class="sig"><b>{esc(g.function, 120)}</b> '
               f'<span class="path" title="{esc(g.file, 1000)}">{esc(_short(g.file), 200)}:'
               f"{g.line}</span>{code}{via}</span>"
               f'<span>{pill(main)}{f"<small> +{others}</small>" if others > 0 else ""}'
               f'{"<small> stall</small>" if g.kind == "stall" and main != "stall" else ""}'
               f'</span><span class="n">{g.count:,}</span>'
               f'<span class="n">{dur(g.total)}{plus}</span>'
               f'<span class="n">{dur(g.longest)}{plus}</span>'
               f'<span title="{esc(when(g.first))}">{esc(short_when(g.first, same_day))}</span>'
               f'<span title="{esc(when(g.last))}">{esc(short_when(g.last, same_day))}</span>'
               f'<span class="share"><span class="bar"><i style="width:{share:.1f}%"></i>'
               f"</span>{share:.0f}%</span></summary>")
        out.append(f'<details class="sig-row" id="sig-{i}" data-total="{g.total:.3f}">{row}'
                   f'<div class="detail">{_detail(g, seen)}</div></details>')
    if not groups:
        out.append('<div class="row more"><span></span><span>No freezes or stalls'
                   f"{' since ' + when(result.since) if result.since else ''}.</span></div>")
    rest = result.groups[len(groups):]
    if rest:
        lost = sum(g.total for g in rest)
        what = plural(sum(g.count for g in rest), "freeze or stall", "freezes and stalls")
        out.append(f'<div class="row more"><span></span><span>'
                   f"{plural(len(rest), 'more signature')}: {what}, {dur(lost)} in all (only the "
                   f"costliest {len(groups)} are listed here; <code>freezewatch report --json"
                   "</code> has every one)</span></div>")
    out.append("</div></section>")
    return "".join(out)


def _via(g: Group) -> str:
    """``from fetch_users  list_users_hang.py:40``: the application line that led there most."""
    app = g.app_lines.most_common(1)
    if not app:
        return ""
    place, _, function = app[0][0].rpartition(" in ")
    return (f'<span class="via" title="{esc(app[0][0], 1000)}">from <b>{esc(function, 120)}</b> '
            f'<span class="path">{esc(os.path.basename(place), 200)}</span></span>')


def _short(path: str, keep: int = 2) -> str:
    """A long path as its last ``keep`` parts (the full one is in the title and the detail)."""
    if len(path) <= 32:
        return path
    parts = path.split("/")
    return "\u2026/" + "/".join(parts[-keep:]) if len(parts) > keep else path


def _detail(g: Group, seen: Collector) -> str:
    latest = seen.latest.get(id(g))
    if latest is None:
        return '<p class="dim">no dump</p>'
    try:
        doc = detail.read(latest.path)
    except (OSError, ValueError) as e:
        return (f'<p class="note">Could not read its most recent dump '
                f"{esc(os.path.basename(latest.path))}: {esc(e)}</p>")
    try:
        apps = [(w, n) for w, n in g.app_lines.most_common(5)]
        return detail.detail(latest.path, doc, apps if len(apps) > 1 else [], g.example)
    except Exception as e:  # boundary: one odd dump costs its own detail, not the page
        return (f'<p class="note">Could not show {esc(os.path.basename(latest.path))}: '
                f"{esc(type(e).__name__)}: {esc(e)}</p>")


def _skipped(result: Result) -> str:
    if not result.skipped:
        return ""
    items = "".join(f"<li><span class=\"path\">{esc(name)}</span>: {esc(why)}</li>"
                    for name, why in result.skipped[:50])
    more = (f"<li>\u2026 {len(result.skipped) - 50:,} more</li>"
            if len(result.skipped) > 50 else "")
    return (f'<section><h2>Skipped files</h2><p class="hint">'
            f"{plural(len(result.skipped), 'file')} in the directory could not be read as "
            f"dumps and are not counted above.</p><ul class=\"skipped\">{items}{more}</ul>"
            "</section>")


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="freezewatch">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
</main>
<footer>{footer}</footer>
</body>
</html>
"""
