"""Native (C-level) stacks from py-spy, under a time limit enforced outside the process.

``py-spy dump`` ptrace-stops the whole process while it reads it, the
watchdog thread included, so a py-spy that hangs cannot be killed by a
timer of ours: the limit is enforced by a separate process (coreutils
``timeout``, or a tiny Python supervisor where that is missing) that sends
SIGINT (py-spy detaches) and then SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

from .model import Native

_LIMIT_CODE = """\
import signal, subprocess, sys
limit = float(sys.argv[1]); p = subprocess.Popen(sys.argv[2:])
try:
    sys.exit(p.wait(limit))
except subprocess.TimeoutExpired:
    p.send_signal(signal.SIGINT)
    try:
        p.wait(1)
    except subprocess.TimeoutExpired:
        p.kill(); p.wait()
    sys.exit(124)
"""
_TIMED_OUT = {124, 137, -9}
_PTRACE_ADVICE = (
    "ptrace not permitted: run with CAP_SYS_PTRACE (docker: --cap-add SYS_PTRACE) "
    "or set kernel.yama.ptrace_scope=0"
)


def find_pyspy(configured: str = "") -> str | None:
    """py-spy from the setting, else next to the running interpreter, else PATH."""
    if configured:
        return configured
    here = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if os.access(here, os.X_OK):
        return here
    return shutil.which("py-spy")


def limited_argv(argv: list[str], limit: float) -> list[str]:
    """``argv`` wrapped so that an outside process kills it after ``limit`` seconds."""
    timeout = shutil.which("timeout")
    if timeout:
        return [timeout, "--signal=INT", "--kill-after=1", f"{limit:g}", *argv]
    return [sys.executable, "-I", "-c", _LIMIT_CODE, f"{limit:g}", *argv]


def capture_native(pid: int, pyspy: str | None, limit: float) -> Native:
    """Run ``py-spy dump --native`` on ``pid``; never raises."""
    if not pyspy:
        return Native(
            False,
            error=f"py-spy not found next to {sys.executable} or on PATH: pip install py-spy",
        )
    argv = limited_argv([pyspy, "dump", "--pid", str(pid), "--native"], limit)
    try:
        # The inner timeout is only a backstop for the supervisor itself.
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace",
            stdin=subprocess.DEVNULL, timeout=limit + 10,
        )
    except FileNotFoundError:
        return Native(False, error=f"py-spy not found at {pyspy!r}: pip install py-spy")
    except (OSError, subprocess.SubprocessError) as e:
        return Native(False, error=f"py-spy could not run: {e}")
    finally:
        resume_if_stopped()
    if proc.returncode in _TIMED_OUT:
        return Native(False, text=proc.stdout or None, error=f"py-spy timed out after {limit:g} s")
    if proc.returncode != 0 or not proc.stdout.strip():
        err = (proc.stderr or proc.stdout).strip().splitlines()
        msg = err[-1] if err else f"exit status {proc.returncode}"
        if "ermission denied" in msg or "not permitted" in msg:
            msg = f"{msg}; {_PTRACE_ADVICE}"
        return Native(False, text=proc.stdout or None, error=f"py-spy failed: {msg}")
    return Native(True, text=proc.stdout)


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
