"""Plain data captured during a freeze: no frame, task or loop objects survive capture.

Every sink (dump file, log, metrics, hooks) reads these frozen objects only;
``Snapshot.to_json()`` is the contract's JSON document (schema freezewatch/1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

SCHEMA = "freezewatch/1"


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    file: str
    line: int
    function: str
    code: str | None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "function": self.function, "code": self.code}

    @property
    def where(self) -> str:
        """``file:line in function``: the signature used in logs and reports."""
        return f"{self.file}:{self.line} in {self.function}"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskGroup:
    """Tasks sharing one await chain (outermost frame first)."""

    coroutine: str
    state: str
    await_chain: tuple[Frame, ...]
    awaiting: str | None
    count: int
    names: tuple[str, ...]
    waiting: float | None = None
    """Seconds every task of the group has at least sat at this point (None: unknown)."""
    waiting_longest: float | None = None
    """Seconds the longest-waiting task of the group has at least sat there."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.names[0] if self.names else None,
            "names": list(self.names),
            "count": self.count,
            "coroutine": self.coroutine,
            "state": self.state,
            "awaiting": self.awaiting,
            "await_chain": [f.to_json() for f in self.await_chain],
            "waiting": None if self.waiting is None else round(self.waiting, 1),
            "waiting_longest": (None if self.waiting_longest is None
                                else round(self.waiting_longest, 1)),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ThreadStack:
    name: str
    thread_id: int
    daemon: bool | None
    frames: tuple[Frame, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.thread_id,
            "daemon": self.daemon,
            "frames": [f.to_json() for f in self.frames],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class NativeFrame:
    """One frame of a py-spy stack: a C function (``native``) or a Python one."""

    function: str
    file: str
    line: int
    native: bool

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "file": self.file, "line": self.line,
                "native": self.native}


@dataclasses.dataclass(frozen=True, slots=True)
class NativeThread:
    """One thread as py-spy saw it; ``frames`` outermost first, like every stack here."""

    thread_id: int | None
    os_thread_id: int | None
    name: str | None
    owns_gil: bool
    active: bool
    frames: tuple[NativeFrame, ...]

    def to_json(self) -> dict[str, Any]:
        return {"thread_id": self.thread_id, "os_thread_id": self.os_thread_id,
                "name": self.name, "owns_gil": self.owns_gil, "active": self.active,
                "frames": [f.to_json() for f in self.frames]}


@dataclasses.dataclass(frozen=True, slots=True)
class Native:
    ok: bool
    text: str | None = None
    error: str | None = None
    threads: tuple[NativeThread, ...] = ()
    source: str | None = None
    """Who ran py-spy: "watchdog" (live freeze) or "sentinel" (GIL held)."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"ok": self.ok, "text": self.text, "error": self.error,
                               "threads": [t.to_json() for t in self.threads]}
        if self.source:
            doc["source"] = self.source
        return doc


NATIVE_PENDING = Native(False, None, "native capture still running (this file is rewritten)")
NATIVE_OFF = Native(False, None, "native capture disabled (native=False)")


@dataclasses.dataclass(frozen=True, slots=True)
class InflightUnit:
    name: str
    kind: str
    age: float
    task: str | None
    detail: str | None = None
    request_id: str | None = None
    in_blocking_task: bool = False
    """True for units of the task the dump is about (running, or stalled)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "age": round(self.age, 3),
            "task": self.task,
            "detail": self.detail,
            "request_id": self.request_id,
            "in_blocking_task": self.in_blocking_task,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class LoopInfo:
    name: str
    thread_id: int | None
    thread_name: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "thread_id": self.thread_id, "thread_name": self.thread_name}


@dataclasses.dataclass(frozen=True)
class WaitGraph:
    """Who the blocked party waits for (``_snapshot/waitgraph.py``): the contract's
    ``waits_for`` links, JSON-ready plain dicts, and ``deadlock``."""

    links: tuple[dict[str, Any], ...]
    deadlock: bool

    def to_json(self) -> dict[str, Any]:
        return {"waits_for": [dict(link) for link in self.links], "deadlock": self.deadlock}


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything known about one freeze (or stall) at the moment of capture."""

    kind: str  # "freeze" | "stall" | "freeze-update"
    pid: int
    hostname: str
    python: str
    loop: LoopInfo
    detected_at: float
    blocked_for: float
    threshold: float
    loop_frames: tuple[Frame, ...]
    blocking_frame: Frame
    app_frame: Frame | None
    current_task: str | None
    tasks: tuple[TaskGroup, ...]
    task_count: int
    threads: tuple[ThreadStack, ...]
    native: Native
    inflight: tuple[InflightUnit, ...]
    errors: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    waits: WaitGraph | None = None
    """The wait-for graph; None when the blocked party waits on nothing known."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": self.kind,
            "pid": self.pid,
            "hostname": self.hostname,
            "python": self.python,
            "loop": self.loop.to_json(),
            "detected_at": self.detected_at,
            "blocked_for": round(self.blocked_for, 6),
            "threshold": self.threshold,
            "blocking_frame": self.blocking_frame.to_json(),
            "app_frame": self.app_frame.to_json() if self.app_frame else None,
            "loop_thread": {"frames": [f.to_json() for f in self.loop_frames]},
            "current_task": self.current_task,
            "task_count": self.task_count,
            "tasks": [g.to_json() for g in self.tasks],
            "threads": [t.to_json() for t in self.threads],
            "native": self.native.to_json(),
            "inflight": [u.to_json() for u in self.inflight],
            "capture_errors": list(self.errors),
        }
        if self.waits is not None:
            doc.update(self.waits.to_json())
        doc.update(self.extra)
        return doc
