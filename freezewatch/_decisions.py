"""The detector's data: what a round observes, what it remembers, what it decides.

Plain slotted dataclasses, no behaviour: ``_detect`` holds the functions.
Times are ``time.monotonic()`` seconds unless a name says otherwise.
"""

from __future__ import annotations

import dataclasses
import math

# -- what the watchdog saw ------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class GilSeen:
    """A stack of the loop thread captured while no Python thread could run
    (faulthandler, signalled by the sentinel), as read in this round."""

    busy: bool
    """The captured stack shows the loop running code, not waiting in its selector."""
    silent: float
    """Seconds the watchdog had been silent when it read the capture."""
    read_at: float
    slept: bool = False
    """The sentinel saw the loop thread switch after the capture, the watchdog
    still blocked: it ran on (a busy loop keeping the GIL from the watchdog)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """One round's view of one loop."""

    now: float
    answered_seq: int
    """The last heartbeat sequence number the loop ran (written by the loop thread)."""
    answered_at: float
    running: bool = True
    closed: bool = False
    allow_depth: int = 0
    """``allow_blocking()`` blocks open on the loop right now."""
    allow_exit_at: float = 0.0
    """When the last ``allow_blocking()`` block ended."""
    watchdog_silent: float = 0.0
    """Seconds the watchdog could not run before this round, unexplained by a
    suspension or an overloaded machine (then 0)."""
    gil: GilSeen | None = None
    idle: bool = False
    """The loop waits in its selector (its heartbeat may be skipped)."""
    has_units: bool = False
    """Units of work are in flight on the loop."""
    last_ran: float | None = None
    """When the loop last left its selector, i.e. last ran (None: no selector wrapper)."""
    # Details, observed only when ``needs_details`` says a decision may be due:
    run_delay: float | None = None
    """Cumulative seconds the loop thread waited for a CPU (None: unknown)."""
    debugger: bool = False
    """The loop thread is stopped in a debugger (pdb, pydevd)."""


@dataclasses.dataclass(frozen=True, slots=True)
class KernelWait:
    """A loop thread without a Python selector (uvloop) blocked in epoll_wait /
    epoll_pwait, as /proc shows it (``_loopwait``): the loop's own wait for I/O."""

    epfd: int
    """The epoll descriptor it waits on (the loop's)."""
    timeout: float | None
    """Seconds it asked to wait (the loop's next timer); None: no timeout."""
    runs: int
    """Times the thread was scheduled in so far (schedstat): unchanged, it did not run."""


# -- what the watchdog knows between rounds --------------------------------------

@dataclasses.dataclass(slots=True)
class Freeze:
    """A freeze declared live and not ended yet."""

    id: int
    start: float
    """When the loop was last known to run: the unanswered beat's send, or the
    end of an allow_blocking() block if that came later."""
    next_update: float
    updates: int = 0


@dataclasses.dataclass(slots=True)
class LoopState:
    threshold: float
    interval: float
    idle_beat_every: float
    update_after: tuple[float, ...]
    sent_seq: int = 0
    sent_at: float = 0.0
    pending: bool = False
    """A heartbeat is out and not seen answered yet."""
    ignored_seq: int = -1
    """A beat whose delay is explained (debugger, loop stopped): never a freeze."""
    void_seq: int = -1
    """A beat whose lag is void (the process was suspended meanwhile)."""
    last_real_beat: float = 0.0
    sent_run_delay: float | None = None
    woke_at: float = -1e9
    """When the watchdog last came back from a silence it could not explain."""
    freeze: Freeze | None = None
    freeze_ids: int = 0
    last_stall_scan: float = 0.0
    next_wait_sample: float = 0.0
    # The kernel's view of a loop without a selector wrapper (uvloop), between looks:
    kwait: KernelWait | None = None
    kwait_looked: float = -math.inf
    """When the watchdog last looked (``_detect.kernel_idle``)."""
    kwait_since: float = -math.inf
    """The wait seen in ``kwait`` began after this moment (the look before it saw another)."""
    loop_epfd: int | None = None
    """The loop's own epoll descriptor, once learnt (``_detect.kernel_idle``)."""
    # Counters (the handle shows them).
    freezes: int = 0
    late_freezes: int = 0
    suspensions: int = 0
    stalls: int = 0


# -- what the watchdog should do -------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Lag:
    """A heartbeat answered: its lag is a sample (a freeze's full duration too)."""
    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Declared:
    """A freeze is declared live: capture now, while the loop is still frozen."""
    freeze_id: int
    start: float
    age: float


@dataclasses.dataclass(frozen=True, slots=True)
class UpdateDue:
    """A declared freeze goes on: a ``freeze-update`` dump is due."""
    freeze_id: int
    age: float
    update: int


@dataclasses.dataclass(frozen=True, slots=True)
class Ended:
    """A declared freeze is over (the beat ran, or the loop stopped or closed)."""
    freeze_id: int
    duration: float
    reason: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Late:
    """A beat answered a threshold late, no freeze seen live: the watchdog could
    not run (a C call held the GIL) or it ended between two checks. Pinned on a
    stack captured during it if there is one (``gil``), else dumped as not seen."""
    lag: float
    since: float
    gil: bool


@dataclasses.dataclass(frozen=True, slots=True)
class SilentGil:
    """faulthandler caught the loop busy while the watchdog was silent and no
    beat was out: a GIL-held freeze as long as that silence."""
    silent: float
    since: float


@dataclasses.dataclass(frozen=True, slots=True)
class SilentSentinel:
    """The watchdog was silent a threshold with no beat out: a GIL-held freeze
    if the sentinel's py-spy saw the loop thread own the GIL in a C call."""
    silent: float
    since: float


@dataclasses.dataclass(frozen=True, slots=True)
class BusySilence:
    """The watchdog was silent a threshold with no beat out, but the loop thread
    slept after faulthandler's capture: a busy loop kept the GIL from the watchdog.
    Not a freeze; a dump the sentinel wrote in that silence is removed."""
    silent: float
    since: float


@dataclasses.dataclass(frozen=True, slots=True)
class Suspended:
    """The loop's beat is late because its thread waited for a CPU: not a freeze."""
    seconds: float
    waited: float


@dataclasses.dataclass(frozen=True, slots=True)
class Ignored:
    """The beat is late because the loop thread sits in a debugger: not a freeze."""
    age: float
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Gone:
    """The loop closed: stop watching it."""


@dataclasses.dataclass(frozen=True, slots=True)
class ScanStalls:
    """Time to look for overdue units of work."""


@dataclasses.dataclass(frozen=True, slots=True)
class SampleWaits:
    """Time to sample how long each task has waited."""


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """Send a heartbeat now (then call ``sent``)."""


Decision = (Lag | Declared | UpdateDue | Ended | Late | SilentGil | SilentSentinel
            | BusySilence | Suspended | Ignored | Gone | ScanStalls | SampleWaits | Send)


@dataclasses.dataclass(frozen=True, slots=True)
class Silence:
    """Why the watchdog could not run for a while, if it was not a held GIL."""

    kind: str
    """``starved`` (the machine was overloaded) or ``suspended`` (the process was stopped)."""
    seconds: float
    reason: str
