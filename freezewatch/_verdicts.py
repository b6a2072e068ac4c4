"""Verdicts the watchdog asks for outside a loop's step. Pure, like ``_detect``
(which re-exports them): why the watchdog itself was silent (an overloaded
machine, a stopped process), whether a round stalled or a selector is busy,
and whether the sentinel's evidence shows a GIL held by one C call.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._decisions import Silence

PARK_MAX_EXITS = 4
"""A loop whose selector returned more often than this since the previous
round is busy: do not park on it (it would wake the watchdog a millisecond
later; see the watchdog)."""


def busy_selector(exits_now: int, exits_before: int | None) -> bool:
    return exits_before is not None and exits_now - exits_before > PARK_MAX_EXITS


def explain_silence(*, silent: float, late: float, min_threshold: float,
                    own_waited: float | None, loops_waited: Sequence[float],
                    cpu_used: float, wall: float) -> Silence | None:
    """The watchdog woke ``late`` s after it asked to and could not run for
    ``silent`` s. A held GIL stops it too, and is a freeze; these are not:

    - ``starved``: it (or a loop thread, which may have held the GIL) sat on a
      run queue for half the silence (``own_waited``, ``loops_waited``: run
      delay grown since the previous baseline);
    - ``suspended``: it woke late while the process used little CPU
      (SIGSTOP, a suspended VM, a throttled container); a GIL-holding C call
      also delays it, but burns CPU while it does.
    """
    if silent > 0.5 * min_threshold and own_waited is not None:
        waited = max([own_waited, *(own_waited + x for x in loops_waited)])
        if waited >= 0.5 * silent:
            return Silence("starved", silent, "the machine was overloaded: the watchdog or "
                           "the loop thread waited for a CPU")
    if late > 0.5 * min_threshold and cpu_used < 0.5 * wall:
        return Silence("suspended", late, "the whole process was not running")
    return None


def round_stalled(spent: float, cpu: float, min_threshold: float) -> bool:
    """A round that took half a threshold on little CPU was stopped or waited
    on py-spy (which pauses us too): beats sent before it prove nothing."""
    return spent > 0.5 * min_threshold and cpu < 0.5 * spent


def pin_ok(idle: bool, owns_gil_in_c: bool, need_held_gil: bool, held: bool = False) -> bool:
    """Can a GIL-held freeze be pinned on the sentinel's py-spy stack of the
    loop thread? Not if it shows the loop idle; for a silence with no beat
    out, only if the thread owned the GIL inside a C function and ``held`` it
    throughout (``held_throughout``): a uvloop thread is in C with the GIL most
    of the time, so one sample of a busy loop shows that too."""
    return not idle and (not need_held_gil or (owns_gil_in_c and held))


def held_throughout(switches: Sequence[int | None] | None) -> bool:
    """The sentinel's two looks at the loop thread's voluntary context switches in
    the silence (its first, and right before py-spy) agree: it never slept. A busy
    loop that starves the watchdog blocks on the GIL each time it hands it over."""
    return switches is not None and len(switches) == 2 and switches[0] is not None \
        and switches[0] == switches[1]
