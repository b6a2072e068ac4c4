"""Real freezes on real loops (asyncio and uvloop), each pinned to its line in this file."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import dumps, only_dump, wait_for
from core_support import (
    FAST,
    LOOP_FACTORIES,
    LoopFactory,
    assert_frame_is,
    pin,
    release_when_dumped,
    run_loop,
)

import freezewatch
from freezewatch._snapshot.model import NATIVE_PENDING


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_time_sleep_pinned(loop_factory: LoopFactory, dump_dir: Path, events: Any) -> None:
    """A time.sleep on the loop thread: blocking and app frame are this file's sleep line."""

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        time.sleep(1.0)  # pin: sleep
        await asyncio.sleep(0.1)

    run_loop(loop_factory, main)
    ended = events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    expected = pin(__file__, "sleep")
    assert_frame_is(doc["blocking_frame"], expected)
    assert_frame_is(doc["app_frame"], expected)
    assert doc["loop"]["thread_name"] == threading.main_thread().name
    assert doc["current_task"] is not None
    assert ended["seconds"] >= 0.5

    # The .txt reads like a crash report: the headline, then the exact line.
    lines = Path(str(dumps(dump_dir)[0])[: -len(".json")] + ".txt").read_text().splitlines()
    assert lines[0].startswith("FREEZE: event loop 'MainThread' blocked for ")
    blocked = next(ln for ln in lines if ln.startswith("Blocked at:"))
    assert f"{expected.file}:{expected.line} in " in blocked


def _stalling_http_server(release: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """A server on 127.0.0.1 that sends a status line and headers, then withholds the body."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            release.wait(15)
            conn.sendall(b"hello")

    t = threading.Thread(target=serve, name="stalling-server", daemon=True)
    t.start()
    return srv, t


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_socket_read_pinned(loop_factory: LoopFactory, dump_dir: Path, events: Any) -> None:
    """A body read stalled after the status line: blocked in socket.py, app line is our read."""
    release = threading.Event()
    srv, server = _stalling_http_server(release)
    release_when_dumped(dump_dir, release.set)

    async def main() -> bytes:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        with socket.create_connection(srv.getsockname()) as sock, sock.makefile("rb") as f:
            assert f.readline() == b"HTTP/1.1 200 OK\r\n"
            while f.readline() != b"\r\n":
                pass
            body = f.read(5)  # pin: socket-read
        await asyncio.sleep(0.1)
        return body

    try:
        assert run_loop(loop_factory, main) == b"hello"
    finally:
        server.join(5)
        srv.close()
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    bf = doc["blocking_frame"]
    assert bf["file"] == socket.__file__
    assert bf["function"].endswith("readinto")
    assert "recv_into" in bf["code"]
    assert_frame_is(doc["app_frame"], pin(__file__, "socket-read"))


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_lock_held_elsewhere_pinned(loop_factory: LoopFactory, dump_dir: Path,
                                    events: Any) -> None:
    """Waiting for a threading.Lock another thread holds is pinned to this file's acquire line."""
    lock = threading.Lock()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            held.set()
            release.wait(15)

    t = threading.Thread(target=holder, name="lock-holder", daemon=True)
    t.start()
    assert held.wait(5)
    release_when_dumped(dump_dir, release.set)

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        lock.acquire(timeout=15)  # pin: lock
        lock.release()

    run_loop(loop_factory, main)
    t.join(5)
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    expected = pin(__file__, "lock")
    assert_frame_is(doc["blocking_frame"], expected)
    assert_frame_is(doc["app_frame"], expected)
    # The thread holding the lock is in the dump, sitting in its own code.
    (other,) = [th for th in doc["threads"] if th["name"] == "lock-holder"]
    assert any(f["file"] == __file__ and f["code"] == "release.wait(15)"
               for f in other["frames"])


@pytest.mark.parametrize("loop_factory", LOOP_FACTORIES)
def test_cpu_loop_pinned(loop_factory: LoopFactory, dump_dir: Path, events: Any) -> None:
    """A pure-Python busy loop on the loop thread is pinned to its one-line loop."""
    done: list[bool] = []
    release_when_dumped(dump_dir, lambda: done.append(True))

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        deadline = time.monotonic() + 15
        while not done and time.monotonic() < deadline: pass  # pin: cpu  # noqa: E701
        await asyncio.sleep(0.1)

    run_loop(loop_factory, main)
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    expected = pin(__file__, "cpu")
    assert_frame_is(doc["blocking_frame"], expected)
    assert_frame_is(doc["app_frame"], expected)


def test_native_trace_from_pyspy(dump_dir: Path, events: Any) -> None:
    """native=True: py-spy's native trace is folded into the dump and names this test."""
    release = threading.Event()

    def native_done() -> bool:
        found = dumps(dump_dir)
        if not found:
            return False
        try:
            native = json.loads(found[0].read_text())["native"]
        except ValueError:
            return False
        return native != NATIVE_PENDING.to_json()

    def releaser() -> None:
        try:
            wait_for(native_done, timeout=30)
        finally:
            release.set()

    threading.Thread(target=releaser, name="test-releaser", daemon=True).start()

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), threshold=0.3, interval=0.05, native=True)
        await asyncio.sleep(0.1)
        release.wait(40)  # pin: native

    asyncio.run(main())
    events.wait("freeze_ended")
    doc = only_dump(dump_dir)
    assert_frame_is(doc["app_frame"], pin(__file__, "native"))
    native = doc["native"]
    assert isinstance(native["ok"], bool)
    assert native["ok"] is True, native["error"]
    assert "test_native_trace_from_pyspy" in native["text"]
