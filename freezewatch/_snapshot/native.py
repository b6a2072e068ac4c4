"""Native (C-level) stacks from py-spy, under a time limit enforced outside the process.

``py-spy dump`` ptrace-stops the whole process while it reads it, the
watchdog thread included, so a py-spy that hangs cannot be killed by a
timer of ours. The limit is enforced by a small supervisor process (Python,
``-I -S``) that starts py-spy in its own process group, sends SIGINT (py-spy
detaches) and then SIGKILL to the group, and finally sends SIGCONT to the
target if the killed tracer left it stopped.

Yama ``ptrace_scope = 1`` (Ubuntu, many containers) lets a process trace
only its descendants, and py-spy is our descendant, not our ancestor. The
target may name one process (and its descendants) allowed to trace it:
``prctl(PR_SET_PTRACER, pid)``. The pid is known only after the spawn, so
the supervisor waits for a go byte on its stdin: we spawn it, name it with
PR_SET_PTRACER, then send the byte, and only then does it start py-spy (its
child, hence allowed). There is one such slot per process; afterwards it is
handed back to the sentinel (see ``_sentinel.py``), or cleared.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from .model import Native, NativeFrame, NativeThread

PR_SET_PTRACER = 0x59616D61  # "Yama": <linux/prctl.h>
PTRACE_ADVICE = (
    "ptrace not permitted: run with CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE) "
    "or set kernel.yama.ptrace_scope=0"
)
MAX_NATIVE_FRAMES = 200
MAX_NATIVE_THREADS = 1000
MAX_OUTPUT = 256 * 1024
"""Bytes of py-spy output kept (stdout; stderr likewise): a process with very many
threads or a misbehaving py-spy must not make a dump of tens of megabytes. Beyond
it the output is drained and dropped, and the native part says so (ok: false)."""
TIMED_OUT = 124

# argv: limit, target pid, py-spy argv... Waits for one byte on stdin (the
# go signal, sent after PR_SET_PTRACER named this process), runs py-spy in a
# new process group so a wrapper script and its children die together.
_SUPERVISOR = """\
import os, signal, subprocess, sys
limit = float(sys.argv[1]); target = int(sys.argv[2])
if not sys.stdin.buffer.read(1):
    sys.exit(125)
p = subprocess.Popen(sys.argv[3:], start_new_session=True, stdin=subprocess.DEVNULL)
code = None
try:
    code = p.wait(limit)
