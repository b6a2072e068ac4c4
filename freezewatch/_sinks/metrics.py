"""Prometheus metrics sink (filled in by the metrics work; no-ops until then)."""

from __future__ import annotations

from typing import Any


def lag(w: Any, seconds: float) -> None:
    pass


def freeze_detected(w: Any) -> None:
    pass


def freeze_ended(w: Any, seconds: float) -> None:
    pass


def stall_detected(w: Any) -> None:
    pass


def dump_written(w: Any) -> None:
    pass


def dump_failed(w: Any) -> None:
    pass
