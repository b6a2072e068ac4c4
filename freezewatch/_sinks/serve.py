"""The metrics server: /metrics and /healthz from threads, so it answers during a freeze.

A stdlib WSGI server (wsgiref's ``WSGIServer`` for the HTTP and WSGI parts)
wrapping prometheus-client's public ``make_wsgi_app`` and our /healthz. It
runs on its own threads, never on the event loop, so a frozen loop does not
stop it; only a C call holding the GIL (or py-spy pausing the process) can
delay a scrape. Bound to 127.0.0.1 unless told otherwise.

Bounded against clients that connect and say nothing (or too little): the
``freezewatch-metrics`` thread accepts connections and waits for each one's
first bytes in a selector, without a thread per connection; at most
``MAX_PENDING`` connections wait there, each at most ``READ_TIMEOUT`` seconds
(the oldest is closed first). Only a connection with bytes to read goes to
one of ``MAX_WORKERS`` worker threads (through a queue of ``MAX_QUEUED``;
beyond that it is closed), and a worker gives up on a request that stops
arriving after ``READ_TIMEOUT``. So 300 half-open connections cost no
thread, and a scrape among them still answers.
"""

from __future__ import annotations

import contextlib
import json
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from . import health as _health
from . import metrics as _metrics

THREAD_NAME = "freezewatch-metrics"
WORKER_NAME = "freezewatch-metrics-worker"
HEALTH_PATHS = ("/healthz", "/healthz/")
READ_TIMEOUT = 5.0
"""Seconds a connection may take to send its request (waiting, then reading)."""
MAX_PENDING = 64
"""Connections accepted and waiting for their first bytes; beyond: the oldest is closed."""
MAX_WORKERS = 8
"""Threads answering requests; each one handles one connection at a time."""
MAX_QUEUED = 32
"""Connections with a request waiting for a free worker; beyond: closed."""

_StartResponse = Callable[..., Any]
_App = Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]


class _Handler(WSGIRequestHandler):
    timeout = READ_TIMEOUT  # StreamRequestHandler applies it to the connection

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a scrape every few seconds is not news."""


class _Server(WSGIServer):
    request_queue_size = 128  # the kernel's backlog; we accept at once anyway


def _served_registry(registry: Any) -> Any:
    """What /metrics shows: every worker's values in multiprocess mode, else ``registry``."""
    path = _metrics.multiprocess_dir()
    if path:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        reg = CollectorRegistry()
        MultiProcessCollector(reg, path=path)  # type: ignore[no-untyped-call]
        return reg
    if registry is None:
        from prometheus_client import REGISTRY

        return REGISTRY
    return registry


def make_app(registry: Any) -> _App:
    """WSGI app: /healthz is ours, every other GET path is prometheus-client's exposition."""
    from prometheus_client import make_wsgi_app

    metrics_app: _App = make_wsgi_app(_served_registry(registry))

    def app(environ: dict[str, Any], start_response: _StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") in HEALTH_PATHS:
            ok, doc = _health.healthz()
            body = json.dumps(doc).encode()
            start_response("200 OK" if ok else "503 Service Unavailable", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store")])
            return [body]
        return metrics_app(environ, start_response)

    return app


class MetricsServer:
    """One per process; started by install(metrics_port=...), stopped with the watchdog."""

    def __init__(self, addr: str, port: int, registry: Any) -> None:
        self.addr, self.port, self.registry = addr, port, registry
        family, host = _best_family(addr, port)

        class Server(_Server):
            address_family = family

        # Binds now: an OSError (port taken, address not local) reaches install().
        self._httpd = make_server(host, port, make_app(registry), Server, handler_class=_Handler)
        self._stop = threading.Event()
        self._queue: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue(MAX_QUEUED)
        self._workers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self._thread.start()

    # -- the accepting thread ---------------------------------------------------
    def _serve(self) -> None:
        listener = self._httpd.socket
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, None)
        # Accepted connections waiting for their first bytes: socket -> (addr, deadline).
        # Only this thread touches it (dict order: oldest first).
        pending: dict[socket.socket, tuple[Any, float]] = {}
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.2):
                    if key.data is None:
                        self._accept(listener, sel, pending)
                    else:
                        conn = cast(socket.socket, key.fileobj)
                        sel.unregister(conn)
                        addr, _deadline = pending.pop(conn)
                        self._dispatch(conn, addr)
                now = time.monotonic()
                for conn, (_addr, deadline) in list(pending.items()):
                    if deadline > now:
                        break  # oldest first: the rest are younger
                    sel.unregister(conn)
                    del pending[conn]
                    _close(conn)
        finally:
            for conn in pending:
                _close(conn)
            sel.close()

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector,
                pending: dict[socket.socket, tuple[Any, float]]) -> None:
        try:
            conn, addr = listener.accept()
        except OSError:  # the client left already, or too many open files
            return
        if len(pending) >= MAX_PENDING:
            oldest = next(iter(pending))
            sel.unregister(oldest)
            del pending[oldest]
            _close(oldest)
        conn.setblocking(False)
        pending[conn] = (addr, time.monotonic() + READ_TIMEOUT)
        sel.register(conn, selectors.EVENT_READ, addr)

    def _dispatch(self, conn: socket.socket, addr: Any) -> None:
        try:
            self._queue.put_nowait((conn, addr))
        except queue.Full:  # every worker busy and the queue full: refuse, cheaply
            _close(conn)
            return
        if len(self._workers) < MAX_WORKERS and self._queue.qsize() > 0:
            t = threading.Thread(target=self._work, name=WORKER_NAME, daemon=True)
            self._workers.append(t)  # started on demand, never more than MAX_WORKERS
            t.start()

    # -- the worker threads -------------------------------------------------------
    def _work(self) -> None:
        # Daemons: a client that never finishes its request cannot hold up
        # interpreter exit; READ_TIMEOUT bounds how long it holds a worker.
        while True:
            item = self._queue.get()
            if item is None:
                return
            conn, addr = item
            try:
                conn.setblocking(True)
                self._httpd.finish_request(conn, addr)  # type: ignore[no-untyped-call]
            except Exception:  # boundary: one client (timed out, reset, malformed request)
                pass
            finally:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_WR)
                _close(conn)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(2.0)  # the selector wakes every 0.2 s
        for _ in self._workers:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
        self._httpd.server_close()

    def close_in_child(self) -> None:
        """After fork: the serving thread is gone; release our copy of the socket so
        the port is not held open by a process nobody answers in."""
        self._httpd.socket.close()


class Standby:
    """A process that found the port taken keeps trying it, every ``RETRY`` s: when
    the worker holding it exits (a restart, a crash), another takes over, so the
    port does not stay unserved while workers live. ``on_bound`` receives the
    server (it becomes the process's one server); the thread then ends."""

    RETRY = 5.0

    def __init__(self, addr: str, port: int, registry: Any,
                 on_bound: Callable[[MetricsServer], bool]) -> None:
        self.addr, self.port, self.registry = addr, port, registry
        self._on_bound = on_bound
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME + "-standby",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.RETRY):
            try:
                srv = MetricsServer(self.addr, self.port, self.registry)
            except OSError:
                continue  # still taken (or briefly unbindable): try again later
            if self._stop.is_set() or not self._on_bound(srv):
                srv.stop()  # stopped meanwhile (uninstalled, another port asked for)
            return

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()


def _best_family(addr: str, port: int) -> tuple[socket.AddressFamily, str]:
    # As http.server and prometheus-client do: IPv6 addresses need AF_INET6.
    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])
