"""Freezes in Sentry: one event per freeze and stall, sent while the loop is frozen.

    import sentry_sdk, freezewatch, freezewatch.sentry
    sentry_sdk.init(dsn=..., integrations=[freezewatch.sentry.integration()])
    freezewatch.install()

Needs the ``sentry`` extra (``pip install freezewatch[sentry]``). Without the
integration, ``autodetect()`` turns the sink on when the application has
initialised Sentry; it never imports sentry_sdk into a process that did not.
See docs/integrations.md.
"""

from __future__ import annotations

import sys
from typing import Any

from ._sinks import report as _report
from ._sinks.sentry import SentrySink

__all__ = ["autodetect", "disable", "enable", "integration"]

IDENTIFIER = "freezewatch"
_integration_class: type | None = None


def enable() -> SentrySink:
    """Register the Sentry sink (idempotent); it sends only while a Sentry client
    is active (``sentry_sdk.get_client().is_active()``)."""
    for s in _report.sinks():
        if isinstance(s, SentrySink):
            return s
    sink = SentrySink(_rate_window)
    _report.register(sink)
    return sink


def disable() -> None:
    _report.unregister(SentrySink.name)


def integration() -> Any:
    """A ``sentry_sdk.integrations.Integration`` for ``sentry_sdk.init(integrations=[...])``."""
    global _integration_class
    if _integration_class is None:
        from sentry_sdk.integrations import Integration

        class FreezewatchIntegration(Integration):
            """Sends freezewatch's freezes and stalls as Sentry events."""

            identifier = IDENTIFIER

            @staticmethod
            def setup_once() -> None:
                # Called once per process, whatever the number of init() calls:
                # the sink checks for an active client at each delivery.
                enable()

        _integration_class = FreezewatchIntegration
    return _integration_class()


def autodetect() -> bool:
    """``enable()`` if the application initialised Sentry; True if the sink is on."""
    if any(isinstance(s, SentrySink) for s in _report.sinks()):
        return True
    sdk = sys.modules.get("sentry_sdk")
    if sdk is None or not sdk.get_client().is_active():
        return False
    enable()
    return True


def _rate_window(loop_name: str) -> float:
    """The ``dump_rate_window`` of the watched loop of that name (the default if none)."""
    from . import _state
    from ._config import Config

    wd = _state.watchdog
    for w in tuple(getattr(wd, "watches", ()) or ()):
        if w.name == loop_name:
            return float(w.config.dump_rate_window)
    return float(Config.dump_rate_window)
