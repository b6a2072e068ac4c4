"""The HTML report's timeline: one lane per process and loop, one mark per freeze or stall.

Plain inline SVG, no script: each mark is a ``<rect>`` placed at the time
the loop stopped answering (or the unit of work opened), as long as it
lasted on the time axis (at least a few pixels, so a 0.3 s freeze in a week
stays visible) and as tall as its duration's share of the longest (on a log
scale), coloured by cause. A mark of a freeze that never ended is striped.
Its ``<title>`` is the tooltip.

Bounded: past MAX_MARKS, marks of one lane that fall within one slice of
the axis are merged into one (its tooltip counts them), the slice doubling
until the page is small again; past MAX_LANES, the lanes that lost the
least time share one. The page says when either happened.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

from ._html_text import CAUSE_COLOURS, dur, esc, plural, utc, when

MAX_MARKS = 3000
MAX_LANES = 40
PLAUSIBLE = (946684800.0, 4102444800.0)  # 2000-01-01 .. 2100-01-01: a clock, not garbage

WIDTH = 1120
LABEL_W = 200
RIGHT = 16
AXIS_H = 28
LANE_H = 30
PLOT_W = WIDTH - LABEL_W - RIGHT
MIN_MARK_W = 3.0
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
          43200, 86400, 172800, 604800)


@dataclasses.dataclass
class Mark:
    """One freeze or stall (or, merged, several in one lane and slice of time)."""

    lane: tuple[str, str, str]
    start: float
    seconds: float
    cause: str
    unfinished: bool
    kind: str
    rank: int  # the signature's place in the ranking, 1-based
    count: int = 1
    causes: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds, when merged

    @property
    def end(self) -> float:
        return self.start + self.seconds


@dataclasses.dataclass
class Timeline:
    svg: str
    notes: list[str]
    causes: list[str]  # the causes drawn, in legend order
    unfinished: bool
    start: float
    end: float


def build(marks: Sequence[Mark], labels: dict[int, str]) -> Timeline:
    """The SVG for ``marks``; ``labels[rank]`` names each signature in the tooltips."""
    notes: list[str] = []
    shown = [m for m in marks if PLAUSIBLE[0] <= m.start <= PLAUSIBLE[1]]
    if len(shown) < len(marks):
        notes.append(f"{plural(len(marks) - len(shown), 'dump')} with an implausible time "
                     "(before 2000 or after 2100): counted below, not drawn.")
    if not shown:
        return Timeline('<p class="empty">No freezes or stalls in this period.</p>', notes, [],
                        False, 0.0, 0.0)
    t0 = min(m.start for m in shown)
    t1 = max(min(m.end, PLAUSIBLE[1]) for m in shown)
    pad = max((t1 - t0) * 0.02, 0.5)
    lo, hi = t0 - pad, t1 + pad
    scale = PLOT_W / (hi - lo)
    lanes, lane_note = _lanes(shown)
    if lane_note:
        notes.append(lane_note)
    drawn = list(shown)
    slice_px = 0.0
    while len(drawn) > MAX_MARKS:
        slice_px = slice_px * 2 or 4.0
        drawn = _merge(shown, lanes, lo, scale, slice_px)
    if slice_px:
        notes.append(f"{plural(len(shown), 'freeze or stall', 'freezes and stalls')} are drawn "
                     f"as {len(drawn):,} marks: those of one lane that began in the same "
                     f"{dur(slice_px / scale)} slice of time share a mark (hover for counts).")
    longest = max(_lost(m) for m in drawn) or 1.0
    height = AXIS_H + LANE_H * len(set(lanes.values())) + 6
    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" role="img" '
           f'aria-label="timeline of freezes and stalls" xmlns="http://www.w3.org/2000/svg">',
           _patterns(), _axis(lo, hi, scale, height)]
    out.extend(_lane_rows(lanes))
    for m in sorted(drawn, key=lambda m: -m.seconds):  # short ones on top of long ones
        out.append(_mark(m, lanes[m.lane], lo, scale, longest, labels))
    out.append("</svg>")
    causes = [c for c in CAUSE_COLOURS if any(m.cause == c for m in shown)]
    return Timeline("\n".join(out), notes, causes, any(m.unfinished for m in shown), t0, t1)


def _lanes(marks: Sequence[Mark]) -> tuple[dict[tuple[str, str, str], int], str]:
    """Lane index per (hostname, pid, loop): ordered by host, then first seen."""
    first: dict[tuple[str, str, str], float] = {}
    lost: Counter[tuple[str, str, str]] = Counter()
    for m in marks:
        first[m.lane] = min(first.get(m.lane, m.start), m.start)
        lost[m.lane] += m.seconds  # type: ignore[assignment]
    keys = sorted(first, key=lambda k: (k[0], first[k]))
    note = ""
    if len(keys) > MAX_LANES:
        keep = {k for k, _ in lost.most_common(MAX_LANES - 1)}
        rest = [k for k in keys if k not in keep]
        note = (f"{len(keys):,} processes and loops: the {len(rest):,} that lost the least "
                "time share the last lane.")
        keys = [k for k in keys if k in keep] + rest
    index = {k: min(i, MAX_LANES - 1) for i, k in enumerate(keys)}
    return index, note


def _merge(marks: Sequence[Mark], lanes: dict[tuple[str, str, str], int], lo: float,
           scale: float, slice_px: float) -> list[Mark]:
    merged: dict[tuple[int, int], Mark] = {}
    longest: dict[tuple[int, int], float] = {}
    for m in marks:
        key = (lanes[m.lane], int((m.start - lo) * scale / slice_px))
        g = merged.get(key)
        if g is None:
            merged[key] = Mark(m.lane, m.start, m.seconds, m.cause, m.unfinished, m.kind,
                               m.rank, 1, {m.cause: m.seconds})
            longest[key] = m.seconds
            continue
        end = max(g.end, m.end)
        g.start = min(g.start, m.start)
        g.seconds = end - g.start
        g.count += 1
        g.unfinished |= m.unfinished
        g.causes[m.cause] = g.causes.get(m.cause, 0.0) + m.seconds
        if m.seconds > longest[key]:  # the tooltip names the signature of the longest
            g.rank, longest[key] = m.rank, m.seconds
    for g in merged.values():
        g.cause = max(g.causes.items(), key=lambda kv: kv[1])[0]
    return list(merged.values())


def _patterns() -> str:
    """A striped fill per cause, for freezes that had not ended when their process stopped."""
    defs = ["<defs>"]
    for i, colour in enumerate(CAUSE_COLOURS.values()):
        defs.append(f'<pattern id="unf-{i}" width="5" height="5" patternUnits="userSpaceOnUse" '
                    f'patternTransform="rotate(45)"><rect width="5" height="5" '
                    f'fill="{colour}" fill-opacity="0.25"/><rect width="2.2" height="5" '
                    f'fill="{colour}"/></pattern>')
    defs.append("</defs>")
    return "".join(defs)


def _step(span: float) -> float:
    for s in _STEPS:
        if span / s <= 8:
            return float(s)
    return float(_STEPS[-1] * math.ceil(span / _STEPS[-1] / 8))


def _axis(lo: float, hi: float, scale: float, height: float) -> str:
    step = _step(hi - lo)
    first, last = utc(lo), utc(hi)
    days = first is None or last is None or first.date() != last.date()
    fmt = "%b %d %H:%M" if days else ("%H:%M" if step >= 60 else "%H:%M:%S")
    parts = []
    t = math.ceil(lo / step) * step
    while t <= hi:
        x = LABEL_W + (t - lo) * scale
        if x > WIDTH - 34:  # its label would be cut at the edge
            break
        parts.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_H - 6}" '
                     f'y2="{height - 4}"/><text class="tick" x="{x:.1f}" y="{AXIS_H - 10}">'
                     f"{esc(when(t, fmt))}</text>")
        t += step
    return "".join(parts)


def _lane_rows(lanes: dict[tuple[str, str, str], int]) -> list[str]:
    by_index: dict[int, list[tuple[str, str, str]]] = {}
    for k, i in lanes.items():
        by_index.setdefault(i, []).append(k)
    hosts = {k[0] for k in lanes}
    rows = []
    for i in sorted(by_index):
        keys = by_index[i]
        y = AXIS_H + i * LANE_H
        if len(keys) > 1:
            label, full = f"{len(keys):,} more loops", ", ".join(_label(k, True) for k in keys[:50])
        else:
            label = full = _label(keys[0], len(hosts) > 1)
        stripe = ' class="lane odd"' if i % 2 else ' class="lane"'
        rows.append(f'<rect{stripe} x="0" y="{y}" width="{WIDTH}" height="{LANE_H}"/>'
                    f'<text class="lane-label" x="10" y="{y + LANE_H / 2 + 4:.1f}">'
                    f"<title>{esc(full, 4000)}</title>{esc(label, 34)}</text>")
    return rows


def _label(key: tuple[str, str, str], with_host: bool) -> str:
    host, pid, loop = key
    return f"{host} \u00b7 pid {pid} \u00b7 {loop}" if with_host else f"pid {pid} \u00b7 {loop}"


def _lost(m: Mark) -> float:
    """Time lost in a mark: its duration, or the sum of those it merged (its width is their
    span, its height what they cost)."""
    return sum(m.causes.values()) if m.count > 1 else m.seconds


def _mark(m: Mark, lane: int, lo: float, scale: float, longest: float,
          labels: dict[int, str]) -> str:
    x = LABEL_W + (m.start - lo) * scale
    w = max(min(m.seconds * scale, LABEL_W + PLOT_W - x), MIN_MARK_W)
    share = math.log1p(max(_lost(m), 0.0)) / math.log1p(longest) if longest > 0 else 1.0
    h = (LANE_H - 8) * (0.35 + 0.65 * min(max(share, 0.0), 1.0))
    y = AXIS_H + lane * LANE_H + (LANE_H - h) / 2
    colour_i = list(CAUSE_COLOURS).index(m.cause) if m.cause in CAUSE_COLOURS else -1
    colour = list(CAUSE_COLOURS.values())[colour_i]
    fill = f"url(#unf-{colour_i % len(CAUSE_COLOURS)})" if m.unfinished else colour
    tip = _tooltip(m, labels)
    cls = "mark merged" if m.count > 1 else "mark"
    return (f'<rect class="{cls}" data-rank="{m.rank}" data-cause="{esc(m.cause)}" '
            f'data-kind="{esc(m.kind)}"{" data-unfinished" if m.unfinished else ""} '
            f'x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" rx="1.5" '
            f'fill="{fill}" stroke="{colour}"><title>{tip}</title></rect>')


def _tooltip(m: Mark, labels: dict[int, str]) -> str:
    where = labels.get(m.rank, "")
    if m.count > 1:
        top = sorted(m.causes.items(), key=lambda kv: -kv[1])[:3]
        causes = ", ".join(f"{c} {dur(s)}" for c, s in top)
        lines = [f"{m.count:,} freezes and stalls, {dur(_lost(m))} lost ({causes})",
                 f"{when(m.start)} \u2013 {when(m.end)}", f"longest: #{m.rank} {where}"]
    else:
        word = "stall" if m.kind == "stall" else "freeze"
        more = " (at least: unfinished)" if m.unfinished else ""
        lines = [f"{word} {dur(m.seconds)}{more}, {m.cause}", when(m.start), f"#{m.rank} {where}"]
    return "\n".join(esc(line, 1000) for line in lines)  # a newline in a <title> is a line


def legend(causes: list[str], unfinished: bool) -> str:
    items = [f'<span class="key"><i style="background:{CAUSE_COLOURS[c]}"></i>{esc(c)}</span>'
             for c in causes]
    if unfinished:
        items.append('<span class="key"><i class="unf"></i>unfinished (process stopped '
                     "mid-freeze)</span>")
    return '<div class="legend">' + "".join(items) + "</div>"
