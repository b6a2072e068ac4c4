"""The detector: what one watchdog round concludes about one loop. Pure.

Timestamps in, decisions out. Nothing here reads a clock, takes a lock,
touches a thread, a loop, a file or a sink: the watchdog observes
(``Observation``), calls ``step``, and acts on what it returns. Every guard
against a false alarm lives here, so each is tested with a table of
timestamps (tests/test_detect.py), never with sleeps.

The data (``LoopState``, ``Observation``, the decisions) is in ``_decisions``,
re-exported here. ``LoopState``, all the watchdog knows of a loop between
rounds, is written by the watchdog thread only (``blocked_for`` elsewhere
reads single attributes, safe under the GIL).

Times are ``time.monotonic()`` seconds unless a name says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._decisions import (
    BusySilence,
    Decision,
    Declared,
    Ended,
    Freeze,
    GilSeen,
    Gone,
    Ignored,
    KernelWait,
    Lag,
    Late,
    LoopState,
    Observation,
    SampleWaits,
    ScanStalls,
    Send,
    Silence,
    SilentGil,
    SilentSentinel,
    Suspended,
    UpdateDue,
)
from ._verdicts import (
    PARK_MAX_EXITS,
    busy_selector,
    explain_silence,
    held_throughout,
    pin_ok,
    round_stalled,
)

__all__ = [
    "PARK_MAX_EXITS", "STALL_SCAN_EVERY", "BusySilence", "Decision", "Declared", "Ended", "Freeze",
    "GilSeen", "Gone", "Ignored", "KernelWait", "Lag", "Late", "LoopState", "Observation",
    "SampleWaits", "ScanStalls", "Send", "Silence", "SilentGil", "SilentSentinel", "Suspended",
    "UpdateDue", "blocked_for", "busy_selector", "explain_silence", "held_throughout",
    "kernel_idle", "needs_details",
    "next_update", "next_wake", "overdue", "park_for", "pin_ok", "rate_limited", "round_stalled",
    "send_failed", "sent", "step", "void_pending",
]

STALL_SCAN_EVERY = 0.5
"""Seconds between scans of a loop's units of work for overdue ones."""


# -- the step ------------------------------------------------------------------------

def needs_details(st: LoopState, obs: Observation) -> bool:
    """Might ``step`` decide on a late beat this round? Then the watchdog also
    observes the loop thread's run delay and debugger state (a syscall, a
    walk of its frames), which it skips in every other round."""
    if not st.pending:
        return False
    if obs.answered_seq == st.sent_seq:
        return True
    return st.freeze is None and obs.now - max(st.sent_at, obs.allow_exit_at) >= st.threshold


def step(st: LoopState, obs: Observation) -> list[Decision]:
    """One round for one loop: update ``st`` and say what to do, in order."""
    out: list[Decision] = []
    if obs.closed:
        return [*finish(st, obs, "loop closed"), Gone()]
    late = False  # a late beat was reported: this round's silence is that freeze
    if st.pending and obs.answered_seq == st.sent_seq:
        st.pending = False
        if st.sent_seq not in (st.ignored_seq, st.void_seq):
            lag = max(0.0, obs.answered_at - max(st.sent_at, obs.allow_exit_at))
            out.append(Lag(lag))
            if st.freeze is not None:
                # From when the loop last ran to when it ran the beat.
                out.append(_end(st, max(0.0, obs.answered_at - st.freeze.start)))
            elif lag >= st.threshold and obs.allow_depth == 0:
                starved = _starved(st, obs, lag)
                if starved is not None:
                    out.append(starved)
                else:
                    late = True
                    out.append(Late(lag, obs.answered_at - lag, obs.gil is not None))
    if st.freeze is None and not st.pending and not late:
        if obs.gil is not None:
            silent = _silent_gil(st, obs)
            if silent is not None:
                out.append(silent)
        elif obs.gil is None and obs.watchdog_silent >= st.threshold:
            quiet = _silent_sentinel(st, obs)
            if quiet is not None:
                out.append(quiet)
    if st.pending:
        out.extend(_pending(st, obs))
        return out
    if obs.has_units and obs.now - st.last_stall_scan >= STALL_SCAN_EVERY:
        st.last_stall_scan = obs.now
        out.append(ScanStalls())
    if obs.now >= st.next_wait_sample and obs.running:
        out.append(SampleWaits())
    if not obs.running or obs.now - st.sent_at < st.interval:
        return out
    if obs.idle and obs.now - st.last_real_beat < st.idle_beat_every:
        return out  # an idle loop cannot be frozen: a real beat every idle_beat_every
    out.append(Send())
    return out


