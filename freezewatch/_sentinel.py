"""The sentinel: a helper process that runs py-spy on us when no Python thread of ours can.

A C call that holds the GIL stops every Python thread of the process, the
watchdog included, so the watchdog cannot run py-spy during such a freeze.
The sentinel is a separate, tiny process (this file run as a script with
``python -I -S``: standard library only, no site, no freezewatch import)
started by install() when it starts the watchdog (``GilLayers.prime``; in a
forked child by the watchdog thread on its first round), one per process.

Shared state is a 512-byte page of anonymous shared memory (``memfd``)
mapped by both sides:

    offset 0   u64  heartbeat counter, bumped by the watchdog every round
    offset 8   f64  stand-down deadline (CLOCK_MONOTONIC, shared by all
                    processes): the watchdog is silent by choice (parked,
                    running py-spy itself, writing a dump)
    offset 16  f64  threshold
    offset 24  u64  captures written by the sentinel
    offset 32  u64  1 while the sentinel's py-spy runs
    offset 40  u64  1 while the sentinel signals loop threads
    offset 48  u64  the watchdog thread's native id
    offset 56  u64  number of loop threads (at most MAX_LOOPS)
    offset 64  u64  signal rounds completed by the sentinel
    offset 72  MAX_LOOPS x (u64 thread ident, u64 native id)
    offset 200 u64  1 while the faulthandler signal is still ours (checked by
                    the watchdog each round: ``_sigcheck.Claim``); 0: never send
    offset 208 u64  the last dump sequence number taken (``SharedSeq``)
    offset 216 u64  generation of ``config.json`` (what the sentinel needs to
                    write dumps: loops, thresholds, dump directories)
    offset 224 u64  dumps written by the sentinel
    offset 232 u64  1 while the watchdog has a freeze open (it writes those dumps)
    offset 240 f64  since when (CLOCK_MONOTONIC) the watchdog was silent at the
                    sentinel's last signal round (written before offset 64)
    offset 256 MAX_LOOPS x u64: each loop's last answered heartbeat (low 48 bits)
                    and how many times the watchdog took over the sentinel's
                    dump of it (``settle``; high 16 bits)

The sentinel writes the dump of a freeze no Python thread can see
(``_sentinel_freeze``, ``_sentinel_dump``; docs/native.md "The dump is on
disk while the freeze lasts") and says where in ``dump.json``; the watchdog
completes that file when it runs again (``dump_of``).

The sentinel wakes when a check is due (half a threshold after the silence
the watchdog announced, 0.05 to 0.5 s at least; docs/core.md "Idle"). When the
counter has not moved for half the threshold and ``/proc`` shows the
watchdog thread neither ran nor waited for a CPU meanwhile (it is blocked:
waiting for the GIL), it sends each loop thread the faulthandler signal
(``_faulthandler``): each writes its own Python stack into the file the
parent shares with the sentinel, under a ``Thread 0x<ident>`` header the
sentinel writes first. No ptrace is needed for this, only the right to
signal our own parent.

When the counter has not moved for ``threshold`` seconds (at least
MIN_SILENCE: on a loaded machine the watchdog can be late by a few hundred
milliseconds without any held GIL, and py-spy pauses the whole process, so
a sentinel that fired on such a delay would itself freeze the application)
it runs py-spy against the parent once (the time limit is enforced right
there, outside the frozen process: SIGINT, then SIGKILL to py-spy's process
group, then SIGCONT to the parent if it was left stopped) and writes
py-spy's raw output to ``native.json`` in a private 0700 directory. The
watchdog takes it from there when it runs again (``take``).

It exits when the parent does: the parent holds the write end of a pipe
(written only to wake the sentinel early, ``resume``); EOF on the read end
means the parent is gone (SIGKILL included). It also exits if it is
re-parented. It ignores SIGINT (a Ctrl-C in the terminal is for the
application).

Under Yama ``ptrace_scope = 1`` the parent names the sentinel with
``PR_SET_PTRACER`` right after spawning it; the permission covers the
sentinel's descendants, i.e. its py-spy.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import mmap
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

from . import _state
from ._sentinel_freeze import CONFIG, REPORT, SLEPT
from ._sentinel_main import (
    _ANSWERED,
    _CONFIG_GEN,
    _LAYOUT,
    _LOOPS_AT,
    _OK_TO_SIGNAL,
    _OPEN,
    _PAIR,
    _SINCE,
    _SIZE,
    MAX_LOOPS,
    RESULT,
)
from ._sentinel_share import (
    SharedSeq,
    _close_in_child,
    _usable,
    remove_stale_dirs,
    unavailable_reason,
)
from ._snapshot.native import allow_ptracer, pyspy_argv

_SEQ_MASK = (1 << 48) - 1  # an answered slot: the heartbeat's low bits, settle() above
_BEAT = struct.Struct("<Qd")  # offset 0: the heartbeat counter and the stand-down deadline
_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sentinel_main.py")
"""The sentinel program, run as a script (``python -I -S``)."""


class Sentinel:
    """Parent side: start, heartbeat, stand-down, results, stop (watchdog thread only)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        self._mm: mmap.mmap | None = None
        self._wfd = -1
        self._dir: str | None = None
        self._count = 0
        self._loops: tuple[tuple[int, int], ...] = ()
        self.limit = 5.0
        self.pyspy = False
        """The sentinel runs py-spy (False: it only signals loop threads)."""
        self._seq: SharedSeq | None = None
        self._config_gen = 0
        # The page's fields as last written: a round rewrites only what changed.
        self._threshold = -1.0
        self._answered: dict[int | None, int] = {}
        self._settled: dict[int | None, int] = {}
        self._flags: dict[int, int] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, threshold: float, pyspy: str | None, limit: float,
              signal_fd: int = -1, signum: int = 0, watchdog_tid: int | None = None) -> bool:
        """Start the process; ``pyspy`` None: no native traces; ``signal_fd`` -1: no
        faulthandler signals (otherwise the file the handler writes to);
        ``watchdog_tid``: the watchdog thread's native id (None: this thread; 0: not
        running yet, ``watchdog_thread`` says it later)."""

        reason = unavailable_reason(pyspy, signal_fd)
        if reason:
            self.error = reason
            return False
        self.pyspy = _usable(pyspy)
        self.limit = limit
        mfd = rfd = -1
        try:
            mfd = os.memfd_create("freezewatch-heartbeat")  # close-on-exec by default
            os.ftruncate(mfd, _SIZE)
            self._mm = mmap.mmap(mfd, _SIZE)
            _LAYOUT.pack_into(self._mm, 0, 0, 0.0, threshold, 0, 0, 0,
                              threading.get_native_id() if watchdog_tid is None
                              else watchdog_tid, 0, 0)
            self._threshold, self._answered, self._flags = threshold, {}, {}
            rfd, self._wfd = os.pipe()  # both non-inheritable; rfd is passed explicitly
            os.set_blocking(self._wfd, False)  # resume() never blocks its caller
            # Not tempfile.mkdtemp on this thread: its first use takes a
            # module lock, and a fork meanwhile would leave the child's
            # watchdog blocked on it. gettempdir() was cached at install.
            self._dir = os.path.join(tempfile.gettempdir(),
                                     f"freezewatch-sentinel-{os.getpid()}-{os.urandom(6).hex()}")
            remove_stale_dirs(tempfile.gettempdir())
            os.mkdir(self._dir, 0o700)
            poll = max(0.05, min(0.5, threshold / 2))
            argv = [sys.executable, "-I", "-S", _MAIN, str(os.getpid()),
                    str(mfd), str(rfd), self._dir, f"{limit:g}", f"{poll:g}",
                    str(signal_fd), str(signum),
                    *(pyspy_argv(str(pyspy), os.getpid()) if self.pyspy else [])]
            fds = (mfd, rfd) if signal_fd < 0 else (mfd, rfd, signal_fd)
            self.proc = subprocess.Popen(argv, pass_fds=fds, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, ValueError) as e:
            self.error = f"the sentinel could not start: {e}"
            self.close()
            return False
        finally:
            for fd in (mfd, rfd):
                if fd >= 0:
                    os.close(fd)
        # Yama: exactly this child (and its py-spy, a descendant) may attach.
        allow_ptracer(self.proc.pid)
        if self._mm is not None:
            self._seq = SharedSeq(self._mm, next(_state.dump_seq) - 1)
            _state.dump_seq = self._seq
        _state.sentinel_pipe_fds.add(self._wfd)
        if "sentinel" not in _state.fork_hooks and hasattr(os, "register_at_fork"):
            _state.fork_hooks.add("sentinel")
            os.register_at_fork(after_in_child=_close_in_child)
        return True

    def beat(self, threshold: float, next_within: float) -> None:
        """One watchdog round: bump the counter, and say the next beat comes within
        ``next_within`` s (silence counts only after that). One or two stores."""
        mm = self._mm
        if mm is not None:
            self._count += 1
            _BEAT.pack_into(mm, 0, self._count, time.monotonic() + next_within)
            if threshold != self._threshold:
                self._threshold = threshold
                struct.pack_into("<d", mm, 16, threshold)

    def watchdog_thread(self, native_id: int | None) -> None:
        """The watchdog thread's native id, once it runs (the sentinel started before it)."""
        if self._mm is not None and native_id:
            struct.pack_into("<Q", self._mm, 48, native_id)

    def set_loops(self, loops: tuple[tuple[int, int], ...]) -> None:
        """The loop threads to signal: (thread ident, native id) pairs."""
        mm = self._mm
        if mm is None or loops == self._loops:
            return
        self._loops, self._answered = loops, {}  # answered(): rewritten at the new places
        loops = loops[:MAX_LOOPS]
        # Pairs first, count last: the sentinel reads the count, then the pairs.
        for i, (ident, native) in enumerate(loops):
            _PAIR.pack_into(mm, _LOOPS_AT + i * _PAIR.size, ident, native)
        struct.pack_into("<Q", mm, 56, len(loops))

    def answered(self, seqs: dict[int | None, int]) -> None:
        """Each loop's last answered heartbeat (by thread ident), once a round
        (written when it changed)."""
        mm = self._mm
        if mm is not None and seqs != self._answered:
            self._answered = seqs
            for i, (ident, _) in enumerate(self._loops[:MAX_LOOPS]):
                struct.pack_into("<Q", mm, _ANSWERED + 8 * i, (seqs.get(ident, 0) & _SEQ_MASK)
                                 | (self._settled.get(ident, 0) & 0xFFFF) << 48)

    def settle(self, ident: int | None) -> None:
        """The watchdog takes over the dump the sentinel wrote for loop ``ident`` in
        the last silence (completes or removes it): the sentinel never writes it
        again. Its slot changes for good (the high bits count these), and the
        sentinel compares it before each refresh (under flag 32) and update."""
        self._settled[ident] = self._settled.get(ident, 0) + 1
        seqs, self._answered = self._answered, {}
        self.answered(seqs)

    def signalling(self) -> bool:
        return self._mm is not None and struct.unpack_from("<Q", self._mm, 40)[0] == 1

    def signalled_since(self) -> float:
        """Since when the watchdog was silent, by the sentinel's clock, at its last
        signal round (0.0: none yet)."""
        return float(struct.unpack_from("<d", self._mm, _SINCE)[0]) if self._mm is not None \
            else 0.0

    def signal_rounds(self) -> int:
        """Signal rounds the sentinel completed (a capture may be waiting when it moves)."""
        return struct.unpack_from("<Q", self._mm, 64)[0] if self._mm is not None else 0

    def wait_signalling(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self.signalling() and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        """The silence announced last is cut short (a parked watchdog woken early, a
        py-spy run over): silence counts from now, and the sentinel, asleep until
        the announced end, is woken to see it (a byte on its pipe)."""
        self.stand_down(0.0)
        if self._wfd >= 0:
            with contextlib.suppress(OSError):  # full (it is being woken anyway) or closed
                os.write(self._wfd, b"!")

    def stand_down(self, seconds: float) -> None:
        """The watchdog is silent by choice for ``seconds`` from now (parked, running
        py-spy itself): silence counts only after that. 0: from now on."""
        if self._mm is not None:
            struct.pack_into("<d", self._mm, 8, time.monotonic() + seconds)

    def configure(self, doc: dict[str, object]) -> None:
        """What the sentinel needs to write dumps itself (``_sentinel_freeze``): written
        to its private directory, then announced (a generation in the shared page)."""
        if self._dir is None or self._mm is None:
            return
        tmp = os.path.join(self._dir, CONFIG + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            os.replace(tmp, os.path.join(self._dir, CONFIG))
        except OSError:
            return
        self._config_gen += 1
        struct.pack_into("<Q", self._mm, _CONFIG_GEN, self._config_gen)

    def freeze_open(self, is_open: bool) -> None:
        """The watchdog has a freeze open (declared live): it writes that freeze's
        dumps, the sentinel writes none."""
        self._flag(_OPEN, 1 if is_open else 0)

    def allow_signal(self, ok: bool) -> None:
        """Whether the sentinel may send the faulthandler signal (``_sigcheck``)."""
        self._flag(_OK_TO_SIGNAL, 1 if ok else 0)

    def _flag(self, at: int, value: int) -> None:
        """A u64 of the page only the parent writes, stored when it changed."""
        if self._mm is not None and self._flags.get(at) != value:
            self._flags[at] = value
            struct.pack_into("<Q", self._mm, at, value)

    def dump_of(self, ident: int | None, since: float, wait: float) -> tuple[str, float] | None:
        """The dump the sentinel wrote for loop thread ``ident`` during the silence that
        began at ``since`` or later (monotonic): (.json path, detected_at); None if it
        wrote none. Waits up to ``wait`` s for a write or py-spy run in progress."""
        if self._dir is None or ident is None:
            return None
        deadline = time.monotonic() + wait
        while self.capturing() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            with open(os.path.join(self._dir, REPORT), encoding="utf-8") as f:
                report = json.load(f)
        except (OSError, ValueError):
            return None
        for r in reversed(report if isinstance(report, list) else []):
            if (isinstance(r, dict) and r.get("ident") == ident
                    and float(r.get("taken_at", 0.0)) >= since - 0.05
                    and isinstance(r.get("path"), str)):
                return r["path"], float(r.get("detected_at", time.time()))
        return None

    def slept(self, since: float) -> frozenset[int]:
        """Loop threads (idents) the sentinel saw switch after faulthandler's capture
        in the silence that began at ``since`` or later (``Dumper._note_slept``)."""
        if self._dir is None:
            return frozenset()
        try:
            with open(os.path.join(self._dir, SLEPT), encoding="utf-8") as f:
                doc = json.load(f)
            if float(doc["since"]) >= since - 0.05:
                return frozenset(int(i) for i in doc["idents"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return frozenset()

    def capturing(self) -> bool:
        return self._mm is not None and struct.unpack_from("<Q", self._mm, 32)[0] == 1

    def take(self, since: float, wait: float) -> dict[str, object] | None:
        """The sentinel's capture taken after ``since`` (monotonic), waiting up to
        ``wait`` s for one in progress; removed once taken."""
        if self._dir is None:
            return None
        deadline = time.monotonic() + wait
        while self.capturing() and time.monotonic() < deadline:
            time.sleep(0.02)
        path = os.path.join(self._dir, RESULT)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
            os.unlink(path)
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or float(doc.get("taken_at", 0.0)) < since - 0.05:
            return None  # left from an earlier stall
        return doc

    def close(self) -> None:
        if self._wfd >= 0:
            _state.sentinel_pipe_fds.discard(self._wfd)
            os.close(self._wfd)  # EOF: the sentinel exits on its own
            self._wfd = -1
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._seq is not None:
            if _state.dump_seq is self._seq:  # go on from the shared count
                _state.dump_seq = itertools.count(self._seq.last() + 1)
            self._seq = None
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
