"""freezewatch.otel with the real OpenTelemetry SDK: metrics, log records, trace ids.

No OpenTelemetry collector can run on a test machine: the SDK's own in-memory
reader and exporter are used, and an OTLP/HTTP export goes to a receiver on
127.0.0.1 (tests/sink_support.py) that decodes it with opentelemetry-proto.
Each freeze is real: a loop on its own thread blocks on a line of this file
inside a request span, while the test thread looks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract, wait_for
from core_support import FAST, dumps, pin
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from sink_support import Receiver, run_in_thread

import freezewatch
import freezewatch.otel
from freezewatch._sinks import otel as otel_sink
from freezewatch._sinks.log import events as event_sink
from freezewatch._snapshot.otel_context import span_of_task

LOOP = "app-loop"


@pytest.fixture
def memory() -> Iterator[tuple[InMemoryMetricReader, InMemoryLogRecordExporter]]:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    exporter = InMemoryLogRecordExporter()
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    freezewatch.otel.instrument(meter_provider=meters, logger_provider=logs)
    try:
        yield reader, exporter
    finally:
        freezewatch.otel.uninstrument()
        meters.shutdown()
        logs.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [p for rm in (data.resource_metrics if data else ())
            for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


def _freeze_in_span(dump_dir: Path, release: threading.Event,
                    seen: dict[str, Any]) -> threading.Thread:
    """A loop thread that opens a request span and a watch() unit, then blocks."""
    tracer = TracerProvider().get_tracer("test")

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        async with freezewatch.watch("GET /list-users?token=s3cret"):
            with tracer.start_as_current_span("GET /list-users") as span:
                seen["span"] = span.get_span_context()
                release.wait(10)  # pin: otel-block
        await asyncio.sleep(0.2)

    return run_in_thread(main, LOOP)


def test_real_freeze_metrics_and_log_record_in_request_trace(
        dump_dir: Path, events: Any, memory: Any) -> None:
    """A freeze in a request span: counters, blocked gauge while frozen, duration, and a
    WARN log record with the span's trace and span id, the pinned frame and the dump."""
    reader, exporter = memory
    release, seen = threading.Event(), {}
    t = _freeze_in_span(dump_dir, release, seen)
    try:
        detected = events.wait("freeze_detected")
        # While still frozen: the gauge reads the handle at collection time.
        blocked = wait_for(lambda: [p for p in points(reader, "freezewatch.eventloop.blocked")
                                    if p.value >= FAST["threshold"]])
        assert blocked[0].attributes == {"freezewatch.loop.name": LOOP}
    finally:
        release.set()
        t.join(10)
    ended = events.wait("freeze_ended")
    assert event_sink.flush(5)
    (freezes,) = points(reader, "freezewatch.eventloop.freezes")
    assert (freezes.value, dict(freezes.attributes)) == (1, {"freezewatch.loop.name": LOOP})
    (duration,) = points(reader, "freezewatch.eventloop.freeze.duration")
    assert duration.count == 1 and duration.sum == pytest.approx(ended["seconds"], abs=1e-3)

    (path,) = dumps(dump_dir)
    doc = assert_contract(path)
    span = seen["span"]
    assert doc["otel_trace"] == {"trace_id": format(span.trace_id, "032x"),
                                 "span_id": format(span.span_id, "016x")}
    records = [r.log_record for r in exporter.get_finished_logs()]
    freeze, end = records
    assert (freeze.trace_id, freeze.span_id) == (span.trace_id, span.span_id)
    assert (end.trace_id, end.span_id) == (span.trace_id, span.span_id)
    assert freeze.severity_text == "WARN" and freeze.event_name == "freezewatch.freeze"
    txt = Path(str(path)[: -len(".json")] + ".txt").read_text()
    assert freeze.body == txt.splitlines()[0]
    expected = pin(__file__, "otel-block")
    attrs = dict(freeze.attributes)
    assert attrs["freezewatch.app_frame"] == detected["app_line"]
    assert attrs["freezewatch.app_frame"].startswith(f"{expected.file}:{expected.line} in ")
    assert attrs["freezewatch.dump_path"] == str(path)
    assert attrs["freezewatch.loop.name"] == LOOP
    assert attrs["freezewatch.blocked_for"] >= FAST["threshold"]
    assert attrs["freezewatch.request"] == "GET /list-users"  # the query (a token) dropped
    assert "s3cret" not in repr(records)
    assert dict(end.attributes)["freezewatch.duration"] == ended["seconds"]


