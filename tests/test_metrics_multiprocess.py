"""Multiprocess mode (PROMETHEUS_MULTIPROC_DIR) with real workers, and fork with real children."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import assert_contract, dumps, wait_for
from core_support import pin
from metrics_support import (
    ROOT,
    command,
    free_port,
    get,
    sample,
    start_app,
    stop,
    wait_ready,
)


def test_multiprocess_aggregates_three_workers(dump_dir: Path, tmp_path: Path) -> None:
    """Three worker processes: one /metrics sums their freezes and shows a live freeze."""
    mp_dir = tmp_path / "multiproc"
    mp_dir.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    # Worker 0 binds the port first; the others ask for it too and find it taken,
    # which in multiprocess mode is fine: worker 0 serves everyone's values.
    workers = [start_app(dump_dir, port, env, initial_freeze=0.6)]
    try:
        pids = [wait_ready(workers[0])]
        workers += [start_app(dump_dir, port, env, initial_freeze=0.6) for _ in range(2)]
        pids += [wait_ready(w) for w in workers[1:]]
        status, text = get(url)
        assert status == 200
        assert sample(text, "freezewatch_freezes_total") == 3.0  # one freeze in each worker
        assert sample(text, "freezewatch_freeze_duration_seconds_count") == 3.0
        assert wait_for(lambda: (sample(get(url)[1], "freezewatch_loop_tasks") or 0) >= 3,
                        timeout=10)  # livesum: each worker has at least its main task

        # A live freeze in worker 2 shows through worker 0's server (livemax).
        command(workers[2], "freeze 2.5")
        blocked = wait_for(lambda: (sample(get(url)[1], "freezewatch_loop_blocked_seconds")
                                    or 0) > 0.8 or None, timeout=10)
        assert blocked
        assert workers[2].stdout is not None and workers[2].stdout.readline().startswith("froze")
        assert wait_for(lambda: sample(get(url)[1], "freezewatch_freezes_total") == 4.0)
        assert wait_for(lambda: sample(get(url)[1], "freezewatch_loop_blocked_seconds") == 0.0)

        # A worker that exits cleanly removes its live-gauge files (mark_process_dead);
        # its counters stay in the total, as prometheus-client documents.
        assert list(mp_dir.glob(f"gauge_live*_{pids[1]}.db"))
        stop(workers[1])
        assert workers[1].returncode == 0
        assert not list(mp_dir.glob(f"gauge_live*_{pids[1]}.db"))
        assert sample(get(url)[1], "freezewatch_freezes_total") == 4.0
    finally:
        for w in workers:
            stop(w)
    found = dumps(dump_dir)
    assert {json.loads(p.read_text())["pid"] for p in found} == set(pids)
    for p in found:
        assert_contract(p)


# Run in its own interpreter: forking the pytest process (which has threads)
# is what DeprecationWarning warns about on 3.12+, and warnings are errors here.
FORK_SCRIPT = r'''
import asyncio, json, os, sys, threading, time
import structlog
import freezewatch

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
dump_dir, report = sys.argv[1], sys.argv[2]
SETTINGS = dict(threshold=0.3, interval=0.05, dump_dir=dump_dir, native=False, name="child")

def state(handles):
    names = [t.name for t in threading.enumerate()]
    return {"pid": os.getpid(), "inherited_active": [h.active for h in handles],
            "watchdogs": names.count("freezewatch-watchdog")}

async def freeze():
    await asyncio.sleep(0.3)
    time.sleep(1.0)  # pin: fork-freeze
    await asyncio.sleep(0.4)

def child(tag, handles, run_loop, sync_work=0.0):
    try:
        out = state(handles)
        if sync_work:  # like a process-pool worker: plain blocking work, no loop runs
            time.sleep(sync_work)
        if run_loop:
            asyncio.run(freeze())
        out["watchdogs_after"] = state(handles)["watchdogs"]
        with open(f"{report}.{tag}", "w") as f:
            json.dump(out, f)
    finally:
        os._exit(0)

# gunicorn --preload: install() at import time, before any loop; a loop in a
# background thread (a bot client) is watched too.
pending = freezewatch.install(**SETTINGS)
bg = asyncio.new_event_loop()
threading.Thread(target=bg.run_forever, name="bg-loop", daemon=True).start()
bg_handle = freezewatch.install(loop=bg, **SETTINGS)
time.sleep(0.3)
kids = []

# A: forked from the thread that installed: it runs a loop that freezes.
pid = os.fork()
if pid == 0:
    child("A", [pending, bg_handle], run_loop=True)
kids.append(pid)

# B: forked from another thread: no loop of it is watched, no watchdog runs.
def fork_b():
    pid = os.fork()
    if pid == 0:
        child("B", [pending, bg_handle], run_loop=True)
    kids.append(pid)
t = threading.Thread(target=fork_b)
t.start(); t.join()

# C: forked from inside a running, watched loop (multiprocessing from async
# code): blocking work in the child under the parent's loop frames is not a
# freeze of that loop; a loop the child then starts is watched.
async def parent_main():
    await asyncio.sleep(0.3)
    pid = os.fork()
    if pid == 0:
        child("C", [pending, bg_handle], run_loop=True, sync_work=1.0)
    kids.append(pid)
asyncio.run(parent_main())

for k in kids:
    os.waitpid(k, 0)
print(json.dumps({"A": kids[0], "B": kids[1], "C": kids[2], "parent": os.getpid(),
                  "bg_active": bg_handle.active}))
'''


def test_forked_children_watch_their_own_loops_or_none(dump_dir: Path, tmp_path: Path) -> None:
    """Forked children: a working watchdog for a loop they run, or none; never a stale handle."""
    script = tmp_path / "forker.py"
    script.write_text(FORK_SCRIPT)
    report = tmp_path / "report"
    res = subprocess.run([sys.executable, str(script), str(dump_dir), str(report)],
                         capture_output=True, text=True, timeout=45, cwd=str(ROOT))
    assert res.returncode == 0, res.stderr
    pids = json.loads(res.stdout.strip().splitlines()[-1])
    assert pids["bg_active"] is True  # the parent still watches its background loop
    kids = {tag: json.loads(Path(f"{report}.{tag}").read_text()) for tag in "ABC"}
    # Every inherited handle says it is not watching, in every child.
    for tag in "ABC":
        assert kids[tag]["inherited_active"] == [False, False]
    # A and C (forked from the installing thread) got a fresh watchdog; B none.
    assert (kids["A"]["watchdogs"], kids["B"]["watchdogs"], kids["C"]["watchdogs"]) == (1, 0, 1)
    assert kids["B"]["watchdogs_after"] == 0

    line = pin(script, "fork-freeze").line
    by_pid: dict[int, list[dict[str, object]]] = {}
    for p in dumps(dump_dir):
        doc = assert_contract(p)
        by_pid.setdefault(doc["pid"], []).append(doc)
    # A and C each pinned their own freeze; B (unwatched) and C's loop-less
    # blocking work under the parent's loop frames produced nothing.
    for tag in "AC":
        (doc,) = by_pid[pids[tag]]
        assert doc["blocking_frame"]["file"] == str(script)
        assert doc["blocking_frame"]["line"] == line
    assert pids["B"] not in by_pid
    assert pids["parent"] not in by_pid


def test_multiprocess_env_twin_and_busy_port_in_one_worker(dump_dir: Path,
                                                           tmp_path: Path) -> None:
    """A second worker asking for a taken port in multiprocess mode keeps running."""
    mp_dir = tmp_path / "multiproc"
    mp_dir.mkdir()
    port = free_port()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    first = start_app(dump_dir, port, env)
    second = None
    try:
        wait_ready(first)
        second = start_app(dump_dir, port, env)
        wait_ready(second)  # did not fail at install
        t0 = time.monotonic()
        command(second, "freeze 1.0")
        assert second.stdout is not None and second.stdout.readline().startswith("froze")
        assert time.monotonic() - t0 < 20
        assert sample(get(f"http://127.0.0.1:{port}/metrics")[1],
                      "freezewatch_freezes_total") == 1.0
    finally:
        stop(first)
        if second is not None:
            stop(second)
    for p in dumps(dump_dir):
        assert_contract(p)
