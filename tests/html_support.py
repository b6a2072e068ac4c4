"""Real dumps for the HTML report's tests, and a headless Chromium to look at the page.

Each program below is run under ``freezewatch run`` (as an operator runs a
service) and freezes or stalls for real; the lines the page must show carry
a trailing ``# pin: NAME`` comment, found with ``core_support.pin``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent / "freezewatch"
XSS = "<img src=x onerror=alert(1)>"

FREEZES = '''
import asyncio
import threading
import time

lock = threading.Lock()


def fetch(seconds):
    time.sleep(seconds)  # pin: fetch


def crunch(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # pin: crunch
        pass


def hold(seconds):
    with lock:
        time.sleep(seconds)


async def main():
    await asyncio.sleep(0.3)
    fetch(1.0)
    await asyncio.sleep(0.4)
    fetch(0.8)
    await asyncio.sleep(0.4)
    time.sleep(0.6)  # pin: parse
    await asyncio.sleep(0.4)
    crunch(0.7)
    await asyncio.sleep(0.4)
    threading.Thread(target=hold, args=(0.9,), name="holder").start()
    await asyncio.sleep(0.05)
    with lock:  # pin: lock
        pass
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

# Catastrophic backtracking: the regex engine runs in C and never releases the GIL.
# Calibrated here, to about 1.5 s on this machine whatever its load.
GIL = '''
import asyncio
import re
import time

EVIL = re.compile(r"(a+)+$")


def timed(n):
    t0 = time.perf_counter()
    EVIL.match("a" * n + "b")
    return time.perf_counter() - t0


def subject(target=1.5):
    n = 16
    while True:  # the time doubles with each extra "a"
        took = min(timed(n) for _ in range(2))
        if took > 0.05 or n >= 26:
            break
        n += 1
    while took < target and n < 34:
        n, took = n + 1, took * 2
    return "a" * n + "b"


async def main():
    text = subject()
    await asyncio.sleep(0.8)  # the sentinel is up
    EVIL.match(text)  # pin: regex
    await asyncio.sleep(0.6)


asyncio.run(main())
'''

UNFINISHED = '''
import asyncio
import time


async def main():
    await asyncio.sleep(0.3)
    time.sleep(60)  # the test kills the process mid-freeze  # pin: forever


asyncio.run(main())
'''

XSS_PROGRAM = f'''
import asyncio
import time

import freezewatch

XSS = {XSS!r}


def handler():
    time.sleep(0.8)  # pin: xss


# A function whose name is markup: the page must show it as text.
handler.__code__ = handler.__code__.replace(co_name=XSS)
if hasattr(handler.__code__, "co_qualname"):
    handler.__code__ = handler.__code__.replace(co_qualname=XSS)


async def request():
    async with freezewatch.watch("GET /" + XSS):
        handler()


async def main():
    await asyncio.sleep(0.3)
    await asyncio.create_task(request(), name=XSS)
    await asyncio.sleep(0.4)


asyncio.run(main())
'''


def env(**more: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("FREEZEWATCH_")}
    out.update(FREEZEWATCH_NATIVE="0", FREEZEWATCH_DUMP_RATE_WINDOW="0", **more)
    return out


def start(script: Path, dump_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN), "run", "--threshold", "0.3", "--dump-dir", str(dump_dir), "--",
         sys.executable, str(script)], env=env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err


def gil_dumps(script: Path, dump_dir: Path, tries: int = 5) -> None:
    """Run the GIL program until it leaves its freeze dump.

    On a machine whose CPUs are busy with other work, freezewatch rightly calls
    a silence in which its threads waited for a CPU an overload, not a freeze
    (``process_suspended``), and writes no dump: then it is run again.
    """
    for _ in range(tries):
        finish(start(script, dump_dir))
        if list(dump_dir.glob("freeze-*.json")):
            return
    raise AssertionError(f"no GIL-held freeze dump in {tries} runs (machine overloaded?)")


def kill_mid_freeze(proc: subprocess.Popen[str], dump_dir: Path, timeout: float = 30) -> None:
    """SIGKILL ``proc`` once its first freeze dump is written: the freeze never ends."""
    deadline = time.monotonic() + timeout
    while not list(dump_dir.glob("freeze-*.json")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no freeze dump within the timeout"
        time.sleep(0.05)
    time.sleep(0.3)  # the .txt twin too
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def report_html(dump_dir: Path, out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), "report", str(dump_dir), "--html", str(out), *more],
                          env=env(), capture_output=True, text=True, timeout=60)


# -- the browser ---------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def browser(profile: Path) -> Any:
    """Debian's headless Chromium driven by its chromedriver (no download of either)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    return driver
