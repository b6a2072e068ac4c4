"""An application that holds the GIL on its loop thread, run as a subprocess by
tests/test_gil_sentinel.py (the test watches its dump directory from outside).

    python gil_app.py DUMP_DIR MODE ARG [--faulthandler 0|1]

MODE: ``regex N`` (the catastrophic regex on "a" * N + "b"), ``gc N`` (a full
collection over N small dicts), ``json N`` (``json.loads`` of a list of N
items), ``idle S`` (an idle loop for S seconds), ``sigdfl N`` / ``own N`` (the
app resets freezewatch's signal to SIG_DFL / installs its own handler there,
then runs the regex), ``restart N`` (waits for the test to kill the sentinel and
write the ``killed`` marker, then runs the regex). Marker files in DUMP_DIR/../markers: ``started``
(written just before the blocking call) and ``returned`` (right after).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import freezewatch
from freezewatch import _faulthandler

EVIL = re.compile(r"(a+)+$")
KEEP: list[object] = []
"""What the app built or parsed: freed only by os._exit (freeing it is a freeze too)."""


def mark(name: str) -> None:
    markers = Path(sys.argv[1]).parent / "markers"
    markers.mkdir(exist_ok=True)
    (markers / name).write_text(f"{time.time()!r}\n")


async def main(dump_dir: str, mode: str, arg: int) -> None:
    # Built before install(): building them freezes the loop too (and its young
    # collections over millions of objects hold the GIL).
    doc = ""
    if mode == "gc":
        KEEP.append([{"a": []} for _ in range(arg)])
    elif mode == "json":
        doc = json.dumps([[i, str(i), {"k": i}] for i in range(arg)])
    freezewatch.install(threshold=0.3, interval=0.05, dump_dir=dump_dir)
    got: list[int] = []
    if mode == "sigdfl":
        await asyncio.sleep(0.5)
        signal.signal(_faulthandler.SIGNAL, signal.SIG_DFL)
    elif mode == "own":
        await asyncio.sleep(0.5)
        signal.signal(_faulthandler.SIGNAL, lambda n, _f: got.append(n))
    elif mode == "restart":  # the test SIGKILLs the sentinel meanwhile, then says so
        markers = Path(dump_dir).parent / "markers"
        for _ in range(400):
            if (markers / "killed").exists():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(2.0)  # the watchdog sees it gone (once a second) and starts anew
    await asyncio.sleep(1.0)  # the sentinel is up; the watchdog saw the change
    mark("started")
    if mode in ("regex", "sigdfl", "own", "restart"):
        EVIL.match("a" * arg + "b")  # pin: regex
    elif mode == "gc":
        gc.collect()  # pin: gc
    elif mode == "json":
        KEEP.append(json.loads(doc))  # pin: json
    elif mode == "idle":
        await asyncio.sleep(arg)
    mark("returned")
    await asyncio.sleep(0.6)  # the watchdog completes the dump
    if mode == "own":
        print(f"@@ own handler called {len(got)} times", flush=True)
    KEEP.append(doc)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    freezewatch.uninstall()
    os._exit(0)
