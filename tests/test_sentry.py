"""freezewatch.sentry with the real sentry-sdk: events sent while the loop is frozen.

No Sentry server can run on a test machine: the DSN points at a receiver on
127.0.0.1 (tests/sink_support.py) that decodes the SDK's envelopes (gzip, as
the SDK sends them). Each freeze is real: a loop on its own thread blocks on a
line of this file while the test thread watches the receiver.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from conftest import assert_contract, wait_for
from core_support import FAST, dumps, pin
from sink_support import Receiver, envelope_items, run_in_thread

import freezewatch
import freezewatch.sentry
from freezewatch._sinks import scrub
from freezewatch._sinks.log import events as event_sink
from freezewatch._sinks.sentry import SentrySink

LOOP = "app-loop"


class Sentry:
    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    def envelopes(self) -> list[list[tuple[dict[str, Any], bytes]]]:
        return [envelope_items(r.body) for r in self.rx.got("/envelope/")]

    def events(self) -> list[tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]]:
        """(event, its attachments) for every event envelope received."""
        out = []
        for items in self.envelopes():
            evs = [json.loads(p) for h, p in items if h.get("type") == "event"]
            if evs:
                out.append((evs[0], [(h, p) for h, p in items if h.get("type") == "attachment"]))
        return out

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [e for e, _ in self.events() if e.get("tags", {}).get("kind") == kind]


@pytest.fixture
def sentry() -> Iterator[Sentry]:
    rx = Receiver()
    sentry_sdk.init(dsn=f"http://public@127.0.0.1:{rx.port}/1", default_integrations=False,
                    auto_enabling_integrations=False, traces_sample_rate=1.0,
                    integrations=[freezewatch.sentry.integration()])
    # setup_once runs once per process: a later test's init() finds the sink still
    # registered only if no earlier test disabled it, so make sure here.
    sink = freezewatch.sentry.enable()
    try:
        yield Sentry(rx)
    finally:
        freezewatch.sentry.disable()
        client = sentry_sdk.get_client()
        client.close(timeout=2)
        sentry_sdk.get_global_scope().set_client(None)
        rx.close()
        assert sink.name == SentrySink.name


def test_freeze_event_sent_while_frozen(dump_dir: Path, events: Any, sentry: Sentry) -> None:
    """One warning event arrives while the loop is still blocked: the pinned line on top
    of the stack, grouping by it, tags, the request (token redacted), the .txt attached;
    when the freeze ends, one info event with its duration."""

    seen: dict[str, tuple[str, str]] = {}

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        async with freezewatch.watch("GET /list-users?token=s3cret"):
            with sentry_sdk.start_transaction(name="GET /list-users", op="http.server") as tx:
                seen["trace"] = (tx.trace_id, tx.span_id)
                time.sleep(4.0)  # pin: sentry-block
        await asyncio.sleep(0.2)

    t = run_in_thread(main, LOOP)
    events.wait("freeze_detected")
    ((event, attachments),) = wait_for(sentry.events, timeout=3.0)
    assert events.named("freeze_ended") == [] and t.is_alive()  # still frozen
    t.join(10)
    ended = events.wait("freeze_ended")

    expected = pin(__file__, "sentry-block")
    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    assert event["level"] == "warning"
    assert event["message"].startswith(f"FREEZE: event loop '{LOOP}' blocked for ")
    top = event["threads"]["values"][0]["stacktrace"]["frames"][-1]
    assert (top["abs_path"], top["lineno"], top["context_line"], top["in_app"]) == (
        expected.file, expected.line, expected.code, True)
    assert top["function"] == doc["blocking_frame"]["function"]
    where = f"{expected.file}:{expected.line} in {top['function']}"
    assert event["fingerprint"] == ["freezewatch", "freeze", where]
    tags = event["tags"]
    assert (tags["loop"], tags["kind"], tags["gil_held"]) == (LOOP, "freeze", "false")
    assert tags["cause"] == doc["cause"]
    assert event["request"] == {"method": "GET", "url": "/list-users"}  # no query string
    assert event["contexts"]["freezewatch"]["dump_path"] == str(path)
    ((head, payload),) = attachments
    txt_path = Path(str(path)[: -len(".json")] + ".txt")
    assert head["filename"] == txt_path.name
    # The .txt as it was while frozen: the file has since been rewritten with the duration.
    attached = payload.decode()
    ended_line = next(ln for ln in txt_path.read_text().splitlines()
                      if ln.startswith("  the freeze ended after"))
    assert attached == scrub.clean(txt_path.read_text().replace(ended_line + "\n", ""))
    assert f"Blocked at:  {where}" in attached
    assert all(b"s3cret" not in r.body for r in sentry.rx.requests)

    # Joined to the request's transaction (read from the task's context at capture)
    trace_id, span_id = seen["trace"]
    assert doc["sentry_trace"] == {"trace_id": trace_id, "span_id": span_id}
    assert (event["contexts"]["trace"]["trace_id"],
            event["contexts"]["trace"]["span_id"]) == (trace_id, span_id)

    (final,) = wait_for(lambda: sentry.of_kind("freeze-ended"))
    assert final["contexts"]["trace"]["trace_id"] == trace_id
    assert final["level"] == "info"
    assert final["contexts"]["freezewatch"]["duration"] == ended["seconds"]
    assert final["contexts"]["freezewatch"]["freeze_event_id"] == event["event_id"]
    assert final["fingerprint"] == ["freezewatch", "freeze-ended", where]
    print("Sentry event:", json.dumps({**{k: event[k] for k in (
        "level", "message", "fingerprint", "tags", "request")},
        "contexts.trace": {k: event["contexts"]["trace"][k] for k in ("trace_id", "span_id")}},
        indent=1))
    print("transaction:", trace_id, span_id)
    print("top frame:", json.dumps(top))
    print("attachment:", json.dumps(head))


def _repeat(dump_dir: Path, count: int, **settings: Any) -> None:
    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **{**FAST, "threshold": 0.08,
                                                       "interval": 0.02, **settings})
        await asyncio.sleep(0.1)
        for _ in range(count):
            time.sleep(0.15)  # pin: repeat
            await asyncio.sleep(0.03)
        await asyncio.sleep(0.2)

    run_in_thread(main, LOOP).join(60)


def test_fifty_freezes_at_one_line_are_rate_limited(dump_dir: Path, events: Any,
                                                    sentry: Sentry) -> None:
    """50 freezes at one line within dump_rate_window (default 60 s): one freeze event
    (and its end), the others counted as rate limited, like the dumps."""
    _repeat(dump_dir, 50)
    assert event_sink.flush(5)
    detected = events.named("freeze_detected")
    assert len(detected) >= 25
    assert len(dumps(dump_dir)) == 1
    sentry_sdk.flush(5)
    assert len(sentry.of_kind("freeze")) == 1
    assert len(sentry.of_kind("freeze-ended")) == 1
    (sink,) = [s for s in freezewatch.sentry._report.sinks() if isinstance(s, SentrySink)]
    assert sink.rate_limited == len(detected) - 1


def test_no_rate_window_one_event_per_freeze(dump_dir: Path, events: Any,
                                             sentry: Sentry) -> None:
    """dump_rate_window=0: every freeze is its own event, like its own dump."""
    _repeat(dump_dir, 3, dump_rate_window=0.0)
    assert event_sink.flush(5)
    n = len(events.named("freeze_detected"))
    assert n >= 2
    sentry_sdk.flush(5)
    assert len(sentry.of_kind("freeze")) == n == len(dumps(dump_dir))
    for path in dumps(dump_dir):
        assert_contract(path)


def test_inactive_client_sends_nothing(dump_dir: Path, events: Any) -> None:
    """The sink registered but no Sentry client: deliveries return at once."""
    sink = freezewatch.sentry.enable()
    before = event_sink.failures
    try:
        _repeat(dump_dir, 1)
        assert event_sink.flush(5)
        assert events.named("freeze_detected") and sink.sent == 0
        assert event_sink.failures == before
    finally:
        freezewatch.sentry.disable()


def test_stall_event_has_the_await_chain(dump_dir: Path, events: Any, sentry: Sentry) -> None:
    """A stalled request: one event of kind stall whose stack is the task's await chain,
    the application's await line in it, the blocking (innermost) frame on top."""

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        never = asyncio.Event()
        async with freezewatch.watch("POST /orders", stall_after=0.3):
            await asyncio.wait_for(never.wait(), 1.0)  # pin: sentry-stall

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    events.wait("stall_detected")
    assert event_sink.flush(5)
    (event,) = wait_for(lambda: sentry.of_kind("stall"))
    (path,) = dumps(dump_dir, kind="stall")
    doc = assert_contract(path)
    frames = event["threads"]["values"][0]["stacktrace"]["frames"]
    bf = doc["blocking_frame"]
    assert (frames[-1]["abs_path"], frames[-1]["lineno"]) == (bf["file"], bf["line"])
    expected = pin(__file__, "sentry-stall")
    assert any((f["abs_path"], f["lineno"], f["in_app"]) == (expected.file, expected.line, True)
               for f in frames)
    assert event["request"] == {"method": "POST", "url": "/orders"}
    assert event["message"].startswith("STALL: POST /orders open for ")


