"""``freezewatch report DIR --html OUT.html`` on real dumps, looked at in a real browser.

The dumps come from real programs run under ``freezewatch run``: freezes at
two lines of one program (and a CPU spin and a lock wait), a stall, a
regex that holds the GIL, a process killed mid-freeze (its freeze never
ended), and a program whose function, task and request are named
``<img src=x onerror=alert(1)>``. The page is opened in Debian's headless
Chromium, driven by selenium through Debian's chromedriver, with the network
switched off.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, assert_contract
from core_support import pin
from html_support import (
    CHROMEDRIVER,
    CHROMIUM,
    FREEZES,
    GIL,
    STALL,
    UNFINISHED,
    XSS,
    XSS_PROGRAM,
    browser,
    finish,
    gil_dumps,
    kill_mid_freeze,
    report_html,
    start,
)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them: "
    "apt-get install chromium chromium-driver)")


class Dumps:
    """Two dump directories written by real runs: ``dir`` (the report) and ``xss``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "dumps"
        self.xss = root / "xss-dumps"
        scripts = {}
        for name, src in (("freezes", FREEZES), ("stall", STALL), ("gil", GIL),
                          ("unfinished", UNFINISHED), ("xss", XSS_PROGRAM)):
            scripts[name] = root / f"{name}.py"
            scripts[name].write_text(src)
        self.scripts = scripts
        # The GIL program alone first (other programs' CPU use would look like an
        # overload to it); then the rest at once, all but the killed one mostly asleep.
        gil_dumps(scripts["gil"], self.dir)
        killed = root / "killed-dumps"
        procs = [start(scripts[n], self.dir) for n in ("freezes", "stall")]
        procs.append(start(scripts["xss"], self.xss))
        kill_mid_freeze(start(scripts["unfinished"], killed), killed)
        for proc in procs:
            finish(proc)
        for path in killed.iterdir():
            path.rename(self.dir / path.name)
        self.docs = {p.name: assert_contract(p) for p in sorted(self.dir.glob("*.json"))}
        self.xss_docs = {p.name: assert_contract(p) for p in sorted(self.xss.glob("*.json"))}

    def line(self, script: str, tag: str) -> int:
        return pin(self.scripts[script], tag).line

    def at(self, script: str, tag: str) -> list[dict[str, Any]]:
        """The dumps whose blocking frame is the line tagged ``tag`` in ``script``."""
        file, line = str(self.scripts[script]), self.line(script, tag)
        return [d for d in self.docs.values()
                if (d["blocking_frame"]["file"], d["blocking_frame"]["line"]) == (file, line)]

    def totals(self) -> dict[tuple[str, str, int], float]:
        """Time lost per (kind, file, line), as the report counts it."""
        out: dict[tuple[str, str, int], float] = defaultdict(float)
        for d in self.docs.values():
            f = d["blocking_frame"]
            out[(d["kind"], f["file"], f["line"])] += d.get("duration", d["blocked_for"])
        return out


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> Dumps:
    d = Dumps(tmp_path_factory.mktemp("html"))
    # What the tests below rely on: the dumps really are of these kinds.
    assert len(d.at("freezes", "fetch")) == 2 and len(d.at("freezes", "parse")) == 1
    assert [x["kind"] for x in d.docs.values()].count("stall") == 1
    (gil,) = d.at("gil", "regex")
    assert gil["gil_held"] is True and gil["cause"] == "GIL held"
    (killed,) = d.at("unfinished", "forever")
    assert "duration" not in killed
    return d


@pytest.fixture(scope="module")
def page(dumps: Dumps) -> Path:
    out = dumps.root / "report.html"
    proc = report_html(dumps.dir, out)
    assert proc.returncode == 0, proc.stderr
    freezes = [d["kind"] for d in dumps.docs.values()].count("freeze")
    assert proc.stdout.startswith(f"wrote {out}: {freezes} freeze(s) and 1 stall(s) at "
                                  f"{len(dumps.totals())} place(s)")
    return out


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pytest.importorskip("selenium", reason="selenium (the test extra) drives the browser")
    driver = browser(tmp_path_factory.mktemp("chrome-profile"))
    try:
        # No network at all: a page that needed any would show it (and log errors).
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
            "offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        yield driver
    finally:
        driver.quit()


