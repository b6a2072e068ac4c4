"""What every sink receives: one frozen ``Report`` per thing that happened.

A report is built once by the pipeline and handed, unchanged, to each sink
(log, hooks, and the optional OpenTelemetry and Sentry sinks). Sinks never
see the watchdog's handle or its state; they read this object only. Each
sink is isolated: one that raises is counted and logged, the others still
run.

Sinks run on the ``freezewatch-events`` thread (see ``log.EventSink``), never
on the watchdog thread, so a slow exporter cannot delay detection; that
thread runs while a loop is frozen (unless a C call holds the GIL).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from .. import _state
from .._events import FreezeEvent
from .._snapshot.model import Snapshot


@dataclasses.dataclass(frozen=True)
class Report:
    """One event, with the capture it is about when there is one."""

    event: FreezeEvent
    snapshot: Snapshot | None = None
    """The plain-data capture (``freeze_detected``, ``freeze_updated``,
    ``stall_detected``); None for events without one (``freeze_ended``,
    ``stall_ended``, ``dump_failed``, ``process_suspended``...)."""
    freeze_id: int | None = None
    """Identifies one freeze (or stall) across its events: ``freeze_detected``,
    its ``freeze_updated`` and its ``freeze_ended`` share it."""
    level: str = "warning"

    @property
    def doc(self) -> Mapping[str, Any] | None:
        """The snapshot as the contract's JSON document (None without a snapshot)."""
        return self.snapshot.to_json() if self.snapshot is not None else None


class Sink(Protocol):
    """An optional sink (OpenTelemetry, Sentry): called once per report."""

    name: str

    def deliver(self, report: Report) -> None: ...


def sinks() -> list[Sink]:
    """The sinks registered by the optional integrations (``freezewatch.otel``,
    ``freezewatch.sentry``); kept in ``_state.extra_sinks``, copy-on-write."""
    return _state.extra_sinks


def register(sink: Sink) -> None:
    """Add ``sink`` (idempotent by name: a sink of the same name is replaced)."""
    _state.extra_sinks = [s for s in _state.extra_sinks if s.name != sink.name] + [sink]


def unregister(name: str) -> None:
    _state.extra_sinks = [s for s in _state.extra_sinks if s.name != name]