INTEGRATION = """
import sentry_sdk, freezewatch.sentry
from freezewatch._sinks import report
assert freezewatch.sentry.autodetect() is False, "Sentry not initialised: off"
assert report.sinks() == []
sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", default_integrations=False,
                integrations=[freezewatch.sentry.integration()])
print([s.name for s in report.sinks()], freezewatch.sentry.autodetect())
"""


def test_integration_registers_the_sink() -> None:
    """sentry_sdk.init(integrations=[freezewatch.sentry.integration()]) turns the sink on."""
    out = subprocess.run([sys.executable, "-W", "error", "-c", INTEGRATION],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['sentry']", "True"]


EXTRAS_ABSENT = """
import asyncio, sys, time

class NoExtras:
    attempts = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opentelemetry", "sentry_sdk"):
            self.attempts.append(name)
            raise ImportError(f"{name} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, NoExtras())
import freezewatch, freezewatch.otel, freezewatch.sentry

async def main():
    freezewatch.install(threshold=0.3, interval=0.05, native=False, dump_dir=sys.argv[1])
    await asyncio.sleep(0.1)
    time.sleep(0.8)
    await asyncio.sleep(0.3)

asyncio.run(main())
from freezewatch._sinks.log import events
events.flush(5)
print(freezewatch.otel.autodetect(), freezewatch.sentry.autodetect(), events.failures,
      NoExtras.attempts)
"""


def test_extras_absent_nothing_attempted(tmp_path: Path) -> None:
    """Neither opentelemetry nor sentry_sdk importable: install and a freeze work,
    autodetect says no, and no import of either was even tried."""
    out = subprocess.run([sys.executable, "-W", "error", "-c", EXTRAS_ABSENT,
                          str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # structlog's default config prints the freeze's events first; our line is the last
    assert out.stdout.splitlines()[-1].split() == ["False", "False", "0", "[]"]
    assert "freeze_detected" in out.stdout + out.stderr  # the log: stderr unless configured
    (path,) = dumps(tmp_path)
    assert_contract(path)
