"""Multi-worker servers, for real: uvicorn --workers 2, gunicorn --preload -w 2, zero-code.

Each test starts a real server on 127.0.0.1 (tests/workers_app.py), freezes
both workers at once with a request that time.sleep()s on the loop, and
checks what an operator gets: every worker started (its app lifespan ran),
one dump per worker pinned to the sleeping line and naming the request,
metrics of every worker over HTTP, and a /healthz that says which worker is
frozen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_contract, wait_for
from core_support import assert_frame_is, pin
from workers_support import APP, Server, freeze_dumps, freeze_each_worker, server

pytestmark = pytest.mark.timeout(60)
FREEZE = pin(APP, "freeze")


def _check_dumps(s: Server, pids: set[int], named: bool = True) -> None:
    """One freeze dump per worker, on the sleeping line, naming the request."""
    docs = wait_for(lambda: (d := freeze_dumps(s.dump_dir, s.before)) and set(d) >= pids and d,
                    timeout=10)
    assert set(docs) == pids
    for path in s.dump_dir.glob("*.json"):  # every dump of the run, start-up freezes too
        assert_contract(path)
    for doc in docs.values():
        assert_frame_is(doc["blocking_frame"], FREEZE)
        if named:
            assert [u["name"] for u in doc["inflight"]] == ["GET /freeze"], doc["inflight"]


def _all_freezes_counted(s: Server) -> None:
    """Every worker's freezes summed in the served metrics: one per freeze dump
    (no rate limit here; a worker's start-up, under load, may freeze too)."""
    def counted() -> bool:
        n = sum(json.loads(p.read_text())["kind"] == "freeze"
                for p in s.dump_dir.glob("freeze-*.json"))
        return n >= 2 and _sample(s.metrics()[1], "freezewatch_freezes_total") == float(n)

    wait_for(counted, timeout=10, every=0.2)


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_uvicorn_workers_with_one_metrics_port(tmp_path: Path) -> None:
    """Defect 1: FREEZEWATCH_METRICS_PORT with --workers 2 and no multiprocess
    directory. The second worker finds the port taken: it starts normally (its
    lifespan runs), is watched (its freeze is dumped) and says it serves no metrics."""
    with server("uvicorn", tmp_path) as s:
        pids = s.wait_workers(2)
        answered, _ = freeze_each_worker(s, seconds=1.5)
        assert set(answered) == pids
        _check_dumps(s, pids)
        wait_for(lambda: "metrics_server_skipped" in s.stderr(), timeout=5)
        err = s.stderr()
        assert err.count("metrics_server_skipped") == 1, err
        assert "PROMETHEUS_MULTIPROC_DIR" in err and "Traceback" not in err, err
        assert "lifespan' protocol appears unsupported" not in err
        # The worker that holds the port serves its own metrics, its pid labelled.
        status, text = s.metrics()
        assert status == 200
        served = [p for p in pids if _sample(text, "freezewatch_worker_loop_blocked_seconds",
                                             pid=str(p)) is not None]
        assert len(served) == 1, text
        assert _sample(text, "freezewatch_freezes_total") == 1.0


def test_gunicorn_preload_multiprocess(tmp_path: Path) -> None:
    """gunicorn -k UvicornWorker -w 2 --preload, install() at import (in the master),
    multiprocess mode: the master serves every worker's metrics and a /healthz
    that names each frozen worker's pid."""
    mp = tmp_path / "multiproc"
    mp.mkdir()
    env = {"WORKERS_INSTALL": "import", "PROMETHEUS_MULTIPROC_DIR": str(mp)}
    with server("gunicorn", tmp_path, env) as s:
        pids = s.wait_workers(2)
        answered, (health, metrics) = freeze_each_worker(
            s, seconds=2.5, during=lambda: (s.metrics("/healthz"), s.metrics()))
        assert set(answered) == pids
        _check_dumps(s, pids)
        status, body = health
        doc = json.loads(body)
        assert status == 503, doc
        assert doc["pid"] == s.proc.pid  # the master serves
        assert {f["pid"] for f in doc["frozen"]} == pids, doc
        assert all(str(p) in doc["detail"] for p in pids)
        text = metrics[1]
        for p in pids:  # which worker is frozen, in the metrics too
            assert (_sample(text, "freezewatch_worker_loop_blocked_seconds", pid=str(p))
                    or 0) > 0.5, text
        assert (_sample(text, "freezewatch_loop_blocked_seconds") or 0) > 0.5
        # After the freezes: every worker's freeze counted, everyone healthy again.
        _all_freezes_counted(s)
        wait_for(lambda: s.metrics("/healthz")[0] == 200, timeout=5)
        doc = json.loads(s.metrics("/healthz")[1])
        assert {e["pid"] for e in doc["loops"]} == pids, doc
        assert "Traceback" not in s.stderr()


def test_zero_code_uvicorn_workers(tmp_path: Path) -> None:
    """Defect 2: freezewatch run --metrics-port P -- uvicorn --workers 2, the app
    untouched. Every worker is watched (a dump each, naming the request), the
    supervisor's /healthz names the frozen workers, and no helper process
    (multiprocessing's resource tracker) prints a traceback."""
    mp = tmp_path / "multiproc"
    mp.mkdir()
    env = {"WORKERS_INSTALL": "none", "PROMETHEUS_MULTIPROC_DIR": str(mp)}
    with server("uvicorn", tmp_path, env, zero_code=True) as s:
        pids = s.wait_workers(2)
        answered, (health, _) = freeze_each_worker(
            s, seconds=2.5, during=lambda: (s.metrics("/healthz"), None))
        assert set(answered) == pids
        _check_dumps(s, pids)
        status, body = health
        doc = json.loads(body)
        assert status == 503, doc
        assert {f["pid"] for f in doc["frozen"]} == pids, doc
        _all_freezes_counted(s)
        err = s.stderr()
        assert "not watching pid" not in err, err
        assert "Traceback" not in err and "closed file" not in err, err
