"""Metrics, /healthz and systemd pings of one process: served from a thread during a freeze."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from conftest import assert_contract, dumps, only_dump, wait_for
from metrics_support import NO_PROMETHEUS, PROMTOOL, free_port, get, sample
from prometheus_client import CollectorRegistry, generate_latest

import freezewatch
from freezewatch._sinks.sdnotify import Notifier

METRICS = {  # the public metric families (docs/metrics.md), base names as in # TYPE
    "freezewatch_loop_lag_seconds": "histogram",
    "freezewatch_freezes_total": "counter",
    "freezewatch_freeze_duration_seconds": "histogram",
    "freezewatch_loop_blocked_seconds": "gauge",
    "freezewatch_loop_last_heartbeat_timestamp_seconds": "gauge",
    "freezewatch_loop_tasks": "gauge",
    "freezewatch_dumps_written_total": "counter",
    "freezewatch_dump_failures_total": "counter",
    "freezewatch_stalls_total": "counter",
    "freezewatch_worker_loop_blocked_seconds": "gauge",
    "freezewatch_metrics_server_skipped_total": "counter",
}
FAST = {"threshold": 0.3, "interval": 0.05, "native": False, "name": "app"}


def _in_thread(fn: Any, delay: float) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` after ``delay`` s on a plain thread (the loop is frozen meanwhile)."""
    out: list[Any] = []

    def run() -> None:
        time.sleep(delay)
        out.append(fn())

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_scrape_during_sleep_freeze_answers_fast(dump_dir: Path) -> None:
    """A scrape during a time.sleep freeze answers within 1 s and shows blocked > 0."""
    port = free_port()

    def scrape() -> tuple[float, int, str]:
        t0 = time.monotonic()
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        return time.monotonic() - t0, status, body

    reg = CollectorRegistry()

    async def main() -> tuple[float, int, str]:
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, registry=reg, **FAST)
        await asyncio.sleep(0.3)
        t, out = _in_thread(scrape, 1.0)
        time.sleep(1.8)  # the freeze; the scrape lands ~1.0 s into it
        t.join()
        await asyncio.sleep(0.3)
        return out[0]  # type: ignore[no-any-return]

    took, status, body = asyncio.run(main())
    assert status == 200
    assert took < 1.0
    blocked = sample(body, "freezewatch_loop_blocked_seconds")
    assert blocked is not None and blocked > 0.5
    assert sample(body, "freezewatch_freezes_total") == 1.0
    for path in dumps(dump_dir):
        assert_contract(path)
    # After the freeze: its duration observed; uninstalled, the loop's gauges are gone.
    freezewatch.uninstall()
    after = generate_latest(reg).decode()
    assert sample(after, "freezewatch_freeze_duration_seconds_count") == 1.0
    assert sample(after, "freezewatch_loop_blocked_seconds") is None


def test_healthz_503_past_liveness_limit_then_200(dump_dir: Path) -> None:
    """/healthz is 200, then 503 naming the loop once frozen past liveness_limit, then 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"

    async def main() -> list[tuple[int, str]]:
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, liveness_limit=0.6,
                            **FAST)
        await asyncio.sleep(0.3)
        before = get(url)
        t, out = _in_thread(lambda: get(url), 1.2)
        time.sleep(1.8)
        t.join()
        await asyncio.sleep(0.3)
        return [before, out[0], get(url)]

    (s0, b0), (s1, b1), (s2, b2) = asyncio.run(main())
    assert (s0, json.loads(b0)["status"]) == (200, "ok")
    assert s1 == 503
    doc = json.loads(b1)
    assert doc["status"] == "frozen"
    (frozen,) = doc["frozen"]
    assert frozen["loop"] == "app"
    assert frozen["blocked_seconds"] > 0.6
    assert frozen["liveness_limit"] == 0.6
    assert (s2, json.loads(b2)["status"]) == (200, "ok")
    for path in dumps(dump_dir):
        assert_contract(path)


def test_healthz_stays_200_for_freeze_shorter_than_limit(dump_dir: Path) -> None:
    """A freeze shorter than liveness_limit is dumped but /healthz stays 200."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"

    async def main() -> tuple[int, str]:
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, liveness_limit=5.0,
                            **FAST)
        await asyncio.sleep(0.3)
        t, out = _in_thread(lambda: get(url), 0.8)
        time.sleep(1.2)
        t.join()
        return out[0]  # type: ignore[no-any-return]

    status, body = asyncio.run(main())
    assert status == 200, body
    assert json.loads(body)["loops"][0]["blocked_seconds"] > 0.3
    only_dump(dump_dir)


