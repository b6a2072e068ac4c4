"""``freezewatch show`` and ``freezewatch report`` on real dumps, written by real
programs run under ``freezewatch run``."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract
from conftest import dumps as dump_files
from core_support import pin

BIN = Path(sys.executable).parent / "freezewatch"

FREEZES = '''
import asyncio
import time


def fetch(seconds):
    time.sleep(seconds)  # pin: fetch


async def main():
    await asyncio.sleep(0.2)
    fetch(1.0)
    await asyncio.sleep(0.4)
    fetch(0.7)
    await asyncio.sleep(0.4)
    time.sleep(0.6)  # pin: parse
    await asyncio.sleep(0.4)


asyncio.run(main())
'''

STALL = '''
import asyncio

import freezewatch  # installed by `freezewatch run`; this script only marks a unit of work


async def main():
    await asyncio.sleep(0.3)  # the watchdog attaches to this loop meanwhile
    async with freezewatch.watch("reconcile", stall_after=0.3):
        await asyncio.sleep(1.0)  # pin: stall


asyncio.run(main())
'''


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FREEZEWATCH_") and k != "NO_COLOR"}
    env.update(more)
    return env


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], env=env or _env(), capture_output=True, text=True,
                          timeout=60)


class Dumps:
    """A dump directory written by two real runs, and where each dump should point."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "dumps"
        self.freezes_py = root / "freezes.py"
        self.stall_py = root / "stall.py"
        self.freezes_py.write_text(FREEZES)
        self.stall_py.write_text(STALL)
        env = _env(FREEZEWATCH_NATIVE="0", FREEZEWATCH_DUMP_RATE_WINDOW="0")
        for script in (self.freezes_py, self.stall_py):
            proc = subprocess.run(
                [str(BIN), "run", "--threshold", "0.3", "--dump-dir", str(self.dir), "--",
                 sys.executable, str(script)], env=env, capture_output=True, text=True,
                timeout=60)
            assert proc.returncode == 0, proc.stderr
        self.docs = {p.name: assert_contract(p) for p in dump_files(self.dir, kind="*")}

    def where(self, script: Path, tag: str, function: str) -> str:
        here = pin(script, tag)
        return f"{here.file}:{here.line} in {function}"

    def stall_where(self) -> str:
        (doc,) = [d for d in self.docs.values() if d["kind"] == "stall"]
        assert doc["app_frame"]["file"] == str(self.stall_py)
        f = doc["blocking_frame"]
        return f"{f['file']}:{f['line']} in {f['function']}"

    def of(self, where: str) -> list[dict[str, Any]]:
        def w(d: dict[str, Any]) -> str:
            f = d["blocking_frame"]
            return f"{f['file']}:{f['line']} in {f['function']}"
        return [d for d in self.docs.values() if w(d) == where]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> Dumps:
    return Dumps(tmp_path_factory.mktemp("cli"))


# -- show ---------------------------------------------------------------------
def test_show_prints_the_report_plain_when_piped(dumps: Dumps) -> None:
    """Piped, `show` prints exactly the readable report (the .txt twin), with no colour codes."""
    name = next(n for n, d in dumps.docs.items() if d["kind"] == "freeze")
    proc = _cli("show", str(dumps.dir / name))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (dumps.dir / name).with_suffix(".txt").read_text()
    assert "\033[" not in proc.stdout
    assert f"Blocked at:  {dumps.where(dumps.freezes_py, 'fetch', 'fetch')}" in proc.stdout


def _on_a_tty(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI with a real pseudo-terminal as its stdout; return what it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(BIN), *args], env=env or _env(TERM="xterm", PAGER="cat"),
                            stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    return b"".join(chunks).decode()


def test_show_colours_on_a_terminal(dumps: Dumps) -> None:
    """On a terminal the headline and the blocking line are coloured; --no-color and NO_COLOR
    turn it off."""
    path = str(dumps.dir / next(n for n, d in dumps.docs.items() if d["kind"] == "freeze"))
    out = _on_a_tty("show", path)
    assert "\033[1m\033[31mFREEZE: event loop" in out
    assert "\033[1mBlocked at:\033[0m\033[1m\033[33m" in out
    assert "\033[" not in _on_a_tty("show", "--no-color", path)
    assert "\033[" not in _on_a_tty("show", path, env=_env(TERM="xterm", NO_COLOR="1",
                                                            PAGER="cat"))


