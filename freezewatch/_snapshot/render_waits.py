"""The wait-for graph in the .txt report: the ``Cause:`` headline and ``Waits for:``.

Renders from the dump document (``waits_for``, ``deadlock``), like render.py,
so a dump file renders the same later. Names of threads, tasks and requests
come from the application: control characters are escaped here.
"""

from __future__ import annotations

import os
from typing import Any

_VERBS = {
    "acquire": "held by", "set": "to be set by", "notify": "to be notified by",
    "get": "to be fed by", "put": "to be drained by", "join": "waited on by",
    "future": "to be completed by", "result": "run by", "task": "run by",
    "children": "still running:", "worker": "run by",
}


def _clean(text: Any) -> str:
    """``text`` with control characters escaped (``\\x1b``), safe for a terminal."""
    s = str(text)
    if all(" " <= c != "\x7f" for c in s):
        return s
    return "".join(c if " " <= c != "\x7f" else f"\\x{ord(c):02x}" for c in s)


def _who(party: dict[str, Any]) -> str:
    if "thread" in party:
        return f"thread {_clean(party['thread'])!r}"
    return f"task {_clean(party.get('task'))!r}"


def _prim(on: dict[str, Any]) -> str:
    name = on.get("name")
    return f"{on.get('type')} {_clean(name)}" if name else str(on.get("type"))


def _at(frame: Any, short: bool = True) -> str:
    if not isinstance(frame, dict):
        return ""
    path = str(frame.get("file"))
    return (f"{_clean(os.path.basename(path) if short else path)}:{frame.get('line')} "
            f"in {_clean(frame.get('function'))}")


def _verb(link: dict[str, Any]) -> str:
    on = link.get("on") or {}
    if on.get("type") == "executor" and on.get("state"):
        return "queued behind"
    return _VERBS.get(str(on.get("mode")), "held by")


def _root(h: dict[str, Any]) -> str:
    parts = []
    if h.get("frame"):
        parts.append(f", at {_at(h['frame'])}")
    extra = []
    if h.get("kernel"):
        extra.append(_clean(h["kernel"]))
    if isinstance(h.get("waiting"), (int, float)):
        extra.append(f"waiting \u2265 {h['waiting']:g} s")
    extra += [_clean(u) for u in h.get("inflight") or []]
    if extra:
        parts.append(f" ({'; '.join(extra)})")
    return "".join(parts)


def _holders(link: dict[str, Any]) -> str:
    hs = link.get("holders") or []
    if not hs:
        return f"(holder unknown: {_clean(link.get('holders_unknown'))})"
    first = hs[0]
    text = _who(first)
    n = sum(int(h.get("count", 1)) for h in hs)
    if n > 1:
        text += f" and {n - 1} more"
    return text


def cause_line(doc: dict[str, Any]) -> str | None:
    """``lock wait — threading.Lock Breaker._lock held by thread 'probe', at h.py:31 in check
    (blocked in recvfrom(fd 7) — TCP …)``; None when the dump has no ``waits_for``."""
    links = doc.get("waits_for")
    if not isinstance(links, list) or not links or not isinstance(links[0], dict):
        return None
    hops = []
    for link in links:
        on = link.get("on") or {}
        hops.append(f"{_prim(on)} {_verb(link)} {_holders(link)}")
    chain = ", which waits for ".join(hops)
    if doc.get("deadlock"):
        last = (links[-1].get("holders") or [{}])[0]
        if len(links) == 1 and last.get("note") and "this loop" in str(last["note"]):
            first = links[0]
            frame = (first.get("waiter") or {}).get("frame")
            at = f", at {_at(frame)}" if frame else ""
            return (f"DEADLOCK \u2014 the loop thread waits for a future that only this loop "
                    f"can complete ({_prim(first.get('on') or {})}{at})")
        return f"DEADLOCK \u2014 {_who(links[0].get('waiter') or {})} waits for {chain}"
    last = (links[-1].get("holders") or [None])[0]
    root = _root(last) if isinstance(last, dict) else ""
    if doc.get("kind") == "stall":
        word = "stall"
    else:
        t = str((links[0].get("on") or {}).get("type"))
        word = "lock wait" if any(k in t for k in ("Lock", "Semaphore", "Condition")) else str(
            doc.get("cause") or "wait")
    return f"{word} \u2014 {chain}{root}"


def section(doc: dict[str, Any]) -> list[str]:
    """The ``Waits for:`` section: one paragraph per hop, every holder with its line."""
    links = doc.get("waits_for")
    if not isinstance(links, list) or not links:
        return []
    lines = ["Waits for (the blocked party first; a holder that waits is the next hop):"]
    for i, link in enumerate(links, 1):
        if not isinstance(link, dict):
            continue
        waiter, on = link.get("waiter") or {}, link.get("on") or {}
        where = f" at {_at(waiter.get('frame'), short=False)}" if waiter.get("frame") else ""
        state = f", {_clean(on['state'])}" if on.get("state") else ""
        lines.append(f"  {i}. {_who(waiter)}{where}")
        lines.append(f"     waits for {_prim(on)} ({on.get('id')}{state})")
        hs = link.get("holders") or []
        if not hs:
            lines.append(f"     holder unknown: {_clean(link.get('holders_unknown'))}")
        for h in hs:
            count = f" x{h['count']} ({', '.join(map(_clean, h.get('names') or []))})" if (
                h.get("count", 1) > 1) else ""
            how = "" if h.get("certain", True) else " [inferred]"
            why = f" \u2014 {_clean(h['why'])}" if h.get("why") else ""
            lines.append(f"     {_verb(link)} {_who(h)}{count}{how}{why}")
            if h.get("frame"):
                lines.append(f"       now at {_at(h['frame'], short=False)}")
                if h["frame"].get("code"):
                    lines.append(f"         {_clean(h['frame']['code'])}")
            for key in ("note", "kernel"):
                if h.get(key):
                    lines.append(f"       {key}: {_clean(h[key])}")
            for u in h.get("inflight") or []:
                lines.append(f"       in flight: {_clean(u)}")
    if doc.get("deadlock"):
        lines.append("  DEADLOCK: the chain comes back to a party already in it")
    lines.append("")
    return lines