def finish(st: LoopState, obs: Observation, reason: str = "watching stopped") -> list[Decision]:
    """The loop closed, or watching stops (uninstall, exit), with a freeze open:
    end it now. If the loop ran the beat meanwhile (a freeze that ended just
    before ``asyncio.run()`` returned), that is its end; else it lasted until now."""
    fr = st.freeze
    answered = st.pending and obs.answered_seq == st.sent_seq
    if fr is None:
        if not answered or st.sent_seq in (st.ignored_seq, st.void_seq):
            return []
        # A beat answered a threshold late just before the loop closed (a C
        # call held the GIL to the end): still a freeze, seen only afterwards.
        st.pending = False
        lag = max(0.0, obs.answered_at - max(st.sent_at, obs.allow_exit_at))
        return [Late(lag, obs.answered_at - lag, obs.gil is not None)] if (
            lag >= st.threshold and obs.allow_depth == 0) else []
    st.freeze = None
    if answered:
        st.pending = False
        return [Ended(fr.id, max(0.0, obs.answered_at - fr.start))]
    return [Ended(fr.id, max(0.0, obs.now - fr.start), reason)]


def _pending(st: LoopState, obs: Observation) -> list[Decision]:
    now = obs.now
    if not obs.running:
        # Stopped with our beat queued: not a freeze. Forget that beat.
        st.pending = False
        st.ignored_seq = st.sent_seq
        fr = st.freeze
        if fr is not None:
            return [_end(st, now - fr.start, "loop stopped")]
        return []
    age = now - max(st.sent_at, obs.allow_exit_at)
    fr = st.freeze
    if fr is not None:
        if now < fr.next_update:
            return []
        fr.updates += 1
        fr.next_update = next_update(st.update_after, fr.start, fr.updates)
        return [UpdateDue(fr.id, age, fr.updates)]
    if (age < st.threshold or obs.allow_depth or st.sent_seq == st.ignored_seq
            or _just_woke(st, obs)):
        return []
    starved = _starved(st, obs, age)
    if starved is not None:
        return [starved]
    if obs.gil is None and obs.debugger:
        st.ignored_seq = st.sent_seq
        return [Ignored(age, "loop thread stopped in a debugger")]
    st.freeze_ids += 1
    # Frozen since the loop last ran: its last selector return (the beat may
    # have gone out up to an interval after the block began), else the send;
    # never before an allow_blocking() block ended.
    ran = obs.last_ran
    start = max(ran if ran is not None and ran <= now else st.sent_at, obs.allow_exit_at)
    st.freeze = Freeze(st.freeze_ids, start, next_update(st.update_after, start, 0))
    st.freezes += 1
    return [Declared(st.freeze_ids, start, age)]


def _end(st: LoopState, duration: float, reason: str | None = None) -> Ended:
    fr = st.freeze
    assert fr is not None
    st.freeze = None
    return Ended(fr.id, duration, reason)


def _starved(st: LoopState, obs: Observation, age: float) -> Suspended | None:
    """The loop thread spent half the beat's age waiting for a CPU: an
    overloaded machine or a throttled container, not a frozen loop. The beat
    is measured afresh, so a loop that is also frozen is still caught."""
    rd, before = obs.run_delay, st.sent_run_delay
    if rd is None or before is None or rd - before < 0.5 * age:
        return None
    void_pending(st, obs.now)
    st.sent_run_delay = rd
    return Suspended(age, rd - before)


def _just_woke(st: LoopState, obs: Observation) -> bool:
    """The watchdog itself could not run for a while (GIL held) and faulthandler
    saw nothing of this loop: a live stack now shows the loop after the freeze,
    not in it. Watch afresh for a full threshold before declaring a live freeze
    (the heartbeat usually comes back first: then it is a late freeze)."""
    if obs.gil is None and obs.watchdog_silent >= st.threshold / 2:
        st.woke_at = obs.now
    return obs.now - st.woke_at < st.threshold


def _ran_inside(start: float, end: float, answered: float, threshold: float) -> bool:
    """The loop answered a beat inside the silence [start, end] and so cannot have
    been frozen for a threshold on either side of that answer."""
    return start < answered <= end and max(answered - start, end - answered) < threshold


def _silent_gil(st: LoopState, obs: Observation) -> SilentGil | BusySilence | None:
    """faulthandler fired with this loop busy while no heartbeat was out (the
    loop was idle when the C call began): frozen for as long as the watchdog
    could not run, its silent stretch, within one interval. Not if its thread
    slept after the capture: a busy loop starving the watchdog of the GIL."""
    cap = obs.gil
    if cap is None or cap.silent < st.threshold or obs.allow_depth or not cap.busy:
        return None
    # The watchdog can be silent because the machine is loaded, not because
    # the GIL was held. If the loop ran Python (answered a heartbeat) inside
    # the silent stretch, it was not frozen for the threshold.
    start = cap.read_at - cap.silent
    if _ran_inside(start, cap.read_at, obs.answered_at, st.threshold):
        return None
    return (BusySilence if cap.slept else SilentGil)(cap.silent, start)


def _silent_sentinel(st: LoopState, obs: Observation) -> SilentSentinel | None:
    """The watchdog could not run for a threshold (not because the machine was
    loaded) while no beat was out. Nothing proves the loop stopped answering
    yet: a busy loop can starve the watchdog of the GIL too, so only py-spy's
    view of the loop thread owning the GIL in a C function makes it a freeze
    (the watchdog checks that when acting on this)."""
    silent = obs.watchdog_silent
    start = obs.now - silent
    if obs.allow_depth or (start < obs.answered_at and max(
            obs.answered_at - start, obs.now - obs.answered_at) < st.threshold):
        return None
    return SilentSentinel(silent, start)


