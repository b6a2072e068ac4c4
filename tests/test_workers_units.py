"""The pieces behind multi-worker support, in one process: a taken port, install()
again with other settings, retention shared by workers, helper processes, the
other workers' health read from the multiprocess directory."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from prometheus_client import CollectorRegistry, generate_latest

import freezewatch
from freezewatch import _autostart, _state
from freezewatch._events import FreezeEvent
from freezewatch._sinks import dumpfile, retention
from freezewatch._sinks import workers as _workers
from freezewatch._sinks.log import EventSink

pytestmark = pytest.mark.timeout(30)
FAST = {"threshold": 0.3, "interval": 0.05, "native": False, "sentinel": False}


def test_taken_port_is_logged_counted_and_watched(dump_dir: Path, events: Any) -> None:
    """A metrics port held by someone else: no ValueError; the loop is watched, one
    metrics_server_skipped event, the skip counted."""
    reg = CollectorRegistry()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> freezewatch.LoopWatch:
            w = freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, registry=reg,
                                    **FAST)
            await asyncio.sleep(0.1)
            time.sleep(0.6)
            await asyncio.sleep(0.2)
            return w

        w = asyncio.run(main())
    assert w.freezes == 1 and len(w.dumps) == 1
    (ev,) = events.named("metrics_server_skipped")
    assert f"127.0.0.1:{port} is taken" in ev["reason"] and ev["log_level"] == "warning"
    assert _state.metrics_server is None
    text = generate_latest(reg).decode()
    assert "freezewatch_metrics_server_skipped_total 1.0" in text


def test_install_again_with_other_settings_warns_once(dump_dir: Path, events: Any) -> None:
    """install() for a watched loop returns the first handle; differing explicit
    settings give one install_ignored warning naming each; same or none: silent."""

    async def main() -> tuple[Any, ...]:
        first = freezewatch.install(dump_dir=str(dump_dir), **FAST)
        same = freezewatch.install(threshold=0.3)
        bare = freezewatch.install()
        other = freezewatch.install(threshold=0.5, interval=0.05, stall_after=7.0)
        return first, same, bare, other

    first, same, bare, other = asyncio.run(main())
    assert first is same is bare is other
    assert first.config.threshold == 0.3
    freezewatch.uninstall()
    (ev,) = events.named("install_ignored")
    assert ev["log_level"] == "warning"
    assert "threshold=0.5 ignored (threshold=0.3 in force)" in ev["reason"]
    assert "stall_after=7.0 ignored (stall_after=30.0 in force)" in ev["reason"]
    assert "interval" not in ev["reason"]  # the same value: not ignored


def test_retention_keeps_a_freeze_still_going_on(tmp_path: Path) -> None:
    """Shared directory: a worker's retention never removes another live worker's
    open freeze (no duration yet); a dead worker's, or an ended one, go first."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = 2**22 + 17
    try:
        def doc(pid: int, **more: Any) -> dict[str, Any]:
            return {"schema": "freezewatch/1", "kind": "freeze", "pid": pid, "detected_at": 0.0,
                    "blocked_for": 1.0, "threshold": 0.5, "loop": {"name": "x"}, **more}

        dumpfile.write_dump(str(d), f"freeze-20250101T000001Z-{live.pid}-0001",
                            doc(live.pid), 100, 10**7)  # open: no duration
        dumpfile.write_dump(str(d), f"freeze-20250101T000002Z-{dead}-0001", doc(dead), 100,
                            10**7)  # its process is gone
        dumpfile.write_dump(str(d), f"freeze-20250101T000003Z-{live.pid}-0002",
                            doc(live.pid, duration=2.0), 100, 10**7)  # ended
        dumpfile.write_dump(str(d), f"stall-20250101T000004Z-{live.pid}-0003",
                            doc(live.pid) | {"kind": "stall"}, 100, 10**7)
        removed = retention.enforce(str(d), 1, 10**7)
        assert removed == [f"freeze-20250101T000002Z-{dead}-0001",
                           f"freeze-20250101T000003Z-{live.pid}-0002",
                           f"stall-20250101T000004Z-{live.pid}-0003"]
        assert [p.name for p in d.glob("*.json")] == [
            f"freeze-20250101T000001Z-{live.pid}-0001.json"]
    finally:
        live.kill()
        live.wait()
    # Its process is gone: nothing will complete it, it is an old dump like any other.
    assert retention.enforce(str(d), 0, 10**7) == [f"freeze-20250101T000001Z-{live.pid}-0001"]


