"""Real multi-worker servers for tests/test_workers*.py: start, freeze each worker, stop.

Every server runs tests/workers_app.py on 127.0.0.1 on free ports, in its own
process group (so the supervisor and its workers are stopped together), with
its stderr in a file the test reads (freezewatch's events go there).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from conftest import wait_for
from metrics_support import ROOT, free_port, get

TESTS = ROOT / "tests"
APP = TESTS / "workers_app.py"
BIN = Path(sys.executable).parent
FAST_ENV = {
    "FREEZEWATCH_THRESHOLD": "0.3", "FREEZEWATCH_INTERVAL": "0.05",
    "FREEZEWATCH_NATIVE": "0", "FREEZEWATCH_SENTINEL": "0",
    "FREEZEWATCH_DUMP_RATE_WINDOW": "0", "FREEZEWATCH_LIVENESS_LIMIT": "0.5",
    "FREEZEWATCH_SYSTEMD_WATCHDOG": "0",
}


class Server:
    """One server process group and what it was started with."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], tmp: Path,
                 port: int, metrics_port: int) -> None:
        self.port, self.metrics_port, self.tmp = port, metrics_port, tmp
        self.before: set[Path] = set()  # dumps there before freeze_each_worker()
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.dump_dir = Path(env.get("FREEZEWATCH_DUMP_DIR", tmp / "dumps"))
        self.stderr_path = tmp / "stderr.txt"
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("FREEZEWATCH_", "PROMETHEUS_MULTIPROC"))}
        full = {**clean, "FREEZEWATCH_DUMP_DIR": str(self.dump_dir), **FAST_ENV,
                "WORKERS_MARK_DIR": str(self.marks), "PYTHONPATH": str(TESTS), **env}
        self._err = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(list(argv), env=full, cwd=str(tmp),
                                     stdout=subprocess.DEVNULL, stderr=self._err,
                                     start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def metrics(self, path: str = "/metrics") -> tuple[int, str]:
        return get(f"http://127.0.0.1:{self.metrics_port}{path}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def started_pids(self) -> set[int]:
        return {int(p.name.split("-")[1]) for p in self.marks.glob("lifespan-*")}

    def wait_workers(self, n: int = 2, timeout: float = 30.0) -> set[int]:
        """Wait until ``n`` workers ran the app's lifespan and answer requests."""
        def ready() -> bool:
            assert self.proc.poll() is None, f"server exited:\n{self.stderr()}"
            if len(self.started_pids()) < n:
                return False
            with contextlib.suppress(OSError):
                return get(self.url("/pid"), timeout=2)[0] == 200
            return False

        wait_for(ready, timeout=timeout, every=0.1)
        return self.started_pids()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # The workers of the group (the supervisor may have gone first).
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._err.close()


@contextlib.contextmanager
def server(kind: str, tmp: Path, env: dict[str, str] | None = None,
           zero_code: bool = False) -> Iterator[Server]:
    """``kind``: "uvicorn" (``--workers 2``) or "gunicorn" (UvicornWorker, ``-w 2 --preload``)."""
    port, metrics_port = free_port(), free_port()
    if kind == "uvicorn":
        argv = [str(BIN / "uvicorn"), "workers_app:app", "--host", "127.0.0.1",
                "--port", str(port), "--workers", "2", "--log-level", "warning"]
    else:
        argv = [str(BIN / "gunicorn"), "workers_app:app", "-k", "uvicorn.workers.UvicornWorker",
                "-w", "2", "--preload", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                "--graceful-timeout", "2"]
    full_env = dict(env or {})
    if zero_code:
        argv = [str(BIN / "freezewatch"), "run", "--metrics-port", str(metrics_port), "--", *argv]
    else:
        full_env.setdefault("FREEZEWATCH_METRICS_PORT", str(metrics_port))
    s = Server(argv, full_env, tmp, port, metrics_port)
    try:
        yield s
    finally:
        s.stop()


def freeze_each_worker(s: Server, seconds: float = 2.0,
                       during: Any = None) -> tuple[list[int], Any]:
    """Freeze both workers at once (the second request goes to the worker that is
    not frozen: a frozen one accepts nothing); ``during()`` runs while both are
    frozen. Returns the pids that answered and what ``during`` returned."""
    answers: list[int] = []
    s.before = set(s.dump_dir.glob("freeze-*.json"))

    def request() -> None:
        status, body = get(s.url(f"/freeze?seconds={seconds}"), timeout=seconds + 10)
        assert status == 200, body
        answers.append(int(body))

    def frozen_pids() -> set[int]:  # from the names of the freeze dumps written since
        return {int(p.name.split("-")[2]) for p in s.dump_dir.glob("freeze-*.json")
                if p not in s.before}

    threads = [threading.Thread(target=request) for _ in range(2)]
    threads[0].start()
    # The second request once the first worker is frozen (dumped): it accepts
    # nothing then, so the other worker gets it.
    wait_for(lambda: len(frozen_pids()) >= 1, timeout=10, every=0.05)
    threads[1].start()
    wait_for(lambda: len(frozen_pids()) >= 2, timeout=10, every=0.05)
    time.sleep(0.4)  # both frozen for > liveness_limit (0.5 s) now
    seen = during() if during is not None else None
    for t in threads:
        t.join(seconds + 15)
    return answers, seen


def freeze_dumps(dump_dir: Path, before: set[Path] | frozenset[Path] = frozenset()
                 ) -> dict[int, dict[str, Any]]:
    """pid -> the JSON of that worker's first freeze dump not in ``before`` (a
    worker's start-up may freeze too: uvicorn imports the app on its loop)."""
    out: dict[int, dict[str, Any]] = {}
    for p in sorted(set(dump_dir.glob("freeze-*.json")) - set(before)):
        doc = json.loads(p.read_text())
        if doc["kind"] == "freeze":
            out.setdefault(int(doc["pid"]), doc | {"_path": str(p)})
    return out