def test_show_stall(dumps: Dumps) -> None:
    """A stall dump shows as a STALL naming the unit of work and its awaiting line."""
    name = next(n for n, d in dumps.docs.items() if d["kind"] == "stall")
    proc = _cli("show", str(dumps.dir / name))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("STALL: reconcile open for")
    assert dumps.where(dumps.stall_py, 'stall', 'main') in proc.stdout


def test_show_errors_are_one_line(dumps: Dumps, tmp_path: Path) -> None:
    """Missing, truncated, non-dump JSON and a directory: one line on stderr, status 1."""
    real = next(iter(dumps.docs))
    truncated = tmp_path / "truncated.json"
    truncated.write_text((dumps.dir / real).read_text()[:200])
    other = tmp_path / "other.json"
    other.write_text('{"hello": "world"}')
    cases = [
        (tmp_path / "missing.json", "no such file"),
        (truncated, "is not a JSON dump"),
        (other, "is not a freezewatch dump"),
        (dumps.dir, "is a directory"),
    ]
    for path, message in cases:
        proc = _cli("show", str(path))
        assert proc.returncode == 1, path
        assert proc.stdout == ""
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("freezewatch show: error: ")
        assert message in proc.stderr


# -- report -------------------------------------------------------------------
def test_report_groups_by_blocking_line_sorted_by_time_lost(dumps: Dumps) -> None:
    """The table lists each blocking line once, with count, total and longest, the
    costliest first."""
    fetch = dumps.where(dumps.freezes_py, "fetch", "fetch")
    parse = dumps.where(dumps.freezes_py, "parse", "main")
    stall = dumps.stall_where()  # asyncio's sleep: the innermost frame of the await chain
    assert [len(dumps.of(w)) for w in (fetch, parse, stall)] == [2, 1, 1]
    proc = _cli("report", str(dumps.dir))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    rows = [ln for ln in proc.stdout.splitlines() if ln[:3].strip().isdigit()]
    assert len(rows) == 3, proc.stdout
    assert rows[0].endswith(f"freeze  {fetch}")
    assert rows[0].split()[2] == "2"  # count
    total = sum(d["duration"] for d in dumps.of(fetch))
    longest = max(d["duration"] for d in dumps.of(fetch))
    assert rows[0].split()[1] == f"{total:.2f}s"
    assert rows[0].split()[3] == f"{longest:.2f}s"
    assert sorted([rows[1].endswith(f"freeze  {parse}"), rows[2].endswith(f"freeze  {parse}"),
                   rows[1].endswith(f"stall   {stall}"), rows[2].endswith(f"stall   {stall}")]
                  ) == [False, False, True, True], rows
    assert "3 freeze(s) and 1 stall(s) at 3 place(s)" in proc.stdout
    # Under a blocking frame in library code, the application line that led there.
    app = dumps.where(dumps.stall_py, "stall", "main")
    assert f"     app line: {app} (1x)" in proc.stdout