# -- transitions the watchdog reports back ---------------------------------------------

def sent(st: LoopState, at: float, run_delay: float | None) -> int:
    """A beat is about to be sent at ``at``; returns its sequence number."""
    st.sent_seq += 1
    st.sent_run_delay = run_delay
    st.sent_at = st.last_real_beat = at
    st.pending = True
    return st.sent_seq


def send_failed(st: LoopState) -> None:
    """call_soon_threadsafe refused: the loop closed meanwhile."""
    st.pending = False


def void_pending(st: LoopState, now: float, answered_seq: int | None = None) -> bool:
    """The process was suspended as a whole: the pending beat proves nothing.

    A freeze already declared live stays declared: a suspension during it
    only lengthens it, and ending it here would record the next quick
    heartbeat's lag as its duration. Returns True if the state changed."""
    if st.freeze is not None:
        return False
    if st.pending or (answered_seq is not None and answered_seq != st.sent_seq):
        # Measure the beat afresh from now rather than send a second one
        # while it is still queued; its lag is void either way.
        st.sent_at = now
        st.void_seq = st.sent_seq
    st.suspensions += 1
    return True


# -- schedules, limits and the watchdog's own silences ---------------------------------

def next_update(offsets: Sequence[float], start: float, updates: int) -> float:
    """When the next ``freeze-update`` dump of a freeze is due, after ``updates``
    of them: at ``start`` + each offset (10, 60, 600 s), then every last step."""
    if not offsets:
        return math.inf
    n = len(offsets)
    if updates < n:
        return start + offsets[updates]
    step_ = offsets[-1] - (offsets[-2] if n > 1 else 0.0)
    return start + offsets[-1] + step_ * (updates - n + 1)


def next_wake(st: LoopState, now: float, allow_depth: int, allow_exit_at: float) -> float:
    """Seconds until this loop next needs the watchdog."""
    fr = st.freeze
    if fr is not None:
        return min(st.interval, max(0.0, fr.next_update - now))
    if st.pending:
        if allow_depth or st.sent_seq == st.ignored_seq:
            # Nothing can be declared until the allowed block ends or the
            # ignored beat is answered: check at the interval.
            return st.interval
        deadline = max(st.sent_at, allow_exit_at) + st.threshold
        return min(st.interval, max(0.001, deadline - now))
    return st.interval


def blocked_for(st: LoopState, now: float, allow_exit_at: float) -> float:
    """Seconds the loop has been unresponsive at ``now`` (0.0 when healthy)."""
    fr = st.freeze
    if fr is None and not st.pending:
        return 0.0
    start = max(fr.start if fr else st.sent_at, allow_exit_at)
    age = now - start
    return age if (fr is not None or age >= st.threshold) else 0.0


def rate_limited(last_written: float | None, now: float, window: float) -> bool:
    """A dump with the same signature was written less than ``window`` s ago."""
    return last_written is not None and now - last_written < window


def overdue(started: float, limit: float, stalled_at: float | None, now: float) -> bool:
    """A unit of work open for ``limit`` s or more, not reported yet: a stall."""
    return stalled_at is None and now - started >= limit


def park_for(st: LoopState, now: float, *, in_select: bool, moved: bool,
             has_units: bool, allow_depth: int, wakes_by: float = math.inf) -> float | None:
    """Seconds the watchdog may sleep on this loop's behalf, trusting its selector
    wrapper (uvloop: its epoll descriptor) to wake it when the loop wakes (None:
    keep polling). ``moved``: the selector returned since the previous round.
    ``wakes_by``: the earliest the loop's own timer may wake it: no later."""
    if (st.pending or st.freeze is not None or has_units or allow_depth
            or not in_select or moved or wakes_by - now < st.interval):
        return None
    return max(0.0, min(st.last_real_beat + st.idle_beat_every, wakes_by) - now)


def kernel_idle(st: LoopState, seen: KernelWait | None, now: float,
                frame_idle: bool) -> float | None:
    """uvloop as the kernel shows it, one look a round: idle, the earliest its own
    timer may wake it; else None. Idle: an epoll wait (any other syscall, e.g.
    ``time.sleep``, a blocking ``recv``, reads None) on the loop's descriptor
    (learnt from two looks at one wait, at the idle frame, not scheduled in
    between), timeout not 0 (a poll between callbacks). A wait first seen
    now began after the previous look: its timer fires ``timeout`` after."""
    prev, looked = st.kwait, st.kwait_looked
    st.kwait, st.kwait_looked = seen, now
    if seen is None or seen.timeout == 0.0:
        return None
    if not (same := prev is not None and prev.epfd == seen.epfd and prev.runs == seen.runs):
        st.kwait_since = looked
    if st.loop_epfd is None and same and frame_idle:
        st.loop_epfd = seen.epfd
    if seen.epfd != st.loop_epfd:
        return None
    return math.inf if seen.timeout is None else st.kwait_since + seen.timeout