def test_systemd_pings_stop_during_freeze_and_resume(
        dump_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG=1 datagrams reach a real Unix socket, stop during a freeze, resume after."""
    # A real AF_UNIX datagram socket stands in for systemd (PID 1 is not ours to use).
    addr = str(tmp_path / "notify.sock")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(addr)
    sd.settimeout(0.2)
    pings: list[float] = []
    done = threading.Event()

    def receive() -> None:
        while not done.is_set():
            try:
                msg = sd.recv(100)
            except TimeoutError:
                continue
            except OSError:  # socket.timeout on 3.10 is an OSError subclass too
                continue
            assert msg == b"WATCHDOG=1"
            pings.append(time.monotonic())

    receiver = threading.Thread(target=receive)
    receiver.start()
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # systemd WatchdogSec=0.2: ping every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    async def main() -> tuple[float, float]:
        freezewatch.install(dump_dir=str(dump_dir), liveness_limit=0.3, **FAST)
        await asyncio.sleep(0.6)
        t0 = time.monotonic()
        time.sleep(1.6)
        t1 = time.monotonic()
        await asyncio.sleep(0.8)
        return t0, t1

    try:
        t0, t1 = asyncio.run(main())
    finally:
        done.set()
        receiver.join()
        sd.close()
    before = [p for p in pings if p < t0]
    # Pings may go on until the loop is blocked past liveness_limit (0.3 s, plus a
    # round or two of the watchdog); after that none until the loop answers.
    during = [p for p in pings if t0 + 0.8 < p < t1]
    after = [p for p in pings if p > t1]
    assert len(before) >= 2
    assert during == []
    assert len(after) >= 2
    only_dump(dump_dir)  # the dump was written before the pings stopped


def test_systemd_notifier_only_for_its_own_pid() -> None:
    """WATCHDOG_PID naming another process, or no WATCHDOG_USEC, means no pings."""
    base = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    n = Notifier.from_env({**base, "WATCHDOG_PID": str(os.getpid())})
    assert n is not None and n.period == 15.0
    assert Notifier.from_env({**base, "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert Notifier.from_env({"NOTIFY_SOCKET": "/run/systemd/notify"}) is None
    assert Notifier.from_env({**base, "NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"  # type: ignore[union-attr]


def test_custom_registry_gets_metrics_default_does_not(dump_dir: Path) -> None:
    """With registry=, the metrics land in that registry and not in the default one."""
    reg = CollectorRegistry()

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), registry=reg, **{**FAST, "name": "mine"})
        await asyncio.sleep(0.3)
        time.sleep(0.6)
        await asyncio.sleep(0.3)

    asyncio.run(main())
    mine = generate_latest(reg).decode()
    assert sample(mine, "freezewatch_freezes_total", loop="mine") == 1.0
    assert sample(mine, "freezewatch_loop_lag_seconds_count", loop="mine")
    default = generate_latest(prometheus_client.REGISTRY).decode()
    assert 'loop="mine"' not in default
    only_dump(dump_dir)


def test_uninstall_and_reinstall_no_duplicated_timeseries(dump_dir: Path) -> None:
    """install, uninstall, install again (same registry) works and keeps counting."""
    reg = CollectorRegistry()
    port = free_port()

    async def once() -> None:
        freezewatch.install(dump_dir=str(dump_dir), registry=reg, metrics_port=port, **FAST)
        await asyncio.sleep(0.3)
        time.sleep(0.6)
        await asyncio.sleep(0.3)
        freezewatch.uninstall()

    asyncio.run(once())
    asyncio.run(once())  # raised "Duplicated timeseries" if metrics were made per install
    assert sample(generate_latest(reg).decode(), "freezewatch_freezes_total") == 2.0
    for path in dumps(dump_dir):
        assert_contract(path)


def test_server_binds_loopback_and_stops_with_uninstall(dump_dir: Path) -> None:
    """The server listens on 127.0.0.1 only by default and frees its port at uninstall."""
    port = free_port()

    from freezewatch import _state

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=port, **FAST)
        await asyncio.sleep(0.2)
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        srv = _state.metrics_server
        assert srv is not None and srv._httpd.socket.getsockname()[0] == "127.0.0.1"
        freezewatch.uninstall()
        assert _state.metrics_server is None

    asyncio.run(main())
    with socket.socket() as s:
        # SO_REUSEADDR: the closed scrape connection may sit in TIME_WAIT on this
        # port; bind() still fails if anything listens there.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_bad_metrics_settings_raise_at_install(
        dump_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad metrics settings raise ValueError naming the setting and its source."""
    with pytest.raises(ValueError, match=r"metrics_port .* got 70000 from install"):
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=70000)
    with pytest.raises(ValueError, match="liveness_limit must be > 0"):
        freezewatch.install(dump_dir=str(dump_dir), liveness_limit=0)
    with pytest.raises(ValueError, match="registry must be a prometheus_client"):
        freezewatch.install(dump_dir=str(dump_dir), registry=object())
    monkeypatch.setenv("FREEZEWATCH_METRICS_PORT", "nine")
    with pytest.raises(ValueError, match="FREEZEWATCH_METRICS_PORT environment variable"):
        freezewatch.install(dump_dir=str(dump_dir))
    monkeypatch.delenv("FREEZEWATCH_METRICS_PORT")
    # An address this host does not have cannot be bound: a setting error. (A port
    # that is merely taken is not: tests/test_workers.py.)
    with pytest.raises(ValueError, match=r"metrics_port 9 on metrics_addr '192\.0\.2\.1' cannot"):
        freezewatch.install(dump_dir=str(dump_dir), metrics_port=9, metrics_addr="192.0.2.1")
    from freezewatch import _state

    assert _state.watchdog is None or not _state.watchdog.watches  # no half-made handle


