"""The kernel's view of the frozen loop thread and each freeze's ``cause`` (issue 3, point 5)."""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, dumps
from core_support import pin

import freezewatch
from freezewatch._snapshot import cause, cpu, procview

BLOCK = 1.5  # seconds the loop thread is blocked; threshold 0.3

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="/proc/self/task is Linux-only")


def _freeze_doc(dump_dir: Path, events: Any, block: Callable[[], None]) -> dict[str, Any]:
    """Run ``block`` on a watched loop's thread; the first freeze dump's JSON."""

    async def main() -> None:
        freezewatch.install(threshold=0.3, interval=0.05, dump_dir=str(dump_dir), native=False)
        await asyncio.sleep(0.2)
        block()
        await asyncio.sleep(0.3)

    asyncio.run(main())
    events.wait("freeze_ended", timeout=20)
    first = dumps(dump_dir)[0]
    return assert_contract(first)


class _StallingServer:
    """A TCP server on 127.0.0.1 that sends a status line, then nothing until released."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="stalling-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            self.release.wait(BLOCK)  # the body never comes in time
            conn.sendall(b"\r\n")

    def close(self) -> None:
        self.release.set()
        self.thread.join(5)
        self.sock.close()


@linux_only
@pytest.mark.parametrize(("timeout", "calls"), [(None, ("recvfrom", "read")),
                                                (30.0, ("poll", "ppoll"))])
def test_blocking_socket_read_names_syscall_fd_and_peer(
        dump_dir: Path, events: Any, timeout: float | None, calls: tuple[str, ...]) -> None:
    """A recv() stuck after the status line: cause 'blocked syscall', the read
    syscall (poll first with a socket timeout), its descriptor and the server's
    address, and a Cause line in the .txt."""
    server = _StallingServer()
    client = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    fd, local = client.fileno(), f"127.0.0.1:{client.getsockname()[1]}"
    try:
        def block() -> None:
            assert client.recv(64).startswith(b"HTTP/1.1 200")
            client.recv(64)  # pin: blocked-read

        doc = _freeze_doc(dump_dir, events, block)
    finally:
        client.close()
        server.close()
    assert doc["blocking_frame"]["line"] == pin(__file__, "blocked-read").line
    assert doc["cause"] == "blocked syscall"
    k = doc["kernel"]
    assert k["ok"] is True, k
    assert k["syscall"] in calls, k
    assert k["fd"] == fd, k
    assert k["fd_target"].startswith("socket:["), k
    assert k["tcp"]["peer"] == f"127.0.0.1:{server.port}", k
    assert k["tcp"]["local"] == local, k
    assert k["cpu_growing"] is False, k
    assert f"\u2192 127.0.0.1:{server.port}" in doc["kernel_summary"]
    txt = Path(str(dumps(dump_dir)[0])[:-5] + ".txt").read_text()
    (cause,) = [ln for ln in txt.splitlines() if ln.startswith("Cause:")]
    assert cause.startswith(f"Cause:       blocked syscall \u2014 blocked in {k['syscall']}(fd ")
    assert f"TCP {local} \u2192 127.0.0.1:{server.port}" in cause


@linux_only
def test_pure_python_spin_is_cpu(dump_dir: Path, events: Any) -> None:
    """A pure-Python busy loop on the loop thread: cause 'CPU spin', CPU time growing."""

    def block() -> None:
        end = time.monotonic() + BLOCK
        while time.monotonic() < end:  # pin: spin
            pass

    doc = _freeze_doc(dump_dir, events, block)
    assert doc["blocking_frame"]["line"] == pin(__file__, "spin").line
    assert doc["cause"] == "CPU spin", doc["kernel"]
    assert doc["kernel"]["cpu_growing"] is True, doc["kernel"]
    assert doc["kernel"]["cpu_delta"] > 0


@linux_only
def test_lock_held_elsewhere_is_lock_wait(dump_dir: Path, events: Any) -> None:
    """threading.Lock held by another thread: cause 'lock wait' (futex), no CPU."""
    lock = threading.Lock()
    held = threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            time.sleep(BLOCK)

    def block() -> None:
        threading.Thread(target=holder, name="lock-holder", daemon=True).start()
        held.wait(5)
        with lock:  # pin: lock-wait
            pass

    doc = _freeze_doc(dump_dir, events, block)
    assert doc["blocking_frame"]["line"] == pin(__file__, "lock-wait").line
    assert doc["cause"] == "lock wait", doc["kernel"]
    assert doc["kernel"]["syscall"] == "futex"
    assert doc["kernel"]["cpu_growing"] is False


def test_import_in_progress(dump_dir: Path, events: Any, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that blocks at import time on the loop thread: cause 'import in progress'."""
    (tmp_path / "fw_slow_import_mod.py").write_text(f"import time\ntime.sleep({BLOCK})\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fw_slow_import_mod", raising=False)

    def block() -> None:
        import fw_slow_import_mod  # type: ignore[import-not-found]  # noqa: F401

    doc = _freeze_doc(dump_dir, events, block)
    assert doc["blocking_frame"]["file"].endswith("fw_slow_import_mod.py")
    assert doc["cause"] == "import in progress"