except subprocess.TimeoutExpired:
    for sig, grace in ((signal.SIGINT, 1.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(p.pid, sig)
        except OSError:
            pass
        try:
            p.wait(grace)
            break
        except subprocess.TimeoutExpired:
            pass
    code = 124
try:
    with open(f"/proc/{target}/stat", "rb") as f:
        if f.read().rsplit(b")", 1)[1].split()[0] in (b"T", b"t"):
            os.kill(target, signal.SIGCONT)
except (OSError, IndexError):
    pass
sys.exit(code)
"""


def find_pyspy(configured: str = "") -> str | None:
    """py-spy from the setting, else next to the running interpreter, else PATH."""
    if configured:
        return configured
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("py-spy")


def yama_scope() -> int | None:
    """The kernel's Yama ptrace_scope (0-3), or None where there is no Yama."""
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def allow_ptracer(pid: int) -> bool:
    """Let exactly ``pid`` (and its descendants) ptrace this process under Yama.

    ``pid=0`` clears the permission. Never PR_SET_PTRACER_ANY. Returns False
    where there is no Yama (the kernel answers EINVAL; nothing to allow) or
    no libc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(PR_SET_PTRACER, ctypes.c_ulong(pid), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def capture_native(pid: int, pyspy: str | None, limit: float, *, source: str = "watchdog",
                   ptracer_after: int = 0) -> Native:
    """Run ``py-spy dump --native --json`` on ``pid``; never raises.

    ``ptracer_after``: the pid that holds the PR_SET_PTRACER slot once this
    run is over (the sentinel's), 0 to clear it.
    """
    if not pyspy:
        return Native(False, error=(f"py-spy not found next to {sys.executable} or on PATH: "
                                    "pip install py-spy"), source=source)
    if not os.access(pyspy, os.X_OK):
        return Native(False, error=f"py-spy not found at {pyspy!r}: pip install py-spy",
                      source=source)
    argv = [sys.executable, "-I", "-S", "-c", _SUPERVISOR, f"{limit:g}", str(pid),
            *pyspy_argv(pyspy, pid)]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as e:
        return Native(False, error=f"py-spy could not run: {e}", source=source)
    try:
        allow_ptracer(proc.pid)
        # The inner limit is the supervisor's; this one is only a backstop
        # for the supervisor itself (it is not ptrace-stopped, we may be).
        out, err, over = read_bounded(proc, b"g", limit + 10, MAX_OUTPUT)
    finally:
        allow_ptracer(ptracer_after)
        resume_if_stopped()
    if over:
        return Native(False, error=f"py-spy output exceeded {MAX_OUTPUT // 1024} kB and was "
                      "dropped", source=source)
    return native_from_output(proc.returncode, out.decode(errors="replace"),
                              err.decode(errors="replace"), limit, source)


def read_bounded(proc: subprocess.Popen[bytes], data: bytes, timeout: float,
                 limit: int) -> tuple[bytes, bytes, bool]:
    """``proc.communicate(data, timeout)`` keeping at most ``limit`` bytes of each
    stream (the rest is read and dropped, so the child never blocks on a full
    pipe); kills ``proc`` at the timeout. Returns (stdout, stderr, over limit)."""
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    if stdin is None or stdout is None or stderr is None:
        raise ValueError("read_bounded needs stdin, stdout and stderr pipes")
    try:
        stdin.write(data)
        stdin.close()
    except OSError:  # it exited already
        pass
    out, err = bytearray(), bytearray()
    bufs = {stdout.fileno(): out, stderr.fileno(): err}
    over = False
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                if len(buf) + len(chunk) > limit:
                    over = True
                    chunk = chunk[: max(0, limit - len(buf))]
                buf += chunk
    stdout.close()
    stderr.close()
    proc.wait()
    return bytes(out), bytes(err), over


def pyspy_argv(pyspy: str, pid: int) -> list[str]:
    return [pyspy, "dump", "--pid", str(pid), "--native", "--json"]


def native_from_output(code: int | None, out: str, err: str, limit: float,
                       source: str) -> Native:
    """py-spy's exit status and output -> a Native record (shared with the sentinel)."""
    if code in (TIMED_OUT, -signal.SIGKILL):
        return Native(False, error=(f"py-spy timed out after {limit:g} s and was killed "
                                    "(SIGINT, then SIGKILL)"), source=source)
    if len(out) > MAX_OUTPUT:
        return Native(False, error=f"py-spy output exceeded {MAX_OUTPUT // 1024} kB and was "
                      "dropped", source=source)
    if code != 0 or not out.strip():
        lines = (err or out).strip().splitlines()
        msg = lines[-1] if lines else f"exit status {code}"
        if "ermission denied" in msg or "not permitted" in msg or "EPERM" in msg:
            scope = yama_scope()
            where = f" (kernel.yama.ptrace_scope={scope})" if scope else ""
            msg = f"{msg}{where}; {PTRACE_ADVICE}"
        return Native(False, error=f"py-spy failed: {msg}", source=source)
    try:
        threads = parse_pyspy_json(out)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        # An old py-spy without --json support, or output we do not know: not a
        # native stack we can vouch for. The text stays (bounded) for a person.
        return Native(False, text=out, error="py-spy output is not the JSON expected from "
                      "'py-spy dump --json' (an old py-spy?)", source=source)
    return Native(True, text=render_text(threads), threads=threads, source=source)


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def parse_pyspy_json(text: str) -> tuple[NativeThread, ...]:
    """``py-spy dump --json`` (a list of threads, frames innermost first) -> records."""
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError("py-spy JSON: not a list")
    out: list[NativeThread] = []
    for t in raw[:MAX_NATIVE_THREADS]:
        if not isinstance(t, dict):
            raise ValueError("py-spy JSON: a thread is not an object")
        frames = []
        for f in t.get("frames") or []:
            frames.append(NativeFrame(
                function=str(f.get("name") or "?"),
                file=str(f.get("filename") or f.get("short_filename") or "?"),
                line=_int(f.get("line")) or 0,
                native=f.get("module") is not None,
            ))
        frames = frames[:MAX_NATIVE_FRAMES]
        frames.reverse()  # outermost first, like every other stack in a dump
        out.append(NativeThread(
            thread_id=_int(t.get("thread_id")), os_thread_id=_int(t.get("os_thread_id")),
            name=t.get("thread_name") if isinstance(t.get("thread_name"), str) else None,
            owns_gil=bool(t.get("owns_gil")), active=bool(t.get("active")),
            frames=tuple(frames),
        ))
    return tuple(out)


def frame_text(f: NativeFrame) -> str:
    if f.native:
        return f"{f.function} ({os.path.basename(f.file)})"
    return f"{f.function} ({f.file}:{f.line})"


def render_text(threads: tuple[NativeThread, ...]) -> str:
    """A py-spy-like text (innermost first) for people and the .txt report."""
    lines: list[str] = []
    for t in threads:
        tid = f"0x{t.thread_id:x}" if t.thread_id is not None else "?"
        flags = ", ".join(x for x, on in (("active", t.active), ("holds the GIL", t.owns_gil))
                          if on)
        lines.append(f"Thread {tid} {t.name or ''} (os tid {t.os_thread_id})"
                     + (f" [{flags}]" if flags else ""))
        lines.extend(f"    {frame_text(f)}" for f in reversed(t.frames))
    return "\n".join(lines)


def resume_if_stopped() -> bool:
    """SIGCONT ourselves if a killed tracer left any of our threads stopped."""
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
            if state in (b"T", b"t"):
                os.kill(os.getpid(), signal.SIGCONT)
                return True
    except (OSError, IndexError):
        pass  # no /proc (macOS): nothing to check
    return False
