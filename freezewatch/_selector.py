"""Let an idle loop park the watchdog, and wake it the moment the loop wakes.

A loop waiting in its selector cannot be frozen, so the watchdog need not
wake every ``interval`` to look at it: that polling is most of freezewatch's
cost on an idle service (each wake-up is a context switch and a Python
round). For loops with a Python-level selector (asyncio's selector loops) we
wrap the loop's selector: the wrapper records that the loop sits in
``select()`` and, when the loop leaves it while the watchdog is parked, sets
the watchdog's event. The watchdog then sleeps up to ``idle_beat_every``
while every loop is idle, yet sees a loop that wakes up at once.

Cost on the loop thread: one Python call and two or three attribute stores
per loop iteration (about 0.25 µs); the event is set only on the first
wake-up after the watchdog parked, and the watchdog does not park while the
loop is busy (see _watchdog.PARK_MAX_EXITS), so a busy loop never pays for
the wake-up. uvloop has no Python selector: the watchdog reads
its loop thread from /proc instead (``_loopwait``).

Races: the wrapper writes ``in_select``/``exits`` before it reads
``parked``; the watchdog writes ``parked`` before it re-reads them. Under
the GIL one of the two always sees the other's write, so a wake-up is never
lost (the watchdog un-parks itself when it sees the loop moved).
"""

from __future__ import annotations

import selectors
import threading
import time
from collections.abc import Callable
from typing import Any

_monotonic = time.monotonic  # one global lookup on the loop thread's hot path

HANDOFF_MAX = 0.005
"""Longest a saturated loop stands aside for the watchdog per round (the GIL's switch interval)."""


class IdleState:
    """Shared by one loop's selector wrapper (loop thread) and its LoopWatch (watchdog)."""

    __slots__ = ("due", "exits", "handoff", "in_select", "left_at", "parked", "wake", "wakes",
                 "woke_at")

    def __init__(self, wake: Callable[[], None],
                 handoff: threading.Event | None = None) -> None:
        self.in_select = False  # inside select() with a timeout that is not 0
        self.exits = 0  # select() calls completed
        # When select() last returned (monotonic): the loop ran from then on.
        # A freeze's duration counts from here, not from the heartbeat's send
        # (which may come up to one interval after the block began).
        self.left_at = 0.0
        self.parked = False  # the watchdog sleeps, counting on us to wake it
        self.wake = wake
        self.woke_at = 0.0  # when the loop last woke a parked watchdog (monotonic)
        self.wakes = 0  # times the loop woke a parked watchdog (benchmarks)
        # GIL hand-off: when the watchdog is due to wake (``due``, monotonic;
        # 0.0: not armed) and the loop is saturated, the loop waits on
        # ``handoff`` once so the watchdog can take the GIL (see select()).
        self.due = 0.0
        self.handoff = handoff


class WakingSelector:
    """A selector proxy: the loop's own selector, plus the idle bookkeeping."""

    def __init__(self, inner: selectors.BaseSelector, state: IdleState) -> None:
        self._fw_inner = inner
        self._fw_state = state
        self._fw_select = inner.select  # bound once: one lookup less per loop iteration

    def select(self, timeout: float | None = None) -> Any:
        # The loop thread's hot path: one call per loop iteration (about one per
        # request on a busy server), so it does only what the watchdog needs
        # (scripts/bench.py --only components measures it).
        st = self._fw_state
        if timeout is None or timeout > 0:
            st.in_select = True  # waiting for I/O: idle
            try:
                return self._fw_select(timeout)
            finally:
                st.in_select = False
                st.left_at = _monotonic()
                st.exits += 1
                if st.parked:
                    _woke(st)
        # select(0) is a poll between ready callbacks: busy, not idle
        # (in_select stays False, as the last select left it).
        try:
            return self._fw_select(timeout)
        finally:
            st.left_at = _monotonic()
            st.exits += 1
            if st.parked:
                _woke(st)
            elif st.due and time.monotonic() >= st.due and st.handoff is not None:
                # GIL convoy: a saturated loop releases and re-takes the GIL on
                # every select(0); each release wakes the waiting watchdog, which
                # then loses the race again, burning CPU and slowing this loop
                # (measured before the redesign: 78.6 ms/s of watchdog CPU, loop
                # 14.1 % slower; with the hand-off 3.5 ms/s, 3.4 %). Once
                # per watchdog round, stand aside until its round is done (at
                # most HANDOFF_MAX): one short pause instead of a convoy.
                st.due = 0.0
                st.handoff.wait(HANDOFF_MAX)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fw_inner, name)


def _woke(st: IdleState) -> None:
    """The loop left select() while the watchdog was parked: wake it (rare path)."""
    st.parked = False
    st.woke_at = time.monotonic()
    st.wakes += 1
    st.wake()


def attach(loop: Any, state: IdleState) -> bool:
    """Wrap ``loop``'s selector; False for loops without a Python selector (uvloop)."""
    sel = getattr(loop, "_selector", None)
    if isinstance(sel, WakingSelector):
        sel._fw_state = state
        return True
    if not isinstance(sel, selectors.BaseSelector):
        return False
    loop._selector = WakingSelector(sel, state)
    return True


def detach(loop: Any) -> None:
    sel = getattr(loop, "_selector", None)
    if isinstance(sel, WakingSelector):
        loop._selector = sel._fw_inner