class _SlowFinalizer:
    """Part of a reference cycle whose __del__ blocks: runs inside a collection."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(BLOCK)  # pin: finalizer


def test_garbage_collection(dump_dir: Path, events: Any) -> None:
    """A collection on the loop thread whose finalizer blocks: cause 'garbage collection'."""

    def block() -> None:
        _SlowFinalizer()
        gc.collect()

    doc = _freeze_doc(dump_dir, events, block)
    assert doc["blocking_frame"]["line"] == pin(__file__, "finalizer").line
    assert doc["cause"] == "garbage collection"


def test_without_proc_the_field_says_so() -> None:
    """Where /proc is missing the view is not ok, says why, and the CPU clock still classifies."""
    me = threading.get_ident()
    before = cpu.cpu_sample(me)
    view = procview.read_view(12345, before, cpu.cpu_sample(me), proc="/nonexistent-proc")
    assert view.ok is False
    assert view.error is not None and "/nonexistent-proc is not available" in view.error
    assert cause.classify(view, ()) in ("blocked syscall", "CPU spin", "unknown")


def test_tcp_addresses_decoded() -> None:
    """/proc/net/tcp{,6} hex addresses decode to dotted and bracketed forms."""
    assert procview._endpoint("0100007F:1F90") == "127.0.0.1:8080"
    assert procview._endpoint("00000000000000000000000001000000:0050") == "[::1]:80"
    assert procview._endpoint("0000000000000000FFFF00000100007F:1F90") == "127.0.0.1:8080"


@linux_only
def test_forked_child_kernel_view_names_syscall_and_peer(tmp_path: Path) -> None:
    """gunicorn-style: install() at import, os.fork(), the child's loop blocks in
    recv(): its dump has the child's own thread's syscall and the TCP peer (threading
    keeps the parent's native id for the forking thread after a fork)."""
    dump_dir = tmp_path / "dumps"
    script = tmp_path / "preload.py"
    script.write_text(f"""
import asyncio, os, socket, sys, threading, time
import freezewatch

freezewatch.install(threshold=0.3, interval=0.05, dump_dir={str(dump_dir)!r}, native=False)
server = socket.create_server(("127.0.0.1", 0))
port = server.getsockname()[1]
pid = os.fork()
if pid == 0:
    async def main():
        await asyncio.sleep(0.2)
        client = socket.create_connection(("127.0.0.1", port))
        client.recv(64)  # pin: child-read
        await asyncio.sleep(0.3)
    asyncio.run(main())
    os._exit(0)
conn, _ = server.accept()
time.sleep(1.2)  # the child's read waits for this long
conn.sendall(b"late")
_, status = os.waitpid(pid, 0)
print(port, status, pid)
""")
    proc = subprocess.run([sys.executable, "-W", "error", str(script)], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    port, status, child = proc.stdout.split()
    assert status == "0", proc.stderr
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    assert doc["pid"] == int(child)  # the child's own dump
    assert doc["blocking_frame"]["line"] == pin(script, "child-read").line
    k = doc["kernel"]
    assert k["ok"] is True and k["syscall"] in ("recvfrom", "read"), k
    assert k["tcp"]["peer"] == f"127.0.0.1:{port}", k