def test_multiprocessing_helpers_are_never_watched() -> None:
    """The resource tracker and the fork server: no autostart; spawned workers: yes."""
    tracker = [sys.executable, "-c", "from multiprocessing.resource_tracker import main;main(5)"]
    worker = [sys.executable, "-c", "from multiprocessing.spawn import spawn_main; "
              "spawn_main(tracker_fd=5, pipe_handle=7)", "--multiprocessing-fork"]
    assert _autostart.is_helper(tracker)
    assert _autostart.is_helper([sys.executable, "-c",
                                 "from multiprocessing.forkserver import main; main(1, 2)"])
    assert not _autostart.is_helper(worker)
    assert not _autostart.is_helper([sys.executable, "app.py"])


def test_events_thread_survives_a_closed_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that closed stderr (a helper): events are dropped, no traceback."""
    err = io.StringIO()
    err.close()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(logging.getLogger("freezewatch"), "hasHandlers", lambda: False)
    seen: list[BaseException] = []
    monkeypatch.setattr("threading.excepthook", lambda args: seen.append(args.exc_value))
    sink = EventSink()
    sink.emit(FreezeEvent("metrics_server_skipped", "*", 0.0, reason="x"))
    assert sink.flush(5.0)
    assert sink.failures == 1 and seen == []
    sink.stop()


def test_other_workers_read_from_the_multiprocess_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another live worker's loops come from its live-gauge files, per pid; one
    whose heartbeat went silent past liveness_limit counts as blocked; dead pids
    are ignored."""
    from prometheus_client import Gauge
    from prometheus_client.values import MultiProcessValue

    mp = tmp_path / "mp"
    mp.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mp))
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        now = time.time()
        for pid, blocked, beat in ((live.pid, 12.5, now), (2**22 + 17, 50.0, now)):
            monkeypatch.setattr("prometheus_client.values.ValueClass",
                                MultiProcessValue(lambda pid=pid: pid))  # type: ignore[misc]
            reg = CollectorRegistry()
            b = Gauge("freezewatch_loop_blocked_seconds", "h", ["loop"], registry=reg,
                      multiprocess_mode="livemax")
            h = Gauge("freezewatch_loop_last_heartbeat_timestamp_seconds", "h", ["loop"],
                      registry=reg, multiprocess_mode="livemin")
            b.labels("MainThread").set(blocked)
            h.labels("MainThread").set(beat)
            h.labels("bg").set(now - 100)  # a loop whose watchdog went quiet
        entries = _workers.other_workers(liveness_limit=10.0, idle_beat_every=2.0)
    finally:
        live.kill()
        live.wait()
    by_loop = {e["loop"]: e for e in entries}
    assert {e["pid"] for e in entries} == {live.pid}
    assert by_loop["MainThread"]["blocked_seconds"] == 12.5
    assert by_loop["bg"]["blocked_seconds"] >= 99
    json.dumps(entries)
    assert os.getpid() not in {e["pid"] for e in entries}


