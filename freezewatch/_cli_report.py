"""``freezewatch report``: a dump directory -> the places that cost the most time.

Every freeze and stall is grouped by the line it blocked at (the
``blocking_frame``: ``file:line in function``), and the groups are sorted by
the total time they cost. A freeze's time is its ``duration`` (written into
its dump when it ended); a freeze that never ended while watched (the
process was killed mid-freeze) counts the longest ``blocked_for`` of its
dump and its ``freeze-update`` dumps, and is marked unfinished. A stall
counts its ``blocked_for`` (how long its unit of work had been open).
``freeze-update`` dumps are later looks at a freeze already counted, so
they only extend its time.

Fast on big directories: names are filtered by pattern (and by the time in
the name for --since) before any file is read, and each file is read once.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
import math
import multiprocessing
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ._cli_errors import EXIT_USAGE, CliError
from ._dumpread import parse_dump, read_dump_bytes
from ._redact import escape

NAME = re.compile(r"^(freeze|stall)-(\d{8}T\d{6})Z?-\d+-\d+\.json$")
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_APP_LINES = 3


def parse_since(text: str, now: float | None = None) -> float:
    """``2h``/``30m``/``7d``/``90s``/``1w`` ago, or an ISO 8601 date/time (UTC if naive)."""
    now = time.time() if now is None else now
    m = _AGE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2).lower()]
    iso = text.strip()
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        when = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise CliError(
            f"--since: expected an age like 2h, 30m, 7d or an ISO date like 2025-01-31 "
            f"or 2025-01-31T08:00, got {text!r}", EXIT_USAGE) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


@dataclasses.dataclass
class Group:
    """One place (kind + blocking frame) and what it cost."""

    kind: str
    file: str
    line: int
    function: str
    code: str | None
    count: int = 0
    total: float = 0.0
    longest: float = 0.0
    unfinished: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    example: str = ""
    app_lines: Counter[str] = dataclasses.field(default_factory=Counter)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"

    def add(self, seconds: float, at: float, path: str, unfinished: bool, app: str | None) -> None:
        self.count += 1
        self.total += seconds
        if seconds >= self.longest or not self.example:
            self.longest, self.example = max(seconds, self.longest), path
        self.unfinished += unfinished
        self.first = min(self.first, at)
        self.last = max(self.last, at)
        if app and app != self.where:
            self.app_lines[app] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "where": self.where, "file": self.file, "line": self.line,
            "function": self.function, "code": self.code, "count": self.count,
            "total_seconds": round(self.total, 3), "longest_seconds": round(self.longest, 3),
            "unfinished": self.unfinished, "first_seen": _iso(self.first),
            "last_seen": _iso(self.last), "example": self.example,
            "app_lines": [{"where": w, "count": n} for w, n in
                          self.app_lines.most_common(MAX_APP_LINES)],
        }


@dataclasses.dataclass
class _Dump:
    """What the report needs of one dump; the document itself is not kept."""

    path: str
    kind: str
    detected_at: float
    blocked_for: float
    duration: float | None
    frame: tuple[str, int, str]
    code: str | None
    app: str | None
    first_dump: str | None
    longest_update: float = 0.0
    lane: tuple[str, str, str] = ("?", "?", "?")  # hostname, pid, loop (the HTML timeline)
    cause: str | None = None

    @classmethod
    def of(cls, path: str, doc: dict[str, Any]) -> _Dump:
        bf = doc["blocking_frame"]
        code = bf.get("code")
        first = doc.get("first_dump")
        return cls(path, doc["kind"], float(doc["detected_at"]), float(doc["blocked_for"]),
                   _number(doc, "duration"),
                   (str(bf.get("file")), bf["line"], str(bf.get("function"))),
                   code if isinstance(code, str) else None, _frame_where(doc.get("app_frame")),
                   first if isinstance(first, str) else None, lane=_lane(doc),
                   cause=doc["cause"] if isinstance(doc.get("cause"), str) else None)


@dataclasses.dataclass
class Result:
    directory: str
    since: float | None
    files: int = 0
    read: int = 0
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    groups: list[Group] = dataclasses.field(default_factory=list)

    @property
    def freezes(self) -> int:
        return sum(g.count for g in self.groups if g.kind == "freeze")

    @property
    def stalls(self) -> int:
        return sum(g.count for g in self.groups if g.kind == "stall")

    @property
    def total(self) -> float:
        return sum(g.total for g in self.groups)

    def to_json(self, top: int | None = None) -> dict[str, Any]:
        groups = self.groups if not top else self.groups[:top]
        return {
            "directory": self.directory, "since": _iso(self.since) if self.since else None,
            "dumps_read": self.read, "skipped": [{"file": f, "error": e} for f, e in self.skipped],
            "freezes": self.freezes, "stalls": self.stalls,
            "total_seconds": round(self.total, 3), "places": len(self.groups),
            "groups": [g.to_json() for g in groups],
        }

    def table(self, top: int = 20) -> str:
        """The report for a person; every text from a dump escaped (``_redact.escape``)."""
        since = f" since {_when(self.since)}" if self.since else ""
        if not self.groups:
            return (f"{escape(self.directory)}: no freezes or stalls{since} "
                    f"({self.read} dumps read)\n")
        first = min(g.first for g in self.groups)
        last = max(g.last for g in self.groups)
        lines = [
            f"{escape(self.directory)}: {self.freezes} freeze(s) and {self.stalls} stall(s) at "
            f"{len(self.groups)} place(s){since}, {_dur(self.total)} in all, "
            f"{_when(first)} .. {_when(last)}",
            "",
            f"{'#':>3}  {'TOTAL':>8}  {'COUNT':>5}  {'LONGEST':>8}  {'KIND':<6}  WHERE",
        ]
        shown = self.groups if not top else self.groups[:top]
        for i, g in enumerate(shown, 1):
            mark = "+" if g.unfinished else " "
            lines.append(f"{i:>3}  {_dur(g.total):>8}{mark} {g.count:>5}  "
                         f"{_dur(g.longest):>8}{mark} {g.kind:<6}  {escape(g.where)}")
            pad = " " * 5
            if g.code:
                lines.append(f"{pad}    {escape(g.code)}")
            for where, n in g.app_lines.most_common(MAX_APP_LINES):
                lines.append(f"{pad}app line: {escape(where)} ({n}x)")
            lines.append(f"{pad}first {_when(g.first)}, last {_when(g.last)}; "
                         f"e.g. {escape(g.example)}")
        if len(shown) < len(self.groups):
            lines.append(f"... {len(self.groups) - len(shown)} more place(s) (--top 0 shows all)")
        if any(g.unfinished for g in shown):
            lines.append("+ at least: some of these freezes had not ended when their "
                         "process stopped")
        return "\n".join(lines) + "\n"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # inf, nan, year 10000
        return None


def _when(ts: float | None) -> str:
    iso = _iso(ts)
    return iso.replace("T", " ").replace("Z", " UTC") if iso else "?"


def _dur(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _number(doc: dict[str, Any], key: str) -> float | None:
    v = doc.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _lane(doc: dict[str, Any]) -> tuple[str, str, str]:
    loop = doc.get("loop")
    name = loop.get("name") if isinstance(loop, dict) else None
    return str(doc.get("hostname", "?")), str(doc.get("pid", "?")), str(name or "?")


def _frame_where(f: Any) -> str | None:
    if not isinstance(f, dict):
        return None
    return f"{f.get('file')}:{f.get('line')} in {f.get('function')}"


def _check(doc: Any) -> str | None:
    """Why ``doc`` cannot be counted, or None."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("kind") not in ("freeze", "stall", "freeze-update"):
        return f"unknown kind {doc.get('kind')!r}"
    bf = doc.get("blocking_frame")
    if not isinstance(bf, dict) or not isinstance(bf.get("line"), int):
        return "no blocking_frame"
    if _number(doc, "detected_at") is None or _number(doc, "blocked_for") is None:
        return "no detected_at/blocked_for"
    return None


