"""Helpers for the OpenTelemetry and Sentry sink tests: a local HTTP receiver and a
loop that freezes on its own thread while the test thread looks.

No OpenTelemetry collector and no Sentry server can run on a test machine, so
the SDKs export to a receiver on 127.0.0.1 that keeps every request it got;
the tests decode what the real SDKs sent (OTLP protobuf, Sentry envelopes).
"""

from __future__ import annotations

import asyncio
import gzip
import http.server
import json
import threading
import zlib
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple


class Request(NamedTuple):
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 (its own thread) recording each POST."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                enc = (self.headers.get("Content-Encoding") or "").lower()
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                elif enc:
                    raise AssertionError(f"unexpected Content-Encoding {enc}")
                with outer._lock:
                    outer.requests.append(Request(self.path, dict(self.headers), body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-receiver",
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def got(self, path_part: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if path_part in r.path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def envelope_items(body: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """The (item header, payload) pairs of one Sentry envelope."""
    lines = body.split(b"\n", 1)
    rest = lines[1] if len(lines) > 1 else b""
    items = []
    while rest.strip():
        head_raw, _, rest = rest.partition(b"\n")
        head = json.loads(head_raw)
        if "length" in head:
            n = head["length"]
            payload, rest = rest[:n], rest[n + 1:]
        else:
            payload, _, rest = rest.partition(b"\n")
        items.append((head, payload))
    return items


def run_in_thread(main: Callable[[], Coroutine[Any, Any, Any]],
                  name: str = "app-loop") -> threading.Thread:
    """Run ``main()`` on a fresh asyncio loop in a thread of that name."""

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(main())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t
