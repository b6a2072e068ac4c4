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
    from ._watchdog import Watchdog

# Guards install/uninstall only: never taken by the watchdog thread while it
# inspects a loop, and never on the heartbeat path.
lock = threading.RLock()
watchdog: Watchdog | None = None
by_loop: dict[Any, LoopWatch] = {}
"""Watched loops (keyed by loop object) -> handle. Read lock-free by watch()."""
dump_seq = itertools.count(1)
last_dump_by_signature: dict[str, float] = {}


def reset() -> None:
    """Forget everything (tests; after fork in the child). Does not stop threads."""
    global watchdog, dump_seq
    watchdog = None
    by_loop.clear()
    last_dump_by_signature.clear()
    dump_seq = itertools.count(1)