def test_otlp_http_export_to_local_receiver(dump_dir: Path, events: Any) -> None:
    """The OTLP/HTTP exporters deliver the freeze: the decoded log record carries the
    request span's trace id, the decoded metrics the freeze counter."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    rx = Receiver()
    meters = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=rx.url + "/v1/metrics"), export_interval_millis=60_000)])
    logs = LoggerProvider()
    logs.add_log_record_processor(SimpleLogRecordProcessor(
        OTLPLogExporter(endpoint=rx.url + "/v1/logs")))
    freezewatch.otel.instrument(meter_provider=meters, logger_provider=logs)
    release, seen = threading.Event(), {}
    try:
        t = _freeze_in_span(dump_dir, release, seen)
        events.wait("freeze_detected")
        assert event_sink.flush(5)
        release.set()
        t.join(10)
        events.wait("freeze_ended")
        assert event_sink.flush(5)
        assert meters.force_flush(10_000)
    finally:
        release.set()
        freezewatch.otel.uninstrument()
        meters.shutdown()
        logs.shutdown()
        rx.close()
    exported = []
    for req in rx.got("/v1/logs"):
        msg = ExportLogsServiceRequest.FromString(req.body)
        exported += [lr for rl in msg.resource_logs for sl in rl.scope_logs
                     for lr in sl.log_records]
    freeze = next(lr for lr in exported if lr.event_name == "freezewatch.freeze")
    span = seen["span"]
    assert freeze.trace_id.hex() == format(span.trace_id, "032x")
    assert freeze.span_id.hex() == format(span.span_id, "016x")
    assert freeze.severity_text == "WARN"
    assert freeze.body.string_value.startswith(f"FREEZE: event loop '{LOOP}' blocked for ")
    attrs = {kv.key: kv.value for kv in freeze.attributes}
    assert attrs["code.line.number"].int_value > 0
    assert attrs["freezewatch.loop.name"].string_value == LOOP
    metrics: dict[str, Any] = {}
    for req in rx.got("/v1/metrics"):
        msg = ExportMetricsServiceRequest.FromString(req.body)
        for rm in msg.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    metrics[m.name] = m
    assert metrics["freezewatch.eventloop.freezes"].sum.data_points[0].as_int == 1
    assert metrics["freezewatch.eventloop.freeze.duration"].histogram.data_points[0].count == 1
    assert metrics["freezewatch.eventloop.freeze.duration"].unit == "s"
    print("OTLP log record:", json.dumps({  # the README excerpt
        "severity_text": freeze.severity_text, "body": freeze.body.string_value,
        "trace_id": freeze.trace_id.hex(), "span_id": freeze.span_id.hex(),
        "attributes": {k: str(v).strip() for k, v in attrs.items()}}, indent=1))
    print("span:", format(span.trace_id, "032x"), format(span.span_id, "016x"))


def test_record_lag_feeds_the_delay_histogram(memory: Any) -> None:
    """record_lag (the core's per-heartbeat call) records into freezewatch.eventloop.delay."""
    reader, _ = memory
    otel_sink.record_lag("MainThread", 0.002)
    otel_sink.record_lag("MainThread", 0.004)
    (p,) = points(reader, "freezewatch.eventloop.delay")
    assert (p.count, round(p.sum, 6), dict(p.attributes)) == (
        2, 0.006, {"freezewatch.loop.name": "MainThread"})


def test_record_lag_is_one_none_check_when_off() -> None:
    """Not instrumented: record_lag returns at its first test, records nothing."""
    assert otel_sink._active is None
    otel_sink.record_lag("MainThread", 0.01)  # nothing to record into, nothing raised
    assert otel_sink.failures == 0


def test_span_of_task_reads_the_task_context_from_another_thread() -> None:
    """span_of_task on a suspended task, from a thread: that task's span; None outside a span."""
    tracer = TracerProvider().get_tracer("test")
    found: dict[str, Any] = {}

    async def in_span(ready: asyncio.Event, done: asyncio.Event) -> None:
        with tracer.start_as_current_span("job") as span:
            found["span"] = span.get_span_context()
            ready.set()
            await done.wait()

    async def main() -> None:
        ready, done = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(in_span(ready, done))
        plain = asyncio.create_task(done.wait())
        await ready.wait()
        out: list[Any] = []
        th = threading.Thread(target=lambda: out.extend([span_of_task(task),
                                                         span_of_task(plain)]))
        th.start()
        th.join(5)
        found["read"] = out
        done.set()
        await task

    asyncio.run(main())
    sc = found["span"]
    assert found["read"] == [(format(sc.trace_id, "032x"), format(sc.span_id, "016x")), None]


AUTODETECT = """
import freezewatch.otel
assert freezewatch.otel.autodetect() is False, "no provider set: off"
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
assert freezewatch.otel.autodetect() is True
freezewatch.otel.record_lag("MainThread", 0.5)
names = [m.name for rm in reader.get_metrics_data().resource_metrics
         for sm in rm.scope_metrics for m in sm.metrics]
print(sorted(names))
"""


def test_autodetect_only_with_a_real_global_provider() -> None:
    """autodetect(): off with the API's proxy provider, on once the app set an SDK one."""
    out = subprocess.run([sys.executable, "-W", "error", "-c", AUTODETECT], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "'freezewatch.eventloop.delay'" in out.stdout


class _StuckLogger:
    """A log pipeline that hangs 1.5 s, then fails, on every record."""

    def emit(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(1.5)
        raise RuntimeError("exporter down")


class _StuckLoggerProvider:
    def get_logger(self, *args: Any, **kwargs: Any) -> _StuckLogger:
        return _StuckLogger()


def test_failing_exporter_is_counted_and_never_delays_detection(dump_dir: Path,
                                                               events: Any) -> None:
    """A log pipeline that hangs then raises: each failure is counted and logged as
    sink_failed; the second freeze is still detected and dumped on time."""
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    freezewatch.otel.instrument(meter_provider=meters, logger_provider=_StuckLoggerProvider())
    before = event_sink.failures

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **{**FAST, "dump_rate_window": 0.0})
        await asyncio.sleep(0.1)
        for _ in range(2):
            time.sleep(0.6)  # pin: stuck-exporter
            await asyncio.sleep(0.1)

    try:
        run_in_thread(main, LOOP).join(15)
        failed, _ = wait_for(lambda: len(events.named("sink_failed")) == 2
                             and events.named("sink_failed"), timeout=15)
    finally:
        freezewatch.otel.uninstrument()
        meters.shutdown()
    assert (failed["sink"], failed["error"]) == ("otel", "RuntimeError('exporter down')")
    assert event_sink.failures > before
    first, second = (assert_contract(p) for p in dumps(dump_dir))
    # The events thread sat 1.5 s in the first record; the second freeze (0.7 s after
    # the first) was detected and dumped without waiting for it.
    assert second["blocked_for"] < FAST["threshold"] + 0.25
    assert second["detected_at"] - first["detected_at"] < 1.3


def test_stall_is_a_counter_and_a_log_record(dump_dir: Path, events: Any,
                                             memory: Any) -> None:
    """A watch() unit past its stall_after: the stalls counter and a WARN record
    (event_name freezewatch.stall) naming the unit and the application's await line."""
    reader, exporter = memory

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        never = asyncio.Event()
        async with freezewatch.watch("GET /slow", stall_after=0.3):
            await asyncio.wait_for(never.wait(), 1.0)  # pin: otel-stall

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(main())
    events.wait("stall_detected")
    assert event_sink.flush(5)
    (stalls,) = points(reader, "freezewatch.eventloop.stalls")
    assert stalls.value == 1
    (rec,) = [r.log_record for r in exporter.get_finished_logs()]
    assert rec.event_name == "freezewatch.stall" and rec.severity_text == "WARN"
    assert rec.body.startswith("STALL: GET /slow open for ")
    expected = pin(__file__, "otel-stall")
    assert dict(rec.attributes)["freezewatch.app_frame"].startswith(
        f"{expected.file}:{expected.line} in ")
    (path,) = dumps(dump_dir, kind="stall")
    assert_contract(path)


def _snapshot(trace: dict[str, str] | None) -> Any:
    from freezewatch._snapshot.model import NATIVE_OFF, Frame, LoopInfo, Snapshot

    frame = Frame("/app/service.py", 41, "handler", "time.sleep(5)")
    return Snapshot(kind="freeze", pid=1, hostname="h", python="3", loop=LoopInfo(LOOP, 1, LOOP),
                    detected_at=1.0, blocked_for=1.0, threshold=1.0, loop_frames=(frame,),
                    blocking_frame=frame, app_frame=frame, current_task="Task-1", tasks=(),
                    task_count=0, threads=(), native=NATIVE_OFF, inflight=(),
                    extra={"otel_trace": trace} if trace else {})


def test_end_record_joins_its_freeze_by_freeze_id(memory: Any) -> None:
    """freeze_id, when the pipeline gives one, pairs a freeze_ended with its detection
    (here two freezes of one loop, ended in the other order, dumps unknown)."""
    from freezewatch._events import FreezeEvent
    from freezewatch._sinks.report import Report, sinks

    _, exporter = memory
    sink = next(s for s in sinks() if s.name == "otel")
    a, b = {"trace_id": "1" * 32, "span_id": "2" * 16}, {"trace_id": "3" * 32, "span_id": "4" * 16}
    for fid, trace in ((1, a), (2, b)):
        sink.deliver(Report(FreezeEvent("freeze_detected", LOOP, 1.0), _snapshot(trace), fid))
    for fid in (2, 1):
        sink.deliver(Report(FreezeEvent("freeze_ended", LOOP, 2.0), None, fid))
    ended = [r.log_record for r in exporter.get_finished_logs()
             if r.log_record.event_name == "freezewatch.freeze.ended"]
    assert [format(r.trace_id, "032x") for r in ended] == ["3" * 32, "1" * 32]


def test_instrument_twice_is_one_set_of_instruments(memory: Any) -> None:
    """instrument() again with the same (global) providers: no second set of instruments."""
    active = otel_sink._active
    freezewatch.otel.instrument()
    freezewatch.otel.instrument()
    assert otel_sink._active is not active  # the global providers differ from the fixture's
    again = otel_sink._active
    freezewatch.otel.instrument()
    assert otel_sink._active is again


def test_long_freeze_update_is_a_record_too(dump_dir: Path, events: Any, memory: Any) -> None:
    """A freeze-update dump of a long freeze: a WARN record freezewatch.freeze.update,
    between the freeze's record and its end, all three on the request's trace."""
    _, exporter = memory
    tracer = TracerProvider().get_tracer("test")
    seen: dict[str, Any] = {}

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **{**FAST, "update_after": (0.7,)})
        await asyncio.sleep(0.1)
        with tracer.start_as_current_span("job") as span:
            seen["trace"] = span.get_span_context().trace_id
            time.sleep(1.2)  # pin: otel-long
        await asyncio.sleep(0.2)

    run_in_thread(main, LOOP).join(10)
    events.wait("freeze_ended")
    assert event_sink.flush(5)
    records = [r.log_record for r in exporter.get_finished_logs()]
    assert [r.event_name for r in records] == [
        "freezewatch.freeze", "freezewatch.freeze.update", "freezewatch.freeze.ended"]
    assert {r.trace_id for r in records} == {seen["trace"]}
    assert records[1].body.startswith(f"FREEZE (update): event loop '{LOOP}' blocked for ")
    for path in dumps(dump_dir):
        assert_contract(path)