def test_metrics_port_from_environment(dump_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FREEZEWATCH_METRICS_PORT starts the server without code changes."""
    port = free_port()
    monkeypatch.setenv("FREEZEWATCH_METRICS_PORT", str(port))

    async def main() -> tuple[int, str]:
        freezewatch.install(dump_dir=str(dump_dir), **{**FAST, "name": "from-env"})
        await asyncio.sleep(0.3)
        return get(f"http://127.0.0.1:{port}/metrics")

    status, body = asyncio.run(main())
    assert status == 200  # prometheus-client's default registry, served with no code
    assert sample(body, "freezewatch_loop_lag_seconds_count", loop="from-env")


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMETHEUS)
def test_exposition_passes_promtool_check_metrics(dump_dir: Path) -> None:
    """Every freezewatch metric, with samples after a freeze, passes promtool check metrics."""
    reg = CollectorRegistry()

    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), registry=reg, **FAST)
        await asyncio.sleep(0.3)
        time.sleep(0.6)
        await asyncio.sleep(0.3)

    asyncio.run(main())
    text = generate_latest(reg)
    for name, kind in METRICS.items():
        assert f"# TYPE {name} {kind}\n".encode() in text
    res = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text,
                         capture_output=True, timeout=30)
    assert res.returncode == 0, (res.stdout + res.stderr).decode()
    assert (res.stdout + res.stderr).strip() == b""  # no lint remarks either
    only_dump(dump_dir)


def test_live_tasks_gauge_counts_tasks(dump_dir: Path) -> None:
    """freezewatch_loop_tasks counts the loop's unfinished tasks."""
    reg = CollectorRegistry()

    async def main() -> float | None:
        tasks = [asyncio.create_task(asyncio.sleep(5)) for _ in range(25)]
        freezewatch.install(dump_dir=str(dump_dir), registry=reg, **FAST)
        value = await asyncio.to_thread(wait_for, lambda: sample(
            generate_latest(reg).decode(), "freezewatch_loop_tasks"), 5.0)
        for t in tasks:
            t.cancel()
        return value  # type: ignore[no-any-return]

    assert asyncio.run(main()) >= 26  # type: ignore[operator]
