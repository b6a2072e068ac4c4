"""Global state department: the only process-global state of freezewatch.

One watchdog thread, the handles it serves (by loop, and those still waiting
for their loop to start), a sequence for dump names, and the per-signature
rate limit. ``reset()`` puts everything back for tests; don't reload this
module or everything breaks.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._loopwatch import LoopWatch
    from ._sdnotify import Notifier
    from ._serve import MetricsServer
    from ._watchdog import Watchdog

# Guards install/uninstall only: never taken by the watchdog thread while it
# inspects a loop, and never on the heartbeat path.
lock = threading.RLock()
watchdog: Watchdog | None = None
by_loop: dict[Any, LoopWatch] = {}
"""Watched loops (keyed by loop object) -> handle. Read lock-free by watch()."""
dump_seq = itertools.count(1)
last_dump_by_signature: dict[str, float] = {}
metrics_server: MetricsServer | None = None
"""The /metrics + /healthz server thread (install(metrics_port=...)); one per process."""
notifier: Notifier | None = None
"""systemd watchdog pings (NOTIFY_SOCKET + WATCHDOG_USEC), fed by the watchdog thread."""
inherited_loops: list[Any] = []
"""After fork, in the child: loops that were running on the forking thread's
stack. They are the parent's and never run again here; never attach to them."""


def reset() -> None:
    """Forget everything (tests; after fork in the child). Does not stop threads."""
    global watchdog, dump_seq, metrics_server, notifier
    watchdog = None
    metrics_server = None
    notifier = None
    inherited_loops.clear()
    by_loop.clear()
    last_dump_by_signature.clear()
    dump_seq = itertools.count(1)
