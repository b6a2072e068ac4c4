"""The metrics server against clients that connect and say nothing, or too little
(issue 11, defect 8): threads stay bounded and a scrape still answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from metrics_support import get
from prometheus_client import CollectorRegistry

from freezewatch._sinks import serve as _serve
from freezewatch._sinks.serve import MetricsServer


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1", 0, CollectorRegistry())
    try:
        yield srv
    finally:
        srv.stop()


def _port(srv: MetricsServer) -> int:
    return int(srv._httpd.socket.getsockname()[1])


def _connect(port: int, n: int, first: bytes = b"") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first:
            s.sendall(first)
        out.append(s)
    return out


def test_300_half_open_connections(server: MetricsServer) -> None:
    """300 connections that send nothing: no thread each, and /metrics still answers."""
    before = threading.active_count()
    conns = _connect(_port(server), 300)
    try:
        time.sleep(0.5)
        assert threading.active_count() <= before + _serve.MAX_WORKERS
        status, _ = get(f"http://127.0.0.1:{_port(server)}/metrics")
        assert status == 200
        assert threading.active_count() <= before + _serve.MAX_WORKERS
    finally:
        for s in conns:
            s.close()


def test_slow_requests_bounded_and_timed_out(server: MetricsServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that send half a request hold at most MAX_WORKERS threads, each for at
    most READ_TIMEOUT; then scrapes are answered again."""
    monkeypatch.setattr(_serve._Handler, "timeout", 0.5)
    before = threading.active_count()
    conns = _connect(_port(server), 40, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    try:
        time.sleep(0.3)
        assert threading.active_count() <= before + _serve.MAX_WORKERS
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _ = get(f"http://127.0.0.1:{_port(server)}/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "no scrape answered within 10 s"
        assert status in (200, 503)
        assert threading.active_count() <= before + _serve.MAX_WORKERS
    finally:
        for s in conns:
            s.close()


def test_idle_connections_closed_after_read_timeout(server: MetricsServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never sends a byte is closed after READ_TIMEOUT."""
    monkeypatch.setattr(_serve, "READ_TIMEOUT", 0.3)
    (s,) = _connect(_port(server), 1)
    try:
        s.settimeout(5)
        assert s.recv(1) == b""  # closed by the server, not by our timeout
    finally:
        s.close()