def _open(chrome: Any, path: Path) -> None:
    chrome.get_log("browser")  # drop what an earlier page logged
    from selenium.webdriver.support.ui import WebDriverWait

    chrome.get(path.as_uri())
    WebDriverWait(chrome, 15).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def _console_problems(chrome: Any) -> list[dict[str, Any]]:
    return [e for e in chrome.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def _screenshot(chrome: Any, path: Path) -> None:
    """The whole page (the window made as tall as it is) as a PNG."""
    height = chrome.execute_script("return document.documentElement.scrollHeight")
    chrome.set_window_size(1280, min(int(height) + 40, 6000))
    assert chrome.save_screenshot(str(path))
    chrome.set_window_size(1280, 900)


def _rows(chrome: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return chrome.find_elements(By.CSS_SELECTOR, "details.sig-row")


def test_page_loads_offline_with_one_mark_per_freeze_and_stall(
        dumps: Dumps, page: Path, chrome: Any, tmp_path: Path) -> None:
    """Offline, the page loads with no console error and fetches nothing; the timeline has
    one mark per freeze and stall, in one lane per process, coloured by cause."""
    from selenium.webdriver.common.by import By

    _open(chrome, page)
    _screenshot(chrome, tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert _console_problems(chrome) == []
    assert chrome.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert chrome.title == f"freezewatch report \u2014 {dumps.dir}"
    marks = chrome.find_elements(By.CSS_SELECTOR, "svg.timeline rect.mark")
    counted = [d for d in dumps.docs.values() if d["kind"] in ("freeze", "stall")]
    assert len(marks) == len(counted) >= 6  # (a CPU spin on an overloaded machine is no freeze)
    assert all(m.is_displayed() for m in marks)
    causes = sorted(m.get_attribute("data-cause") for m in marks)
    assert causes == sorted("stall" if d["kind"] == "stall" else d["cause"] for d in counted)
    assert {"GIL held", "stall", "blocked syscall"} <= set(causes)
    unfinished = [m for m in marks if m.get_attribute("data-unfinished") is not None]
    assert len(unfinished) == 1
    assert "unfinished" in unfinished[0].find_element(By.TAG_NAME, "title").get_attribute(
        "textContent")
    lanes = chrome.find_elements(By.CSS_SELECTOR, "svg.timeline .lane-label")
    assert len(lanes) == len({d["pid"] for d in counted}) == 4
    headline = chrome.find_element(By.CSS_SELECTOR, ".cards").text
    freezes = len(counted) - 1
    assert re.search(rf"FREEZES\s+{freezes}\s+1 unfinished", headline), headline
    assert re.search(r"STALLS\s+1\b", headline) and "4 loops" in headline


def test_ranked_first_row_is_the_signature_that_lost_most(
        dumps: Dumps, page: Path, chrome: Any) -> None:
    """Rows are ranked by time lost: the first is the place with the largest total."""
    from selenium.webdriver.common.by import By

    _open(chrome, page)
    rows = _rows(chrome)
    totals = dumps.totals()
    assert len(rows) == len(totals) >= 5
    (_, file, line), lost = max(totals.items(), key=lambda kv: kv[1])
    first = rows[0].find_element(By.CSS_SELECTOR, "summary .sig").text
    assert f"{os.path.basename(file)}:{line}" in first, first
    shown = [float(r.get_attribute("data-total")) for r in rows]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == pytest.approx(lost, abs=0.002)
    fetch = next(r for r in rows if f"freezes.py:{dumps.line('freezes', 'fetch')}" in r.text)
    assert fetch.find_element(By.CSS_SELECTOR, "summary .n").text == "2"  # its count


def test_expanding_a_signature_shows_its_source_line(
        dumps: Dumps, page: Path, chrome: Any) -> None:
    """A row opens on a click to its lines, cause, in-flight work, stack, tasks and dump file."""
    from selenium.webdriver.common.by import By

    _open(chrome, page)
    stall = next(r for r in _rows(chrome) if "stall" in r.find_element(
        By.CSS_SELECTOR, "summary .pill").text)
    sources = stall.find_elements(By.CSS_SELECTOR, ".detail pre.src")
    assert sources and not any(s.is_displayed() for s in sources)
    stall.find_element(By.TAG_NAME, "summary").click()
    assert stall.get_attribute("open") is not None
    shown = [s.text for s in sources if s.is_displayed()]
    # The stdlib line it waited at, and the application's own line that led there.
    assert "await asyncio.sleep(1.0)  # pin: stall" in shown, shown
    text = stall.find_element(By.CSS_SELECTOR, ".detail").text
    (doc,) = [d for d in dumps.docs.values() if d["kind"] == "stall"]
    assert "reconcile" in text  # in flight
    assert "Await chain of the stalled task" in text and "Loop thread stack" in text
    assert "Tasks: " in text
    assert next(n for n, d in dumps.docs.items() if d is doc) in text  # its dump file

    gil = next(r for r in _rows(chrome) if f"gil.py:{dumps.line('gil', 'regex')}" in r.text)
    gil.find_element(By.TAG_NAME, "summary").click()
    text = gil.find_element(By.CSS_SELECTOR, ".detail").text
    assert "EVIL.match(text)  # pin: regex" in text
    assert "GIL held" in text and "held during the freeze" in text
    assert _console_problems(chrome) == []


def test_xss_dump_renders_as_text_and_runs_nothing(
        dumps: Dumps, chrome: Any, tmp_path: Path) -> None:
    """A function, task and request named <img src=x onerror=alert(1)> show as that text:
    no element, no alert, the title unchanged, nothing logged."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    (doc,) = dumps.xss_docs.values()
    assert doc["blocking_frame"]["function"] == XSS
    assert [u["name"] for u in doc["inflight"]] == [f"GET /{XSS}"]
    out = tmp_path / "xss.html"
    proc = report_html(dumps.xss, out)
    assert proc.returncode == 0, proc.stderr
    assert XSS not in out.read_text()  # only its escaped form
    _open(chrome, out)
    row = _rows(chrome)[0]
    row.find_element(By.TAG_NAME, "summary").click()
    time.sleep(0.3)  # time for an injected handler to fire, were there one
    with pytest.raises(NoAlertPresentException):
        chrome.switch_to.alert.text  # noqa: B018 - reading it is the check
    assert chrome.title == f"freezewatch report \u2014 {dumps.xss}"
    assert chrome.execute_script("return document.images.length") == 0
    assert chrome.execute_script("return document.scripts.length") == 0
    text = row.text
    assert XSS in text and f"GET /{XSS}" in text
    assert _console_problems(chrome) == []


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_hostile_and_broken_files_are_skipped_with_a_note(
        dumps: Dumps, chrome: Any, tmp_path: Path) -> None:
    """Broken files are listed as skipped; a dump with odd shapes and control characters is
    shown, its text made visible, and nothing breaks the page."""
    from selenium.webdriver.common.by import By

    d = _copy(dumps.dir, tmp_path / "dumps")
    real = next(n for n, x in dumps.docs.items() if x["kind"] == "freeze")
    # Deliberately NOT dumps (no contract check): a cut file, a list, an unknown kind, a FIFO
    # and a link to a device.
    (d / "freeze-20250101T000000Z-1-0001.json").write_text((d / real).read_text()[:300])
    (d / "freeze-20250101T000001Z-1-0002.json").write_text("[1, 2]")
    (d / "freeze-20250101T000002Z-1-0003.json").write_text('{"kind": "meltdown"}')
    # A dump in shape where the checker looks, odd everywhere else.
    odd = json.loads((d / real).read_text())
    odd["blocking_frame"] = dict(odd["blocking_frame"], function="evil\x1b[31m\u202etxt.exe",
                                 code="x = 1\r\n" + "y" * 5000 + "\ud800")
    odd["app_frame"] = None
    odd.update(pid=4242, tasks=[{"await_chain": [], "names": 7, "count": 3},
                                {"await_chain": [5, None, {"file": 1}], "state": {}}],
               threads=[], inflight=[
        1, {"name": {"nested": "<b>"}, "age": "old"}], cause=["not", "a", "string"],
        waits_for=[], request="GET /", loop={"name": 5, "thread_id": 1, "thread_name": None},
        detected_at=1e12, hostname="<script>alert(2)</script>")  # the year 33658
    os.mkfifo(d / "freeze-20250101T000004Z-1-0005.json")  # would block a plain open()
    (d / "freeze-20250101T000005Z-1-0006.json").symlink_to("/dev/zero")  # would never end
    odd_path = d / "freeze-20250101T000003Z-4242-0004.json"
    odd_path.write_text(json.dumps(odd))
    odd_path.chmod(0o600)
    shutil.copy(d / real.replace(".json", ".txt"), odd_path.with_suffix(".txt"))
    assert assert_contract(odd_path)
    out = tmp_path / "hostile.html"
    proc = report_html(d, out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning: skipped") == 5
    html = out.read_text(encoding="utf-8")
    assert "\x1b" not in html and "\u202e" not in html and "\r" not in html
    assert "evil\\x1b[31m\\u202etxt.exe" in html and "<script>" not in html
    assert "1 dump with an implausible time (before 2000 or after 2100)" in html
    _open(chrome, out)
    skipped = chrome.find_element(By.CSS_SELECTOR, "ul.skipped").text
    for n in ("0001", "0002", "0003", "0005", "0006"):
        assert f"freeze-20250101T00000{int(n) - 1}Z-1-{n}.json" in skipped
    assert len(_rows(chrome)) == len(dumps.totals()) + 1
    for row in _rows(chrome):
        row.find_element(By.TAG_NAME, "summary").click()
    assert _console_problems(chrome) == []
    # An unwritable output is one line, not a traceback.
    proc = report_html(d, tmp_path / "no-such-dir" / "x.html")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith("freezewatch report: error: cannot write")


def test_wait_for_chain_is_shown(dumps: Dumps, chrome: Any, tmp_path: Path) -> None:
    """A dump with the optional waits_for chain shows who waits on what, held by whom, where."""
    from selenium.webdriver.common.by import By

    d = tmp_path / "dumps"
    d.mkdir()
    (name, doc), = [(n, x) for n, x in dumps.docs.items()
                    if x["blocking_frame"]["line"] == dumps.line("freezes", "lock")
                    and x["blocking_frame"]["file"] == str(dumps.scripts["freezes"])]
    hold = {"file": str(dumps.scripts["freezes"]), "line": 20, "function": "hold",
            "code": "time.sleep(seconds)"}
    doc = dict(doc, waits_for=[{
        "waiter": {"thread": "MainThread"},
        "on": {"type": "threading.Lock", "name": "lock", "id": "0x7f00deadbeef"},
        "holders": [{"thread": "holder", "frame": hold, "count": 1, "certain": False}]}])
    path = d / name
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    shutil.copy(dumps.dir / name.replace(".json", ".txt"), path.with_suffix(".txt"))
    assert_contract(path)
    out = tmp_path / "chain.html"
    assert report_html(d, out).returncode == 0
    _open(chrome, out)
    row = _rows(chrome)[0]
    row.find_element(By.TAG_NAME, "summary").click()
    chain = row.find_element(By.CSS_SELECTOR, "ol.chain").text
    assert "thread MainThread waits on threading.Lock lock" in chain
    assert "thread holder (inferred) at" in chain and "time.sleep(seconds)" in chain


def test_ten_thousand_dumps_make_a_bounded_page(dumps: Dumps, tmp_path: Path) -> None:
    """10,000 dumps (copies of a real one, moved in time and place): a page under 5 MB that
    says its marks were merged. (Generation time: scripts/report_html_bench.py.)"""
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    from report_html_bench import fill

    # 20,000 files: on a tmpfs when there is one (creating them on a shared disk takes longer
    # than the report itself).
    shm = Path("/dev/shm")
    d = Path(tempfile.mkdtemp(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path))
    try:
        fill(d, dumps.dir / next(n for n, x in dumps.docs.items() if x["kind"] == "freeze"),
             10_000)
        names = sorted(p.name for p in d.glob("*.json"))
        assert len(names) == 10_000
        for n in names[::997]:  # a sample: the copies are made the same way
            assert_contract(d / n)
        out = tmp_path / "big.html"
        proc = report_html(d, out)
    finally:
        shutil.rmtree(d)
    assert proc.returncode == 0, proc.stderr
    size = out.stat().st_size
    assert size < 5_000_000, size
    html = out.read_text()
    assert html.count('<rect class="mark') <= 3000
    assert "share a mark" in html and "more signature" in html
