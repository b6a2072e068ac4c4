"""The wait-for graph: from the blocked party to the root cause, as plain data.

``build()`` runs at capture time on the watchdog thread. It starts at the
blocked party (the loop thread of a freeze, the task of a stall), asks
``primitives`` what it waits on and ``holders`` who holds that, and follows a
holder that itself waits, hop by hop, up to ``MAX_DEPTH``. A holder already in
the chain closes a cycle: ``deadlock``. The last hop's holders are the root:
they get what the kernel says of a thread (``blocked in recvfrom(fd 7) — TCP
a → b``) and the requests a task has in flight (``status 200, headers
received, body not finished``).

The result is JSON-ready dicts (the contract's ``waits_for`` links); no frame,
task or primitive survives the call.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from . import primitives as P
from .cause import summary
from .cpu import native_id_of
from .frames import app_frame, frame_record
from .holders import WaitWorld
from .model import Frame, InflightUnit, WaitGraph
from .primitives import Found, Holder
from .procview import read_view

MAX_DEPTH = 8
"""Hops followed from the blocked party."""
MAX_HOLDER_GROUPS = 20
"""Holder entries kept per hop (identical holders are grouped first)."""
MAX_HOLDER_FRAMES = 8
"""Innermost frames kept per holder."""
MAX_NAMES = 5


def _records(frames: list[types.FrameType]) -> tuple[Frame, ...]:
    return tuple(frame_record(f) for f in frames[-200:])


def _party_json(party: P.Party) -> dict[str, Any]:
    return {party.kind: party.name}


def _where(frames: tuple[Frame, ...]) -> dict[str, Any] | None:
    f = app_frame(frames) or (frames[-1] if frames else None)
    return f.to_json() if f is not None else None


class _Walk:
    def __init__(self, world: WaitWorld, inflight: tuple[InflightUnit, ...],
                 age_of: Callable[[Any], float | None] | None) -> None:
        self.world = world
        self.inflight = inflight
        self.age_of = age_of
        self._waits: dict[tuple[str, int], P.Wait | None] = {}

    def wait_of(self, party: P.Party) -> P.Wait | None:
        if party.key not in self._waits:
            try:
                self._waits[party.key] = (P.thread_wait(party) if party.kind == "thread"
                                          else P.task_wait(party))
            except Exception:  # a frame or task changed under us: not a known wait
                self._waits[party.key] = None
        return self._waits[party.key]

    def holder_json(self, groups: list[tuple[Holder, int, list[str]]], root: bool
                    ) -> list[dict[str, Any]]:
        out = []
        for h, count, names in groups[:MAX_HOLDER_GROUPS]:
            frames = _records(h.party.frames)
            doc: dict[str, Any] = {**_party_json(h.party), "frame": _where(frames),
                                   "frames": [f.to_json() for f in frames[-MAX_HOLDER_FRAMES:]],
                                   "certain": h.certain}
            if count > 1:
                doc["count"] = count
                doc["names"] = names
            if h.why:
                doc["why"] = h.why
            if h.note:
                doc["note"] = h.note
            if root:
                self._root_detail(h.party, doc)
            out.append(doc)
        return out

    def _root_detail(self, party: P.Party, doc: dict[str, Any]) -> None:
        """What the root holder is doing now: the kernel's view, its requests, its age."""
        if party.kind == "thread" and party.ident is not None:
            try:
                view = read_view(native_id_of(party.ident), None, None)
                if view.ok:
                    doc["kernel"] = summary(view, "")
            except Exception:  # the kernel view is a bonus; never break the graph
                pass
        elif party.kind == "task":
            units = [u.detail or u.name for u in self.inflight
                     if u.task == party.name and u.kind == "client"]
            if units:
                doc["inflight"] = units[:5]
            if self.age_of is not None and party.task is not None:
                try:
                    age = self.age_of(party.task)
                except Exception:
                    age = None
                if age is not None:
                    doc["waiting"] = round(age, 1)

    def link(self, party: P.Party, wait: P.Wait, found: Found, root: bool) -> dict[str, Any]:
        waiter = _party_json(party)
        if wait.at is not None:
            waiter["frame"] = frame_record(wait.at).to_json()
        on: dict[str, Any] = {"type": wait.type, "name": wait.name, "id": hex(id(wait.obj)),
                              "mode": wait.mode}
        if found.state:
            on["state"] = found.state
        link: dict[str, Any] = {"waiter": waiter, "on": on,
                                "holders": self.holder_json(_group(found.holders), root)}
        if not found.holders:
            link["holders_unknown"] = found.unknown or "unknown"
        return link


def _group(holders: list[Holder]) -> list[tuple[Holder, int, list[str]]]:
    """Identical holders (same kind, same innermost frame, same reason) as one entry."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    seen: set[tuple[str, int]] = set()
    for h in holders:
        if h.party.key in seen:
            continue
        seen.add(h.party.key)
        top = h.party.frames[-1] if h.party.frames else None
        key = (h.party.kind, top.f_code if top else None, top.f_lineno if top else None,
               h.certain, h.why)
        g = groups.get(key)
        if g is None:
            groups[key] = [h, 1, [h.party.name]]
        else:
            g[1] += 1
            if len(g[2]) < MAX_NAMES:
                g[2].append(h.party.name)
    return [(h, n, names) for h, n, names in groups.values()]


def build(*, kind: str, loop: Any, loop_ident: int | None, tops: dict[int, types.FrameType],
          tasks: list[Any], current: Any, stalled_task: Any,
          inflight: tuple[InflightUnit, ...] = (),
          age_of: Callable[[Any], float | None] | None = None) -> WaitGraph | None:
    """The chain from the blocked party to its root cause; None when it waits on nothing known."""
    world = WaitWorld(loop=loop, loop_ident=loop_ident, tops=tops, tasks=tasks,
                      current=current, kind=kind)
    if kind == "stall":
        if stalled_task is None:
            return None
        party: P.Party | None = world.task(stalled_task)
    else:
        party = world.thread(loop_ident) if loop_ident is not None else None
    if party is None:
        return None
    walk = _Walk(world, inflight, age_of)
    visited = {party.key}
    hops: list[tuple[P.Party, P.Wait, Found]] = []
    deadlock = False
    for _ in range(MAX_DEPTH):
        wait = walk.wait_of(party)
        if wait is None:
            break
        found = world.find(wait, party)
        hops.append((party, wait, found))
        if found.self_loop or any(h.party.key in visited for h in found.holders):
            deadlock = True
            break
        nxt = next((h.party for h in found.holders if walk.wait_of(h.party) is not None), None)
        if nxt is None:
            break
        visited.add(nxt.key)
        party = nxt
    if not hops:
        return None
    links = tuple(walk.link(p, w, f, root=i == len(hops) - 1 and not deadlock)
                  for i, (p, w, f) in enumerate(hops))
    return WaitGraph(links, deadlock)
