"""Freezes in OpenTelemetry: metrics and one log record per freeze or stall.

    import freezewatch, freezewatch.otel
    freezewatch.install()
    freezewatch.otel.instrument()        # the global MeterProvider / LoggerProvider

Needs the ``otel`` extra (``pip install freezewatch[otel]``). freezewatch
configures nothing: it records through the application's providers, whose own
readers and processors export. ``autodetect()`` turns this on by itself when
the application already set a real (SDK) provider; it never imports
OpenTelemetry into a process that did not. See docs/integrations.md.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from ._sinks import otel as _sink
from ._sinks import report as _report
from ._sinks.otel import record_lag, set_blocked_source
from ._version import __version__

__all__ = ["autodetect", "instrument", "record_lag", "set_blocked_source", "uninstrument"]

_providers: tuple[Any, Any] | None = None


def instrument(meter_provider: Any = None, logger_provider: Any = None) -> None:
    """Record freezewatch's metrics and log records through these providers
    (default: the global ones). Again with the same providers: nothing changes
    (instruments are created once per meter); with others: they replace these."""
    global _providers
    if _sink._active is not None and _providers == (meter_provider, logger_provider):
        return

    instruments = _sink.Instruments(meter_provider, __version__)
    sink = _sink.OTelSink(instruments, logger_provider, __version__)
    if _sink._blocked_source is None:
        set_blocked_source(_blocked_now)
    _report.register(sink)
    _providers = (meter_provider, logger_provider)
    _sink._active = instruments  # record_lag starts recording


def uninstrument() -> None:
    """Stop recording (idempotent). Instruments already created stay in the
    application's meter, unfed (the OTel API has no way to delete them)."""
    global _providers
    _sink._active = None
    _providers = None
    _report.unregister(_sink.OTelSink.name)
    if _sink._blocked_source is _blocked_now:
        set_blocked_source(None)


def instrumented() -> bool:
    return _sink._active is not None


def autodetect() -> bool:
    """``instrument()`` if the application set a real global MeterProvider or
    LoggerProvider; True if the sink is on. Imports nothing: an application that
    never imported OpenTelemetry pays two ``sys.modules`` lookups."""
    if instrumented():
        return True
    if not (_real(sys.modules.get("opentelemetry.metrics"), "get_meter_provider")
            or _real(sys.modules.get("opentelemetry._logs"), "get_logger_provider")):
        return False
    instrument()
    return True


def _real(module: Any, getter: str) -> bool:
    """True if the module's global provider is a real one (not the API's no-op or
    the proxy it returns before the application sets a provider)."""
    if module is None:
        return False
    provider = getattr(module, getter)()
    name = type(provider).__name__
    return not (name.startswith("NoOp") or name.startswith("_Proxy")
                or name.startswith("Proxy"))


def _blocked_now() -> Mapping[str, float]:
    """Default gauge source: every watched loop's blocked time, read from the handles.

    Runs on the application's metric reader thread; ``blocked_for()`` reads a
    few attributes and takes no lock."""
    from . import _state

    wd = _state.watchdog
    out: dict[str, float] = {}
    for w in tuple(getattr(wd, "watches", ()) or ()):
        if not w.closed and w.loop is not None:
            out[w.name] = max(out.get(w.name, 0.0), float(w.blocked_for()))
    return out
