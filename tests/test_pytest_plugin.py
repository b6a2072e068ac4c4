"""The pytest plugin, run for real: pytester starts pytest in a subprocess, where
the plugin is loaded through its ``pytest11`` entry point like in any project."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from core_support import pin

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
asyncio_default_test_loop_scope = function
filterwarnings = error
timeout = 50
"""

UV_CONFTEST = '''
import uvloop


def pytest_asyncio_loop_factories(config, item):
    # Tests in this directory run on a uvloop loop.
    return {"uvloop": uvloop.new_event_loop}
'''

UV_CASES = '''
import asyncio
import time

import pytest


@pytest.mark.asyncio
async def test_on_uvloop():
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    await asyncio.sleep(0.01)
    time.sleep(0.8)  # pin: uvloop
'''

# Each blocking line ends with a "# pin: NAME" marker; the tests find its number.
CASES = '''
import asyncio
import http.server
import threading
import time
import urllib.request

import pytest
import pytest_asyncio
from aiohttp import web


@pytest.mark.asyncio
async def test_blocks():
    await asyncio.sleep(0.01)
    time.sleep(0.8)  # pin: blocks


@pytest.mark.asyncio
async def test_clean():
    await asyncio.sleep(0.4)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.flush()
        time.sleep(0.8)  # headers now, the body later: a slow upstream
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.mark.asyncio
async def test_sync_http_client(slow_server):
    with urllib.request.urlopen(slow_server) as resp:
        body = resp.read()  # pin: third-party
    assert body == b"ok"


async def _handler(request):
    time.sleep(0.8)  # pin: aiohttp-handler
    return web.Response(text="ok")


@pytest.mark.asyncio
async def test_aiohttp_handler(aiohttp_client):
    app = web.Application()
    app.router.add_get("/", _handler)
    client = await aiohttp_client(app)
    resp = await client.get("/")
    assert resp.status == 200


@pytest_asyncio.fixture
async def blocking_fixture():
    await asyncio.sleep(0.01)
    time.sleep(0.8)  # pin: fixture
    yield


@pytest.mark.asyncio
async def test_fixture_blocks(blocking_fixture):
    await asyncio.sleep(0.01)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_first():
    await asyncio.sleep(0.01)


@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop_second():
    await asyncio.sleep(0.01)
    time.sleep(0.8)  # pin: shared-loop


@pytest.mark.freezewatch(threshold=5.0)
@pytest.mark.asyncio
async def test_marker_raises_threshold():
    time.sleep(0.8)


@pytest.mark.freezewatch(enabled=False)
@pytest.mark.asyncio
async def test_marker_disables():
    time.sleep(0.8)


@pytest.mark.freezewatch(enabled=True, threshold=0.2)
@pytest.mark.asyncio
async def test_marker_enables():
    time.sleep(0.8)  # pin: marker-on


def test_sync_test_running_a_loop():
    async def main():
        time.sleep(0.8)  # pin: asyncio-run

    asyncio.run(main())
'''

CHEAP = '''
import sys
import threading


def test_plugin_loaded_but_inert(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("freezewatch")
    assert "structlog" not in sys.modules
    assert "prometheus_client" not in sys.modules
    assert [t.name for t in threading.enumerate() if t.name.startswith("freezewatch")] == []
'''


def _cases(pytester: pytest.Pytester) -> tuple[Path, Path]:
    """The cases file, and the uvloop one in a directory whose conftest picks uvloop."""
    pytester.makeini(INI)
    uv = pytester.mkpydir("uv")
    (uv / "conftest.py").write_text(UV_CONFTEST)
    (uv / "test_uv.py").write_text(UV_CASES)
    return pytester.makepyfile(test_cases=CASES), uv / "test_uv.py"


def _failure_section(out: str, test: str) -> str:
    """The text pytest printed for one failing (or erroring) test."""
    m = re.search(rf"_{{3,}} (?:ERROR at \w+ of )?{test} _{{3,}}\n(.*?)(?=\n_{{3,}} |\n={{3,}} )",
                  out, re.S)
    assert m, f"no failure section for {test}:\n{out}"
    return m.group(1)