def test_standby_takes_the_port_over_when_its_holder_exits(
        dump_dir: Path, events: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker holding metrics_port exits (a restart): a worker that found it
    taken binds it within a retry period and serves from then on."""
    from metrics_support import get

    from freezewatch._sinks.serve import Standby

    monkeypatch.setattr(Standby, "RETRY", 0.2)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, **FAST)
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, **FAST)  # same handle
        await asyncio.sleep(0.5)
        assert _state.metrics_server is None and _state.metrics_standby.is_alive()
        taken.close()  # the holder is gone
        await asyncio.sleep(0.1)
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(lambda: _state.metrics_server is not None, timeout=5))
        status, body = await asyncio.get_running_loop().run_in_executor(
            None, get, f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(body)["pid"] == os.getpid()

    try:
        asyncio.run(main())
    finally:
        taken.close()
    assert len(events.named("metrics_server_skipped")) == 1
    events.wait("metrics_server_started")
    freezewatch.uninstall()
    assert _state.metrics_server is None and _state.metrics_standby is None


AIOHTTP_APP = '''
import os, sys, time
from aiohttp import web

async def freeze(request):
    time.sleep(0.8)  # pin: aiofreeze
    return web.Response(text=str(os.getpid()))

async def ping(request):
    return web.Response(text="pong")

app = web.Application()
app.router.add_get("/freeze/{n}", freeze)
app.router.add_get("/ping", ping)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
'''


def test_zero_code_names_aiohttp_requests(tmp_path: Path) -> None:
    """freezewatch run -- python app.py (aiohttp, untouched): the dump names the
    request by its route, as freezewatch.aiohttp.setup(app) in code would."""
    from conftest import assert_contract
    from core_support import assert_frame_is, pin
    from metrics_support import free_port, get

    app = tmp_path / "aio_app.py"
    app.write_text(AIOHTTP_APP)
    dumps = tmp_path / "dumps"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREEZEWATCH_")}
    env.update(FREEZEWATCH_NATIVE="0", FREEZEWATCH_SENTINEL="0", FREEZEWATCH_INTERVAL="0.05")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "freezewatch"), "run", "--threshold", "0.3",
         "--dump-dir", str(dumps), "--", sys.executable, str(app), str(port)],
        env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        def up() -> bool:
            try:
                return get(f"http://127.0.0.1:{port}/ping", timeout=1)[0] == 200
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                return False

        wait_for(up, timeout=20, every=0.1)
        assert get(f"http://127.0.0.1:{port}/freeze/7", timeout=10)[0] == 200
        line = pin(app, "aiofreeze").line
        path = wait_for(lambda: [p for p in sorted(dumps.glob("freeze-*.json"))
                                 if json.loads(p.read_text())["blocking_frame"]["line"] == line],
                        timeout=10)[0]
    finally:
        proc.terminate()
        err = proc.communicate(timeout=10)[1]
    doc = assert_contract(path)
    assert_frame_is(doc["blocking_frame"], pin(app, "aiofreeze"))
    assert [u["name"] for u in doc["inflight"]] == ["GET /freeze/{n}"], (doc["inflight"], err)
    assert "Traceback" not in err, err


def test_healthz_of_a_process_without_a_loop_says_so(
        dump_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor (pending handle, no loop ever): 200, no loops, a note; with the
    multiprocess directory it speaks for the workers instead."""
    from freezewatch._sinks import health

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    freezewatch.install(dump_dir=str(dump_dir), **FAST)  # no loop runs here: pending
    ok, doc = health.healthz()
    assert ok and doc["loops"] == [] and doc["pid"] == os.getpid()
    assert "PROMETHEUS_MULTIPROC_DIR" in doc["note"]
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(dump_dir.parent))
    assert "note" not in health.healthz()[1]


def test_run_middleware_yields_to_the_apps_own(dump_dir: Path) -> None:
    """freezewatch run's outer middleware and the app's own inside it: one unit per
    request, with the app's settings (its request id header)."""
    from freezewatch.asgi import FreezewatchMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        time.sleep(0.6)  # pin: asgi-freeze
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    inner = FreezewatchMiddleware(app, request_id_header="x-req")
    outer = FreezewatchMiddleware(inner)
    outer.yields = True
    sent: list[Any] = []

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/x",
                 "headers": [(b"x-req", b"r-42"), (b"x-request-id", b"other")]}
        await outer(scope, receive, send)
        await asyncio.sleep(0.2)

    asyncio.run(main())
    from conftest import only_dump
    from core_support import assert_frame_is, pin

    doc = only_dump(dump_dir)
    assert_frame_is(doc["blocking_frame"], pin(__file__, "asgi-freeze"))
    assert [(u["name"], u.get("request_id")) for u in doc["inflight"]] == [("GET /x", "r-42")]
    assert sent[0]["status"] == 200
