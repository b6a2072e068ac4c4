"""freezewatch: find out why an asyncio program stopped answering.

    import freezewatch
    freezewatch.install()          # one line, at startup

A watchdog thread pings each watched event loop; when a heartbeat is not
answered within the threshold, it writes a dump pinning the exact file and
line the loop sits on, while the loop is still frozen. See README.md.
"""

from __future__ import annotations

from ._allow import allow_blocking
from ._config import Config
from ._events import FreezeEvent
from ._handle import LoopWatch
from ._inflight import watch
from ._install import install, uninstall
from ._version import __version__ as __version__

__all__ = [
    "Config",
    "FreezeEvent",
    "LoopWatch",
    "allow_blocking",
    "install",
    "uninstall",
    "watch",
]


def __getattr__(name: str) -> object:
    # `freezewatch.aiohttp.setup(app)` / `freezewatch.asgi.FreezewatchMiddleware`
    # work after a plain `import freezewatch`; the integration (and aiohttp) is
    # imported only when first touched, never at `import freezewatch`.
    if name in ("aiohttp", "asgi", "otel", "sentry"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
