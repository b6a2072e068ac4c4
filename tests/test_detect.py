"""The detector's decisions, as tables: timestamps in, decisions out. No loop, no sleep.

Each guard against a false alarm and each decision of ``freezewatch._detect``
is driven here with made-up times (seconds on a monotonic clock). The real
timing of the same paths is tested against real loops elsewhere; these rows
pin the rules themselves, so a change in a rule shows up here first.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from freezewatch import _detect as d

T = 1.0  # threshold
I = 0.1  # interval  # noqa: E741


def state(**kw: Any) -> d.LoopState:
    return d.LoopState(threshold=kw.pop("threshold", T), interval=kw.pop("interval", I),
                       idle_beat_every=kw.pop("idle_beat_every", 2.0),
                       update_after=kw.pop("update_after", (10.0, 60.0, 600.0)), **kw)


def obs(now: float, answered: tuple[int, float] = (0, 0.0), **kw: Any) -> d.Observation:
    return d.Observation(now=now, answered_seq=answered[0], answered_at=answered[1], **kw)


def kinds(decisions: list[d.Decision]) -> list[str]:
    return [type(x).__name__ for x in decisions]


def sent_at(st: d.LoopState, at: float, run_delay: float | None = None) -> int:
    assert d.Send() in d.step(st, obs(at, (st.sent_seq, st.sent_at)))
    return d.sent(st, at, run_delay)


# -- the plain path -------------------------------------------------------------------

@pytest.mark.parametrize(("now", "expected"), [
    (0.50, []),                # half the threshold: nothing yet
    (0.99, []),
    (1.00, ["Declared"]),      # a threshold after the beat went out: declared
    (3.00, ["Declared"]),      # however late the watchdog looks
])
def test_a_beat_out_for_a_threshold_is_a_freeze(now: float, expected: list[str]) -> None:
    st = state()
    seq = d.sent(st, 0.0, None)
    assert seq == 1 and st.pending
    assert kinds(d.step(st, obs(now))) == expected


def test_a_declared_freeze_ends_with_the_beat_and_its_full_lag() -> None:
    st = state()
    d.sent(st, 10.0, None)
    (dec,) = d.step(st, obs(11.2))
    assert isinstance(dec, d.Declared) and (dec.start, round(dec.age, 6)) == (10.0, 1.2)
    assert d.step(st, obs(12.0)) == []  # still frozen, no update due
    out = d.step(st, obs(14.05, (1, 14.0)))
    assert out[:2] == [d.Lag(4.0), d.Ended(dec.freeze_id, 4.0, None)]
    assert st.freeze is None and st.freezes == 1


def test_a_beat_answered_in_time_is_a_lag_sample_only() -> None:
    st = state()
    d.sent(st, 0.0, None)
    assert d.step(st, obs(0.1, (1, 0.02)))[0] == d.Lag(0.02)
    assert st.freezes == 0


def test_heartbeats_every_interval_and_idle_loops_every_idle_beat() -> None:
    st = state()
    assert kinds(d.step(st, obs(5.0))) == ["SampleWaits", "Send"]
    d.sent(st, 5.0, None)
    assert "Send" not in kinds(d.step(st, obs(5.05, (1, 5.01))))   # answered, not yet due
    assert "Send" in kinds(d.step(st, obs(5.11, (1, 5.01))))       # an interval later
    assert "Send" not in kinds(d.step(st, obs(5.11, (1, 5.01), idle=True)))  # idle: skipped
    assert "Send" in kinds(d.step(st, obs(7.01, (1, 5.01), idle=True)))      # idle_beat_every


# -- guards ------------------------------------------------------------------------------

def test_allow_blocking_suppresses_and_the_beat_counts_from_its_end() -> None:
    st = state()
    d.sent(st, 0.0, None)
    assert d.step(st, obs(5.0, allow_depth=1)) == []            # inside the allowed block
    assert d.step(st, obs(5.5, allow_exit_at=5.0)) == []        # 0.5 s after its end
    assert kinds(d.step(st, obs(6.0, allow_exit_at=5.0))) == ["Declared"]
    assert st.freeze is not None and st.freeze.start == 5.0


def test_allow_blocking_lag_is_measured_from_the_block_end() -> None:
    st = state()
    d.sent(st, 0.0, None)
    out = d.step(st, obs(5.3, (1, 5.2), allow_exit_at=5.0))
    assert out[0] == d.Lag(pytest.approx(0.2))
    assert "Late" not in kinds(out)


def test_debugger_stop_is_ignored_once_then_watched_again() -> None:
    st = state()
    d.sent(st, 0.0, None)
    (dec,) = d.step(st, obs(1.5, debugger=True))
    assert isinstance(dec, d.Ignored) and "debugger" in dec.reason
    assert d.step(st, obs(30.0, debugger=False)) == []           # the same beat: never a freeze
    out = d.step(st, obs(31.0, (1, 30.5)))                       # answered: no lag sample
    assert "Lag" not in kinds(out) and "Late" not in kinds(out)
    d.sent(st, 31.0, None)
    assert kinds(d.step(st, obs(32.0))) == ["Declared"]          # the next beat counts again


def test_a_thread_starved_of_cpu_is_not_frozen() -> None:
    """The loop thread waited 0.8 s of a 1.2 s late beat for a CPU: overload."""
    st = state()
    d.sent(st, 0.0, 10.0)
    (dec,) = d.step(st, obs(1.2, run_delay=10.8))
    assert isinstance(dec, d.Suspended) and dec.waited == pytest.approx(0.8)
    assert st.freeze is None and st.suspensions == 1
    assert st.sent_at == 1.2                                      # measured afresh from now
    assert kinds(d.step(st, obs(2.2, run_delay=10.85))) == ["Declared"]  # then frozen for real


@pytest.mark.parametrize(("waited", "expected"), [(0.4, "Declared"), (0.6, "Suspended")])
def test_starvation_needs_half_the_beats_age(waited: float, expected: str) -> None:
    st = state()
    d.sent(st, 0.0, 0.0)
    assert kinds(d.step(st, obs(1.0, run_delay=waited))) == [expected]


def test_a_late_answer_after_starvation_is_not_a_late_freeze() -> None:
    st = state()
    d.sent(st, 0.0, 0.0)
    out = d.step(st, obs(1.6, (1, 1.5), run_delay=1.0))
    assert kinds(out)[:2] == ["Lag", "Suspended"] and "Late" not in kinds(out)


def test_a_suspended_process_voids_the_pending_beat() -> None:
    st = state()
    d.sent(st, 0.0, None)
    assert d.void_pending(st, 5.0, answered_seq=0)
    out = d.step(st, obs(5.1, (1, 5.05)))                         # answered: its lag is void
    assert "Lag" not in kinds(out) and st.freezes == 0 and st.suspensions == 1


def test_a_suspension_does_not_end_a_declared_freeze() -> None:
    st = state()
    d.sent(st, 0.0, None)
    d.step(st, obs(1.0))
    assert not d.void_pending(st, 5.0)
    assert st.freeze is not None


@pytest.mark.parametrize(("silent", "late", "own", "loops", "cpu", "wall", "kind"), [
    (0.2, 0.0, 0.0, [], 0.0, 0.2, None),            # short: nothing to explain
    (2.0, 1.9, 1.5, [], 1.9, 2.0, "starved"),       # the watchdog waited 1.5 s for a CPU
    (2.0, 1.9, 0.1, [1.2], 1.9, 2.0, "starved"),    # the loop thread (GIL holder) did
    (2.0, 1.9, 0.1, [0.1], 1.9, 2.0, None),         # neither: a C call held the GIL
    (2.0, 1.9, None, [], 0.05, 2.0, "suspended"),   # late, and the process used no CPU
    (2.0, 1.9, 0.0, [0.0], 0.05, 2.0, "suspended"),
    (2.0, 0.3, 0.0, [0.0], 0.05, 2.0, None),        # woke on time: not suspended
])
def test_the_watchdogs_own_silence(silent: float, late: float, own: float | None,
                                   loops: list[float], cpu: float, wall: float,
                                   kind: str | None) -> None:
    got = d.explain_silence(silent=silent, late=late, min_threshold=T, own_waited=own,
                            loops_waited=loops, cpu_used=cpu, wall=wall)
    assert (got.kind if got else None) == kind


@pytest.mark.parametrize(("spent", "cpu", "stalled"), [
    (0.1, 0.0, False), (0.6, 0.5, False), (0.6, 0.1, True), (3.0, 0.2, True)])
def test_a_round_that_was_stopped(spent: float, cpu: float, stalled: bool) -> None:
    assert d.round_stalled(spent, cpu, T) is stalled


def test_after_a_silence_nothing_is_declared_live_for_a_threshold() -> None:
    """The watchdog could not run (GIL held?) and saw nothing of this loop: a live
    stack now would show the loop after the freeze. Wait a threshold first."""
    st = state()
    d.sent(st, 0.0, None)
    assert d.step(st, obs(3.0, watchdog_silent=2.5)) == []
    assert d.step(st, obs(3.9)) == []
    assert kinds(d.step(st, obs(4.0))) == ["Declared"]


# -- GIL-held freezes nobody saw live -------------------------------------------------------

def test_a_late_beat_with_a_faulthandler_stack_is_a_pinned_late_freeze() -> None:
    st = state()
    d.sent(st, 0.0, None)
    gil = d.GilSeen(busy=True, silent=2.9, read_at=3.0)
    out = d.step(st, obs(3.0, (1, 2.95), gil=gil, watchdog_silent=2.9))
    assert out[:2] == [d.Lag(2.95), d.Late(2.95, 0.0, True)]
    assert "SilentGil" not in kinds(out)  # the same silence is not a second freeze
    assert st.freeze is None  # seen only afterwards: begun and ended in this round


def test_a_late_beat_without_a_stack_is_a_late_freeze_to_pin_on_the_sentinel() -> None:
    st = state()
    d.sent(st, 0.0, None)
    out = d.step(st, obs(3.0, (1, 2.95), watchdog_silent=2.9))
    assert out[:2] == [d.Lag(2.95), d.Late(2.95, 0.0, False)]
    assert "SilentSentinel" not in kinds(out)  # the same silence is not a second freeze


def test_faulthandler_saw_the_loop_busy_with_no_beat_out() -> None:
    st = state()
    st.sent_at = st.last_real_beat = 0.0
    gil = d.GilSeen(busy=True, silent=2.0, read_at=5.0)
    out = d.step(st, obs(5.0, (0, 2.5), gil=gil))
    assert d.SilentGil(2.0, 3.0) in out


@pytest.mark.parametrize(("busy", "silent", "answered", "allow", "slept", "fires"), [
    (True, 2.0, 2.5, 0, False, True),    # answered before the silence began
    (False, 2.0, 2.5, 0, False, False),  # the capture shows the loop idle in its selector
    (True, 0.5, 2.5, 0, False, False),   # silent less than a threshold
    (True, 1.2, 4.4, 0, False, False),   # answered mid-silence: never frozen for a threshold
    (True, 2.0, 2.5, 1, False, False),   # inside allow_blocking()
    # The sentinel saw the loop thread switch after the capture while the watchdog still
    # waited: a busy (uvloop) loop keeping the GIL from the watchdog, not one C call.
    (True, 2.0, 2.5, 0, True, False),
    (True, 0.6, 4.4, 0, True, False),
])
def test_silent_gil_freeze_guards(busy: bool, silent: float, answered: float, allow: int,
                                  slept: bool, fires: bool) -> None:
    st = state()
    gil = d.GilSeen(busy=busy, silent=silent, read_at=5.0, slept=slept)
    out = d.step(st, obs(5.0, (0, answered), gil=gil, allow_depth=allow))
    assert ("SilentGil" in kinds(out)) is fires
    # Slept, and a freeze but for that: a busy loop (the sentinel's dump of it goes).
    assert ("BusySilence" in kinds(out)) is (slept and silent >= T and answered < 3.0)


def test_a_late_beat_is_a_freeze_even_if_the_loop_slept_after_the_capture() -> None:
    """The beat's lag is the loop's own clock: a threshold late is a freeze, whoever starved."""
    st = state()
    d.sent(st, 0.0, None)
    gil = d.GilSeen(busy=True, silent=2.9, read_at=3.0, slept=True)
    out = d.step(st, obs(3.0, (1, 2.95), gil=gil, watchdog_silent=2.9))
    assert out[:2] == [d.Lag(2.95), d.Late(2.95, 0.0, True)]


@pytest.mark.parametrize(("silent", "answered", "fires"), [
    (2.0, 2.5, True), (0.9, 2.5, False), (1.2, 4.4, False)])
def test_silent_watchdog_asks_the_sentinel(silent: float, answered: float, fires: bool) -> None:
    st = state()
    out = d.step(st, obs(5.0, (0, answered), watchdog_silent=silent))
    assert ("SilentSentinel" in kinds(out)) is fires


@pytest.mark.parametrize(("idle", "owns", "need", "held", "ok"), [
    (False, True, True, True, True),
    (False, True, True, False, False),   # owned the GIL in C when sampled, but slept meanwhile
    (False, False, True, True, False), (False, False, False, False, True),
    (False, True, False, False, True),   # a late beat: the beat itself proves the freeze
    (True, True, True, True, False), (True, True, False, False, False)])
def test_pinning_on_the_sentinels_stack(idle: bool, owns: bool, need: bool, held: bool,
                                        ok: bool) -> None:
    assert d.pin_ok(idle, owns, need, held) is ok


@pytest.mark.parametrize(("switches", "held"), [
    ([1041, 1041], True),     # one long C call: not one voluntary switch from first look to py-spy
    ([1041, 1042], False),    # a busy loop handed the GIL over (blocked on it) once: not held
    ([1041, 1390], False),    # a saturated uvloop loop: switches all along
    ([None, 1041], False), ([1041, None], False), (None, False), ([], False),  # unknown
    ([5, 5, 5], False),
])
def test_a_silence_is_a_held_gil_only_if_the_loop_thread_never_slept(
        switches: list[int | None] | None, held: bool) -> None:
    assert d.held_throughout(switches) is held


# -- long freezes, stopped loops ------------------------------------------------------------

@pytest.mark.parametrize(("updates", "due"), [
    (0, 10.0), (1, 60.0), (2, 600.0), (3, 1140.0), (4, 1680.0)])
def test_update_schedule_10_60_600_then_every_last_step(updates: int, due: float) -> None:
    assert d.next_update((10.0, 60.0, 600.0), 0.0, updates) == due


def test_no_updates_without_offsets() -> None:
    assert d.next_update((), 0.0, 0) == math.inf


def test_a_long_freeze_gets_updates_at_the_schedule() -> None:
    st = state()
    d.sent(st, 0.0, None)
    d.step(st, obs(1.0))
    seen = [(t, kinds(d.step(st, obs(t)))) for t in (9.9, 10.0, 10.1, 59.9, 60.0, 600.0)]
    assert [t for t, k in seen if k == ["UpdateDue"]] == [10.0, 60.0, 600.0]
    assert st.freeze is not None and st.freeze.updates == 3


def test_loop_stopped_with_a_beat_out_is_not_a_freeze() -> None:
    st = state()
    d.sent(st, 0.0, None)
    assert d.step(st, obs(2.0, running=False)) == []
    assert not st.pending and st.freezes == 0
    assert d.step(st, obs(9.0, running=False)) == []


def test_loop_stopped_during_a_freeze_ends_it() -> None:
    st = state()
    d.sent(st, 0.0, None)
    (dec,) = d.step(st, obs(1.0))
    assert isinstance(dec, d.Declared)
    assert d.step(st, obs(4.0, running=False)) == [d.Ended(dec.freeze_id, 4.0, "loop stopped")]


def test_loop_closed_ends_the_freeze_and_is_gone() -> None:
    st = state()
    d.sent(st, 0.0, None)
    (dec,) = d.step(st, obs(1.0))
    assert isinstance(dec, d.Declared)
    assert d.step(st, obs(2.5, closed=True, running=False)) == [
        d.Ended(dec.freeze_id, 2.5, "loop closed"), d.Gone()]


def test_blocked_for_grows_from_the_threshold_on() -> None:
    st = state()
    d.sent(st, 0.0, None)
    assert [d.blocked_for(st, t, 0.0) for t in (0.5, 1.0, 3.0)] == [0.0, 1.0, 3.0]


def test_next_wake_aims_at_the_deadline() -> None:
    st = state()
    assert d.next_wake(st, 0.0, 0, 0.0) == I
    d.sent(st, 0.0, None)
    assert d.next_wake(st, 0.95, 0, 0.0) == pytest.approx(0.05)
    assert d.next_wake(st, 0.95, 1, 0.0) == I  # inside allow_blocking: nothing to aim at


# -- rate limit, stalls, parking ---------------------------------------------------------------

@pytest.mark.parametrize(("last", "now", "limited"), [
    (None, 100.0, False), (90.0, 100.0, True), (40.0, 100.0, False), (40.0, 99.9, True)])
def test_rate_limit_per_signature(last: float | None, now: float, limited: bool) -> None:
    assert d.rate_limited(last, now, 60.0) is limited


@pytest.mark.parametrize(("started", "stalled_at", "now", "due"), [
    (0.0, None, 29.9, False), (0.0, None, 30.0, True), (0.0, 30.0, 90.0, False)])
def test_a_unit_is_overdue_once(started: float, stalled_at: float | None, now: float,
                                due: bool) -> None:
    assert d.overdue(started, 30.0, stalled_at, now) is due


def test_stall_scans_run_twice_a_second_while_units_are_open() -> None:
    st = state()
    st.sent_at = 100.0
    scans = [t for t in (0.6, 0.8, 1.1, 1.7) if "ScanStalls" in kinds(
        d.step(st, obs(t, (0, 0.0), has_units=True)))]
    assert scans == [0.6, 1.1, 1.7]


@pytest.mark.parametrize(("kw", "sleep"), [
    ({}, 1.5),                                   # idle in select: until the idle beat
    ({"moved": True}, None),                     # the selector returned since the round
    ({"in_select": False}, None),                # busy
    ({"has_units": True}, None),                 # work in flight: stalls need polling
    ({"allow_depth": 1}, None),
])
def test_parking_an_idle_loop(kw: dict[str, Any], sleep: float | None) -> None:
    st = state()
    st.last_real_beat = 0.0
    args = {"in_select": True, "moved": False, "has_units": False, "allow_depth": 0, **kw}
    assert d.park_for(st, 0.5, **args) == sleep


@pytest.mark.parametrize(("wakes_by", "sleep"), [
    (math.inf, 1.5),     # no timer (epoll_wait's timeout -1): until the idle beat
    (1.2, 0.7),          # its own timer may wake it at 1.2: no later than that
    (0.55, None),        # less than an interval away: keep polling
])
def test_parking_on_a_loop_whose_timer_may_wake_it(wakes_by: float,
                                                   sleep: float | None) -> None:
    st = state()
    assert d.park_for(st, 0.5, in_select=True, moved=False, has_units=False, allow_depth=0,
                      wakes_by=wakes_by) == pytest.approx(sleep)


def _looks(st: d.LoopState, rows: list[tuple[float, d.KernelWait | None, bool]]) -> list[Any]:
    return [d.kernel_idle(st, seen, now, frame_idle) for now, seen, frame_idle in rows]


def test_uvloop_idle_from_the_kernel_view_learns_the_loops_descriptor_first() -> None:
    """uvloop: idle only in an epoll wait on the loop's own descriptor, learnt from two
    looks at one wait (not scheduled in between) with the idle frame on top."""
    st = state()
    w = d.KernelWait(epfd=3, timeout=None, runs=40)
    assert _looks(st, [
        (1.0, w, True),                          # first sighting: it may have just begun
        (1.1, w, True),                          # same wait, not run since: learnt, idle
        (1.2, d.KernelWait(3, None, 41), False),  # ran (a beat), back in its own wait: idle
        (1.3, None, False),                      # another syscall (time.sleep): not idle
        (1.4, d.KernelWait(7, None, 50), False),  # an epoll wait of the app's own: not idle
    ]) == [None, math.inf, math.inf, None, None]
    assert st.loop_epfd == 3


@pytest.mark.parametrize(("rows", "last"), [
    # not learnt while the frame on top is not the idle one
    ([(1.0, d.KernelWait(3, None, 5), False), (1.1, d.KernelWait(3, None, 5), False)], None),
    # it ran between the looks: not one wait, not learnt
    ([(1.0, d.KernelWait(3, None, 5), True), (1.1, d.KernelWait(3, None, 6), True)], None),
    # a poll between ready callbacks (timeout 0) is busy
    ([(1.0, d.KernelWait(3, 0.0, 5), True), (1.1, d.KernelWait(3, 0.0, 5), True)], None),
    # a timer: the wait began after the look before it first showed (0.9): fires >= 1.4
    ([(0.9, None, False), (1.0, d.KernelWait(3, 0.5, 5), True),
      (1.1, d.KernelWait(3, 0.5, 5), True)], 1.4),
])
def test_uvloop_idle_rows(rows: list[tuple[float, d.KernelWait | None, bool]],
                          last: float | None) -> None:
    assert _looks(state(), rows)[-1] == (None if last is None else pytest.approx(last))


def test_no_parking_with_a_beat_out_or_a_freeze() -> None:
    st = state()
    d.sent(st, 0.0, None)
    assert d.park_for(st, 0.5, in_select=True, moved=False, has_units=False,
                      allow_depth=0) is None


@pytest.mark.parametrize(("now", "before", "busy"), [(10, None, False), (10, 8, False),
                                                     (10, 5, True)])
def test_a_selector_returning_often_is_busy(now: int, before: int | None, busy: bool) -> None:
    assert d.busy_selector(now, before) is busy


@pytest.mark.parametrize(("last_ran", "allow_exit", "start"), [
    (None, 0.0, 10.0),    # no selector wrapper (uvloop): from the beat's send
    (9.93, 0.0, 9.93),    # the loop last left select 70 ms before the beat went out
    (10.02, 0.0, 10.02),  # idle at the send, woken by the beat, then blocked
    (9.93, 9.95, 9.95),   # never before an allow_blocking() block ended
])
def test_a_freeze_starts_when_the_loop_last_ran(last_ran: float | None, allow_exit: float,
                                                start: float) -> None:
    st = state()
    d.sent(st, 10.0, None)
    (dec,) = d.step(st, obs(11.5, last_ran=last_ran, allow_exit_at=allow_exit))
    assert isinstance(dec, d.Declared) and dec.start == start
    out = d.step(st, obs(12.1, (1, 12.0)))
    assert d.Ended(dec.freeze_id, pytest.approx(12.0 - start), None) in out