Counted = Callable[[Group, _Dump, float, bool], None]
PARALLEL_AT = 2000
"""Dumps from which a scan parses them in several processes: JSON parsing is most of
its time (10,000 dumps of 33 kB: 2.6 s of 5 s in ``json.loads``)."""


def _load(directory: str, name: str) -> _Dump | tuple[str, bool]:
    """One dump's few fields, or why it is skipped (and whether it was unreadable)."""
    path = os.path.join(directory, name)
    try:
        doc = parse_dump(read_dump_bytes(path))  # no FIFO hangs it, no nesting breaks it
    except (OSError, ValueError) as e:
        return getattr(e, "strerror", None) or str(e), True
    why = _check(doc)
    if why is None:
        try:
            return _Dump.of(path, doc)  # the document itself is freed here
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            why = f"malformed ({type(e).__name__}: {e})"
    return why, False


def _load_chunk(directory: str, names: list[str]) -> list[_Dump | tuple[str, bool]]:
    return [_load(directory, n) for n in names]


def _load_all(directory: str, names: list[str]) -> list[_Dump | tuple[str, bool]]:
    """Every dump loaded, in order. A big directory is parsed by forked processes,
    one per CPU (4 at most): only where nothing else runs in this process (the CLI),
    since a fork beside other threads can copy a held lock; else, or if forking
    fails, here."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    procs = min(4, cpus)
    if (len(names) >= PARALLEL_AT and procs > 1 and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods()):
        size = -(-len(names) // (procs * 4))
        chunks = [names[i:i + size] for i in range(0, len(names), size)]
        try:
            with ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("fork")) as ex:
                return [d for part in ex.map(_load_chunk, [directory] * len(chunks), chunks)
                        for d in part]
        except (OSError, BrokenProcessPool):
            pass  # no processes to be had: the same work, here
    return _load_chunk(directory, names)


def scan(directory: str, since: float | None, warn: Callable[[str], None],
         counted: Counted | None = None) -> Result:
    """Read every dump in ``directory`` (detected since ``since``) into sorted groups.

    ``counted(group, dump, seconds, unfinished)`` is told of each freeze and
    stall as it is counted (the HTML report draws its timeline from these).
    """
    try:
        names = [e.name for e in os.scandir(directory) if NAME.match(e.name)]
    except FileNotFoundError:
        raise CliError(f"no such directory: {directory}") from None
    except NotADirectoryError:
        raise CliError(f"not a directory: {directory} (for one dump: freezewatch show)") from None
    except OSError as e:
        raise CliError(f"cannot read {directory}: {e.strerror or e}") from None
    if not names:
        raise CliError(f"no freezewatch dumps (freeze-*.json, stall-*.json) in {directory}")
    result = Result(directory, since, files=len(names))
    cutoff = None if since is None else since - 1.0  # names carry whole seconds
    wanted = []
    for name in sorted(names):
        if cutoff is not None:
            stamp = NAME.match(name).group(2)  # type: ignore[union-attr]
            if calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S")) < cutoff:
                continue  # older than --since: not even opened
        wanted.append(name)
    freezes: dict[str, _Dump] = {}
    updates: dict[str, list[_Dump]] = {}
    stalls: list[_Dump] = []
    for name, dump in zip(wanted, _load_all(directory, wanted), strict=True):
        if isinstance(dump, tuple):
            why, unreadable = dump
            path = os.path.join(directory, name)
            result.skipped.append((name, f"unreadable: {why}" if unreadable else why))
            warn(f"skipped {path}: not a readable JSON dump ({why})" if unreadable
                 else f"skipped {path}: {why}")
            continue
        result.read += 1
        if since is not None and dump.detected_at < since:
            continue
        if dump.kind == "freeze":
            freezes[name] = dump
        elif dump.kind == "stall":
            stalls.append(dump)
        else:
            updates.setdefault(dump.first_dump or name, []).append(dump)
    by_key: dict[tuple[str, str, int, str], Group] = {}

    def add(kind: str, d: _Dump, seconds: float, unfinished: bool) -> None:
        key = (kind, *d.frame)
        g = by_key.get(key)
        if g is None:
            g = by_key[key] = Group(kind, *d.frame, code=d.code)
        g.add(seconds, d.detected_at, d.path, unfinished, d.app)
        if counted is not None:
            counted(g, d, seconds, unfinished)

    for first, chain in updates.items():
        longest = max(d.blocked_for for d in chain)
        if first in freezes:
            fr = freezes[first]
            fr.longest_update = max(fr.longest_update, longest)
        else:
            # Its first dump is gone (retention, --since): the chain is the freeze.
            add("freeze", min(chain, key=lambda d: d.detected_at), longest, True)
    for fr in freezes.values():
        if fr.duration is not None:
            add("freeze", fr, fr.duration, False)
        else:
            add("freeze", fr, max(fr.blocked_for, fr.longest_update), True)
    for st in stalls:
        add("stall", st, st.duration if st.duration is not None else st.blocked_for, False)
    result.groups = sorted(by_key.values(), key=lambda g: (-g.total, -g.count, g.where))
    if not result.read and result.skipped:
        raise CliError(f"no readable dumps in {directory} ({len(result.skipped)} skipped)")
    return result
