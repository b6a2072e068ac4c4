"""The metrics server: /metrics and /healthz from threads, so it answers during a freeze.

A stdlib WSGI server (the same construction as prometheus-client's
``start_http_server``: ``ThreadingMixIn`` + ``WSGIServer``, one daemon thread
per request) wrapping prometheus-client's public ``make_wsgi_app`` and our
/healthz. It runs on its own thread, never on the event loop, so a frozen loop
does not stop it; only a C call holding the GIL (or py-spy pausing the
process) can delay a scrape. Bound to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from . import health as _health
from . import metrics as _metrics

THREAD_NAME = "freezewatch-metrics"
HEALTH_PATHS = ("/healthz", "/healthz/")

_StartResponse = Callable[..., Any]
_App = Callable[[dict[str, Any], _StartResponse], Iterable[bytes]]


class _Handler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a scrape every few seconds is not news."""


class _Server(ThreadingMixIn, WSGIServer):
    # Request threads are daemons: a client that never finishes its request
    # cannot hold up interpreter exit, and ThreadingMixIn keeps no list of them.
    daemon_threads = True


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
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name=THREAD_NAME, daemon=True)
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()  # returns once serve_forever saw the flag (<= poll_interval)
        self._httpd.server_close()

    def close_in_child(self) -> None:
        """After fork: the serving thread is gone; release our copy of the socket so
        the port is not held open by a process nobody answers in."""
        self._httpd.socket.close()


def _best_family(addr: str, port: int) -> tuple[socket.AddressFamily, str]:
    # As http.server and prometheus-client do: IPv6 addresses need AF_INET6.
    infos = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])
