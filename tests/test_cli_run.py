"""``freezewatch run``: real programs, started through the installed console script,
watched without importing freezewatch; exit statuses pass through."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import dumps, only_dump, wait_for
from core_support import pin

BIN = Path(sys.executable).parent / "freezewatch"
PYTHON = sys.executable

FREEZER = '''
import asyncio
import json
import sys
import threading
import time


WATCHED = []


async def main():
    await asyncio.sleep(0.2)
    # Asked while the loop runs: the watchdog thread stops with the last loop.
    WATCHED.append(any(t.name == "freezewatch-watchdog" for t in threading.enumerate()))
    time.sleep(1.2)  # pin: block
    await asyncio.sleep(0.4)


{runner}
print(json.dumps({{
    "imported_freezewatch": "freezewatch" in sys.modules,
    "boot_on_path": any("_boot" in p for p in sys.path),
    "watchdog": WATCHED == [True],
}}))
sys.exit({exit})
'''

UVICORN_APP = '''
import asyncio
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    time.sleep(1.5)  # pin: handler
    loop_module = type(asyncio.get_running_loop()).__module__
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": loop_module.encode()})
'''


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FREEZEWATCH_")}
    env.update(FREEZEWATCH_NATIVE="0", **more)  # py-spy is covered by the core's tests
    return env


def _run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("runner", ["asyncio.run(main())", "import uvloop; uvloop.run(main())"],
                         ids=["asyncio", "uvloop"])
def test_run_script_pinned_without_importing_freezewatch(tmp_path: Path, runner: str) -> None:
    """`freezewatch run -- python script.py` dumps the script's blocking line; the script
    never imports freezewatch and its sys.path is untouched."""
    script = tmp_path / "freezer.py"
    script.write_text(FREEZER.format(runner=runner, exit=0))
    dump_dir = tmp_path / "dumps"
    proc = _run("run", "--threshold", "0.3", "--dump-dir", str(dump_dir), "--",
                PYTHON, str(script))
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"imported_freezewatch": True, "boot_on_path": False, "watchdog": True}
    doc = only_dump(dump_dir)
    assert doc["blocking_frame"]["file"] == str(script)
    assert doc["blocking_frame"]["line"] == pin(script, "block").line
    assert doc["threshold"] == 0.3
    assert doc["duration"] >= 0.6


def test_run_python_dash_m(tmp_path: Path) -> None:
    """`freezewatch run -- python -m module` watches the module's loop (relative dump dir
    resolved against the directory `run` was started in)."""
    module = tmp_path / "blocker.py"
    module.write_text(FREEZER.format(runner="asyncio.run(main())", exit=0))
    proc = _run("run", "--threshold", "0.3", "--dump-dir", "rel-dumps", "--",
                PYTHON, "-m", "blocker", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = only_dump(tmp_path / "rel-dumps")
    assert doc["blocking_frame"]["file"] == str(module)
    assert doc["blocking_frame"]["line"] == pin(module, "block").line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_run_uvicorn_console_script(tmp_path: Path, loop: str) -> None:
    """`freezewatch run -- uvicorn app:app` pins a blocking handler on asyncio and uvloop;
    SIGINT stops uvicorn cleanly through freezewatch (status 0)."""
    app = tmp_path / "app.py"
    app.write_text(UVICORN_APP)
    dump_dir = tmp_path / "dumps"
    port = _free_port()
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    proc = subprocess.Popen(
        [str(BIN), "run", "--threshold", "0.3", "--dump-dir", str(dump_dir), "--", uvicorn,
         "app:app", "--host", "127.0.0.1", "--port", str(port), "--loop", loop,
         "--no-access-log"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    bodies: list[bytes] = []
    try:
        def get() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    bodies.append(r.read())
                    return True
            except OSError:
                return False

        threading.Thread(target=lambda: wait_for(get, timeout=20, every=0.2),
                         daemon=True).start()
        wait_for(lambda: dumps(dump_dir), timeout=20)
        wait_for(lambda: bodies, timeout=20)
        proc.send_signal(signal.SIGINT)  # freezewatch exec'd uvicorn: this is uvicorn's pid
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    doc = only_dump(dump_dir)
    assert doc["blocking_frame"]["file"] == str(app)
    assert doc["blocking_frame"]["line"] == pin(app, "handler").line
    assert bodies[0].decode().split(".")[0] == loop  # the loop the handler ran on


FORKER = '''
import asyncio
import os
import time


async def work():
    await asyncio.sleep(0.3)
    time.sleep(1.0)  # pin: child
    await asyncio.sleep(0.4)


pid = os.fork()
if pid == 0:
    asyncio.run(work())
    os._exit(0)
print(pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
'''


def test_run_watches_a_forked_child(tmp_path: Path) -> None:
    """A child forked by the command (gunicorn-style) is watched afresh: its freeze is
    dumped under its own pid."""
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    dump_dir = tmp_path / "dumps"
    proc = _run("run", "--threshold", "0.3", "--dump-dir", str(dump_dir), "--",
                PYTHON, str(script))
    assert proc.returncode == 0, proc.stderr
    child, status = proc.stdout.split()[-2:]
    assert status == "0"
    doc = only_dump(dump_dir)
    assert doc["pid"] == int(child)
    assert doc["blocking_frame"]["line"] == pin(script, "child").line


@pytest.mark.parametrize(("code", "status"), [
    ("pass", 0),
    ("import sys; sys.exit(3)", 3),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", -signal.SIGTERM),
])
def test_run_passes_exit_status_through(code: str, status: int, tmp_path: Path) -> None:
    """The command's exit status is freezewatch run's (0, 3; killed by SIGTERM: the same death)."""
    proc = _run("run", "--dump-dir", str(tmp_path), "--", PYTHON, "-c", code)
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == ""


def test_run_chains_an_existing_sitecustomize(tmp_path: Path) -> None:
    """A sitecustomize the command would have run still runs (freezewatch's hook chains to it)."""
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("MARK = 'theirs'\n")
    code = ("import sitecustomize, sys, threading; print(sitecustomize.MARK, "
            "any(t.name == 'freezewatch-watchdog' for t in threading.enumerate()))")
    proc = _run("run", "--dump-dir", str(tmp_path / "d"), "--", PYTHON, "-c", code,
                env=_env(PYTHONPATH=str(own)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["theirs", "True"]


@pytest.mark.parametrize(("args", "status", "message"), [
    (["run"], 2, "no command to run"),
    (["run", "--"], 2, "no command to run"),
    (["run", "--", "no-such-command-fw"], 127, "command not found: no-such-command-fw"),
    (["run", "--threshold", "-1", "--", "true"], 2,
     "threshold must be > 0, got '-1' from --threshold"),
    (["run", "--threshold", "abc", "--", "true"], 2,
     "threshold must be a number, got 'abc' from --threshold"),
    (["run", "--metrics-port", "http", "--", "true"], 2,
     "metrics_port must be a number, got 'http' from --metrics-port"),
    (["run", "--dump-dir", "/proc/no/such", "--", "true"], 2,
     "(from --dump-dir) cannot be created or written"),
    (["run", "--bogus", "--", "true"], 2, "unrecognized arguments: --bogus"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
])
def test_run_errors_are_one_line(args: list[str], status: int, message: str,
                                 tmp_path: Path) -> None:
    """A usage or start error is one line on stderr and a non-zero status, no traceback."""
    proc = _run(*args, cwd=tmp_path)
    assert proc.returncode == status
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.startswith("freezewatch")


def test_run_blames_the_environment_variable_when_no_option_was_given(tmp_path: Path) -> None:
    """A bad FREEZEWATCH_THRESHOLD with no --threshold is still blamed on the variable."""
    proc = _run("run", "--", "true", cwd=tmp_path, env=_env(FREEZEWATCH_THRESHOLD="abc"))
    assert proc.returncode == 2
    assert "got 'abc' from FREEZEWATCH_THRESHOLD environment variable" in proc.stderr


def test_help_has_examples_for_every_command() -> None:
    """`--help` of the command and of each subcommand shows examples."""
    for args in ([], ["run"], ["show"], ["report"]):
        proc = _run(*args, "--help")
        assert proc.returncode == 0
        assert "examples:\n  freezewatch " in proc.stdout, proc.stdout