def test_blocking_tests_fail_with_line_and_clean_ones_pass(pytester: pytest.Pytester) -> None:
    """--freezewatch=0.2: every test that blocked its loop fails naming the line; the rest pass."""
    path, uv_path = _cases(pytester)
    result = pytester.runpytest_subprocess("--freezewatch=0.2", "-p", "no:cacheprovider")
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert (outcomes.get("failed"), outcomes.get("errors"), outcomes.get("passed")) == (
        7, 1, 4), out
    src = str(path)
    for test, tag in [("test_blocks", "blocks"), ("test_aiohttp_handler", "aiohttp-handler"),
                      ("test_module_loop_second", "shared-loop"),
                      ("test_marker_enables", "marker-on"),
                      ("test_sync_test_running_a_loop", "asyncio-run"),
                      ("test_fixture_blocks", "fixture")]:
        section = _failure_section(out, test)
        assert f"Blocked at:  {src}:{pin(path, tag).line} in " in section, section
        assert "time.sleep(0.8)" in section
        assert "Dump: " in section
    section = _failure_section(out, "test_on_uvloop")
    assert f"Blocked at:  {uv_path}:{pin(uv_path, 'uvloop').line} in test_on_uvloop" in section
    # A sync HTTP client in the standard library: the blocking frame is the
    # socket read inside it, and the test's own line is named as the app line.
    section = _failure_section(out, "test_sync_http_client")
    assert re.search(r"Blocked at:  \S+/(socket|ssl|http/client)\.py:\d+ in ", section), section
    third_party = pin(path, "third-party").line
    assert f"App line:    {src}:{third_party} in test_sync_http_client" in section
    assert "body = resp.read()" in section
    for passed in ("test_clean", "test_module_loop_first", "test_marker_raises_threshold",
                   "test_marker_disables"):
        assert re.search(rf"^FAILED .*::{passed}\b", out, re.M) is None, out
    assert "freezewatch: a test fails if an event loop is blocked > 0.2 s" in out


def test_dump_of_a_failed_test_meets_the_contract(pytester: pytest.Pytester) -> None:
    """The dump a failed test points to is a contract-conforming dump of that line."""
    from conftest import assert_contract

    pytester.makeini(INI)
    path = pytester.makepyfile(test_one=CASES.split("class _SlowHandler")[0])
    result = pytester.runpytest_subprocess("--freezewatch=0.2", "-k", "test_blocks")
    result.assert_outcomes(failed=1)
    dump = re.search(r"^Dump: (\S+\.json)$", result.stdout.str(), re.M)
    assert dump, result.stdout.str()
    doc = assert_contract(dump.group(1))
    assert doc["blocking_frame"]["file"] == str(path)
    assert doc["blocking_frame"]["line"] == pin(path, "blocks").line


def test_inactive_by_default(pytester: pytest.Pytester) -> None:
    """Without --freezewatch or the ini option the same tests all pass; nothing starts."""
    _cases(pytester)
    pytester.makepyfile(test_aaa_cheap=CHEAP)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-k", "blocks or http or aiohttp or uvloop or running or cheap")
    result.assert_outcomes(passed=7, deselected=6)
    assert "freezewatch:" not in result.stdout.str()


def test_marker_enables_one_test_when_run_is_inactive(pytester: pytest.Pytester) -> None:
    """@pytest.mark.freezewatch(enabled=True) watches that test even without --freezewatch."""
    _cases(pytester)
    result = pytester.runpytest_subprocess("-k", "marker or clean")
    result.assert_outcomes(failed=1, passed=3)
    assert re.search(r"^FAILED .*::test_marker_enables\b", result.stdout.str(), re.M)


def test_ini_option_activates(pytester: pytest.Pytester) -> None:
    """The ini option 'freezewatch = 0.2' works like --freezewatch=0.2."""
    pytester.makeini(INI + "freezewatch = 0.2\n")
    pytester.makepyfile(test_one=CASES.split("class _SlowHandler")[0])
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1, passed=1)
    assert re.search(r"^FAILED .*::test_blocks\b", result.stdout.str(), re.M)
    # ... and --freezewatch=off on the command line wins over it.
    result = pytester.runpytest_subprocess("--freezewatch=off")
    result.assert_outcomes(passed=2)


def test_bare_flag_uses_default_threshold(pytester: pytest.Pytester) -> None:
    """A bare --freezewatch (after the paths) uses the default threshold of 0.25 s."""
    pytester.makeini(INI)
    pytester.makepyfile(test_one=CASES.split("class _SlowHandler")[0])
    result = pytester.runpytest_subprocess("test_one.py", "--freezewatch")
    result.assert_outcomes(failed=1, passed=1)
    assert "blocked > 0.25 s" in result.stdout.str()