def test_report_json(dumps: Dumps) -> None:
    """--json gives the same groups for machines, with an example dump that exists."""
    proc = _cli("report", str(dumps.dir), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    fetch = dumps.where(dumps.freezes_py, "fetch", "fetch")
    first = doc["groups"][0]
    assert (first["kind"], first["where"], first["count"]) == ("freeze", fetch, 2)
    assert first["total_seconds"] == round(sum(d["duration"] for d in dumps.of(fetch)), 3)
    assert first["code"] == pin(dumps.freezes_py, "fetch").code
    assert Path(first["example"]).exists()
    assert first["example"].endswith(".json") and first["unfinished"] == 0
    assert first["first_seen"] <= first["last_seen"]
    stall = next(g for g in doc["groups"] if g["kind"] == "stall")
    assert stall["where"] == dumps.stall_where()
    assert stall["app_lines"] == [{"where": dumps.where(dumps.stall_py, "stall", "main"),
                                   "count": 1}]
    assert (doc["freezes"], doc["stalls"], doc["places"], doc["skipped"]) == (3, 1, 3, [])
    totals = [g["total_seconds"] for g in doc["groups"]]
    assert totals == sorted(totals, reverse=True)


def test_report_skips_a_corrupted_dump_with_a_warning(dumps: Dumps, tmp_path: Path) -> None:
    """A truncated dump is skipped with one warning on stderr; the others are still reported."""
    copy = tmp_path / "dumps"
    shutil.copytree(dumps.dir, copy)
    bad = copy / "freeze-20250101T000000Z-1-0001.json"
    bad.write_text((dumps.dir / next(iter(dumps.docs))).read_text()[:300])  # cut mid-write
    proc = _cli("report", str(copy), "--json")
    assert proc.returncode == 0
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith(f"freezewatch report: warning: skipped {bad}: ")
    doc = json.loads(proc.stdout)
    assert (doc["freezes"], doc["stalls"]) == (3, 1)
    assert [s["file"] for s in doc["skipped"]] == [bad.name]


def test_report_since(dumps: Dumps, tmp_path: Path) -> None:
    """--since leaves out older freezes (an age or an ISO date); a bad value is a usage error."""
    copy = tmp_path / "dumps"
    shutil.copytree(dumps.dir, copy)
    # The same freeze, three days earlier (a real dump, moved in time).
    doc = next(d for d in dumps.docs.values() if d["kind"] == "freeze")
    old = dict(doc, detected_at=doc["detected_at"] - 3 * 86400)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(old["detected_at"]))
    (copy / f"freeze-{stamp}-1-0001.json").write_text(json.dumps(old))

    def freezes(*args: str) -> int:
        proc = _cli("report", str(copy), "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return int(json.loads(proc.stdout)["freezes"])

    assert freezes() == 4
    assert freezes("--since", "2d") == 3
    assert freezes("--since", "1h") == 3
    since_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(old["detected_at"] - 60))
    assert freezes("--since", since_iso) == 4
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    proc = _cli("report", str(copy), "--since", tomorrow)
    assert proc.returncode == 0
    assert "no freezes or stalls since" in proc.stdout
    proc = _cli("report", str(copy), "--since", "last tuesday")
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and "--since" in proc.stderr


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    """An empty or missing directory, or an unknown option: one line on stderr, non-zero."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "freeze-20250101T000000Z-1-0001.json").write_text("{")
    cases = [
        (["report", str(tmp_path / "empty")], 1, "no freezewatch dumps"),
        (["report", str(tmp_path / "missing")], 1, "no such directory"),
        (["report", str(tmp_path / "junk")], 1, "no readable dumps"),
        (["report", str(tmp_path / "empty"), "--bogus"], 2, "unrecognized arguments: --bogus"),
    ]
    for args, status, message in cases:
        proc = _cli(*args)
        assert proc.returncode == status, args
        errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
        assert len(errors) == 1 and message in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_big_directory_is_read_by_several_processes_to_the_same_report(
        dumps: Dumps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From 2,000 dumps the CLI parses them in forked processes (one per CPU): the
    report and its warnings are exactly those of reading them one by one here."""
    from freezewatch import _cli_report

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from report_html_bench import fill

    big = tmp_path / "big"
    freeze = next(n for n, d in dumps.docs.items() if d["kind"] == "freeze")
    fill(big, dumps.dir / freeze, 2_400)
    for name, text in (("freeze-20250101T000000Z-1-0001.json", "{\"kind\": \"fre"),
                       ("freeze-20250101T000001Z-1-0002.json", "[1, 2]"),
                       ("stall-20250101T000002Z-1-0003.json", "{\"kind\": \"other\"}")):
        (big / name).write_text(text)
    assert len(list(big.glob("*.json"))) >= _cli_report.PARALLEL_AT
    proc = _cli("report", str(big), "--json")
    assert proc.returncode == 0, proc.stderr
    warned: list[str] = []
    monkeypatch.setattr(_cli_report, "PARALLEL_AT", 10**9)  # here: one by one
    here = _cli_report.scan(str(big), None, warned.append).to_json()
    assert json.loads(proc.stdout) == json.loads(json.dumps(here))
    assert len(here["skipped"]) == 3
    assert proc.stderr.splitlines() == [f"freezewatch report: warning: {w}" for w in warned]
