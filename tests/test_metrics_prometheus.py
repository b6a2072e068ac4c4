"""A real Prometheus server scrapes a freezing app; promtool checks the rules and the dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import only_dump, wait_for
from metrics_support import (
    NO_PROMETHEUS,
    PROMETHEUS,
    PROMTOOL,
    ROOT,
    command,
    free_port,
    get,
    start_app,
    stop,
    wait_ready,
)

KIT = ROOT / "scripts" / "prometheus"
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=NO_PROMETHEUS)


class Prometheus:
    """Debian's prometheus binary on 127.0.0.1 with its own config and storage."""

    def __init__(self, tmp: Path, target_port: int) -> None:
        self.port = free_port()
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
            "scrape_configs:\n  - job_name: app\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = (tmp / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def url(self, path: str, **params: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, "prometheus exited; see prometheus.log"
            try:
                return get(self.url("/-/ready"), timeout=1)[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=30, every=0.2)

    def samples(self, selector: str, seconds: int) -> list[tuple[float, float]]:
        """Raw samples (timestamp, value) of ``selector`` over the last ``seconds``."""
        status, body = get(self.url("/api/v1/query", query=f"{selector}[{seconds}s]",
                                    time=str(time.time())))
        assert status == 200, body
        result = json.loads(body)["data"]["result"]
        return [(float(t), float(v)) for series in result for t, v in series["values"]]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def app_and_prometheus(dump_dir: Path, tmp_path: Path) -> Iterator[tuple[Any, Prometheus]]:
    port = free_port()
    app = start_app(dump_dir, port)
    prom = None
    try:
        wait_ready(app)
        prom = Prometheus(tmp_path, port)
        yield app, prom
    finally:
        if prom is not None:
            prom.stop()  # our own server process: never left running
        stop(app)


def test_real_prometheus_records_freeze_while_it_happens(
        app_and_prometheus: tuple[Any, Prometheus], dump_dir: Path) -> None:
    """Prometheus scraping every 0.5 s stores blocked > 0 from inside a 4 s freeze, +1 freeze."""
    app, prom = app_and_prometheus
    prom.wait_ready()
    # Scrapes are flowing before the freeze.
    wait_for(lambda: any(v == 1.0 for _, v in prom.samples('up{job="app"}', 30)), timeout=20,
             every=0.25)
    command(app, "freeze 4")
    froze = app.stdout.readline().split()
    assert froze[0] == "froze", froze
    start, end = float(froze[1]), float(froze[2])
    time.sleep(1.5)  # a few scrapes after the freeze

    blocked = prom.samples('freezewatch_loop_blocked_seconds{loop="app"}', 60)
    inside = [(t, v) for t, v in blocked if start < t < end and v > 0]
    # 4 s frozen, 0.3 s threshold, one scrape per 0.5 s: ~7 scrapes saw it; ask for 3.
    assert len(inside) >= 3, blocked
    assert max(v for _, v in inside) > 2.0
    values = [v for _, v in sorted(inside)]
    assert values == sorted(values)  # the freeze grows from scrape to scrape
    up = prom.samples('up{job="app"}', 60)
    assert all(v == 1.0 for t, v in up if start < t < end)  # no scrape failed while frozen
    freezes = [v for _, v in sorted(prom.samples('freezewatch_freezes_total{loop="app"}', 60))]
    assert freezes[0] == 0.0 and freezes[-1] == 1.0
    last = prom.samples('freezewatch_loop_blocked_seconds{loop="app"}', 1)
    assert last and all(v == 0.0 for _, v in last)  # back to 0 once the loop answers
    only_dump(dump_dir)


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    """promtool accepts the alerting rules and their unit tests pass."""
    for args in (["check", "rules", "freezewatch-rules.yml"],
                 ["test", "rules", "freezewatch-rules.test.yml"]):
        res = subprocess.run([str(PROMTOOL), *args], cwd=KIT, capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout


def test_rules_and_dashboard_use_only_real_metric_names() -> None:
    """Every freezewatch_* name in the rules and the dashboard is a metric freezewatch exports."""
    from test_metrics import METRICS

    known = set()
    for name, kind in METRICS.items():
        known.add(name)
        if kind == "histogram":
            known |= {name + s for s in ("_bucket", "_count", "_sum")}
    dashboard = (KIT / "freezewatch-dashboard.json").read_text()
    json.loads(dashboard)  # valid JSON, importable into Grafana
    for text in (dashboard, (KIT / "freezewatch-rules.yml").read_text()):
        used = set(re.findall(r"freezewatch_[a-z_]+", text))
        assert used and used <= known, used - known