def test_bad_threshold_is_a_usage_error(pytester: pytest.Pytester) -> None:
    """--freezewatch=abc and a swallowed path are usage errors with a hint, not a crash."""
    pytester.makeini(INI)
    pytester.makepyfile(test_one="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--freezewatch", "test_one.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--freezewatch=0.1" in result.stderr.str()
    assert "Traceback" not in result.stderr.str()
    pytester.makeini(INI + "freezewatch = soon\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "'soon' from the 'freezewatch' ini option" in result.stderr.str()


def test_marker_with_bad_threshold_errors_that_test(pytester: pytest.Pytester) -> None:
    """A marker with an invalid threshold is reported on its test, the others still run."""
    pytester.makeini(INI)
    pytester.makepyfile(test_one=textwrap.dedent('''
        import pytest

        @pytest.mark.freezewatch(threshold="soon")
        def test_bad():
            pass

        def test_ok():
            pass
    '''))
    result = pytester.runpytest_subprocess("--freezewatch=0.2")
    result.assert_outcomes(passed=1, errors=1)
    assert "'soon' from mark.freezewatch" in result.stdout.str()


GIL_RUNS = 7  # of each: 14 blocks, each test with its own watchdog and sentinel
GIL_CASES = '''
import asyncio
import json
import re
import time

import pytest

EVIL = re.compile(r"(a+)+$")


def _calibrated(seconds):
    """A subject the regex backtracks on for about ``seconds`` (holding the GIL)."""
    n = 16
    while True:
        subject = "a" * n + "b"
        t0 = time.perf_counter()
        EVIL.match(subject)
        if time.perf_counter() - t0 >= seconds:
            return subject
        n += 1


def _document(seconds):
    """A JSON document whose json.loads holds the GIL for at least ``seconds`` here
    (the fastest of two parses: without a garbage collection inside, which makes
    some parses slower, never faster)."""
    n = 125_000
    while True:
        doc = json.dumps([{"key": "value " * 8, "n": i} for i in range(n)])
        took = []
        for _ in range(2):
            t0 = time.perf_counter()
            json.loads(doc)
            took.append(time.perf_counter() - t0)
        if min(took) >= seconds:
            return doc
        n = int(n * min(4.0, 1.2 * seconds / max(min(took), 1e-3)))


SUBJECT = _calibrated(0.5)
DOC = _document(0.5)
RUNS = {runs}


# Each blocks in the test's first step: install() starts the sentinel before the
# test runs, and the loop that held the GIL from its start is still found.
@pytest.mark.asyncio
@pytest.mark.parametrize("run", range(RUNS))
async def test_regex_holds_the_gil(run):
    EVIL.match(SUBJECT)  # pin: regex
    await asyncio.sleep(0.05)


@pytest.mark.asyncio
@pytest.mark.parametrize("run", range(RUNS))
async def test_json_loads_holds_the_gil(run):
    json.loads(DOC)  # pin: json
    await asyncio.sleep(0.05)
'''.replace("{runs}", str(GIL_RUNS))


@pytest.mark.timeout(180)  # 14 blocks of ~0.5 s, each test's own watchdog and sentinel
def test_gil_holding_blocks_fail_naming_the_line(pytester: pytest.Pytester) -> None:
    """A regex or a json.loads holding the GIL ~0.5 s from the test's first step on,
    threshold 0.1: all GIL_RUNS runs of each fail, each naming its exact line (the plugin
    keeps the sentinel and faulthandler on: no Python thread can see such a block
    while it lasts)."""
    pytester.makeini(INI)
    path = pytester.makepyfile(test_gil=GIL_CASES)
    result = pytester.runpytest_subprocess("--freezewatch=0.1", "-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed") == 2 * GIL_RUNS, out
    # The regex is a C method: the test's line is the innermost Python frame. The
    # json decoder has Python frames of its own: the test's line is the app line.
    for test, tag, label in [("test_regex_holds_the_gil", "regex", "Blocked at:  "),
                             ("test_json_loads_holds_the_gil", "json", "App line:    ")]:
        for run in range(GIL_RUNS):
            section = _failure_section(out, re.escape(f"{test}[{run}]"))
            assert f"{label}{path}:{pin(path, tag).line} in {test}" in section, section
