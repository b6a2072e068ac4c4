"""Helpers for the metrics tests: free ports, HTTP GETs, the metrics_app subprocess."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = Path(__file__).with_name("metrics_app.py")
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NO_PROMETHEUS = ("Debian's prometheus package is not installed (promtool/prometheus missing); "
                 ".ci/run installs it with apt-get")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound and released by the kernel)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of an HTTP GET; error statuses are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sample(text: str, name: str, loop: str = "app") -> float | None:
    """The value of ``name{loop="..."}`` in a text exposition, None if absent."""
    prefix = f'{name}{{loop="{loop}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def start_app(dump_dir: Path, port: int = 0, env: dict[str, str] | None = None,
              initial_freeze: float = 0.0) -> subprocess.Popen[str]:
    """Start tests/metrics_app.py; read its ``ready`` line with ``wait_ready``."""
    return subprocess.Popen(
        [sys.executable, str(APP), "--port", str(port), "--dump-dir", str(dump_dir),
         "--initial-freeze", str(initial_freeze)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=str(ROOT),
    )


def wait_ready(app: subprocess.Popen[str]) -> int:
    """Block until the app printed ``ready PID``; returns the PID."""
    assert app.stdout is not None
    line = app.stdout.readline()
    assert line.startswith("ready "), f"app did not start: {line!r} (exit {app.poll()})"
    return int(line.split()[1])


def command(app: subprocess.Popen[str], line: str) -> None:
    assert app.stdin is not None
    app.stdin.write(line + "\n")
    app.stdin.flush()


def stop(app: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """Ask the app to exit; kill it if it does not."""
    if app.poll() is None:
        try:
            command(app, "exit")
            app.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            app.kill()
            app.wait(timeout)
    for pipe in (app.stdin, app.stdout):
        if pipe is not None and not pipe.closed:
            with contextlib.suppress(OSError):  # stdin: the app is gone, the buffer unread
                pipe.close()
