"""A GIL-held freeze in a forked child (gunicorn --preload style): install() runs
at import in the parent, os.fork(), the child's loop holds the GIL in a regex.

The child's own sentinel (started by the child's watchdog after the fork) must
write the child's dump while the regex runs, pinned to the exact line, with the
kernel view of the child's own loop thread (not the parent's thread id), and the
.txt must say what the JSON says about who captured the stack. The blocked-socket
case in a forked child (syscall and TCP peer) is tests/test_kernel.py's
``test_forked_child_kernel_view_names_syscall_and_peer``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_contract, dumps, wait_for
from core_support import pin
from test_gil import _calibrate

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc"),
              pytest.mark.timeout(90)]

CHILD = """
import asyncio, os, re, sys, time
from pathlib import Path
import freezewatch

DUMPS, MARKERS, SUBJECT = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
EVIL = re.compile(r"(a+)+$")
freezewatch.install(threshold=0.3, interval=0.05, dump_dir=DUMPS)  # at import, as --preload
pid = os.fork()
if pid == 0:
    async def main():
        await asyncio.sleep(1.5)  # the child's watchdog and sentinel are up
        (MARKERS / "started").write_text(str(os.getpid()))
        EVIL.match(SUBJECT)  # pin: child-regex
        (MARKERS / "returned").write_text(str(os.getpid()))
        await asyncio.sleep(0.8)  # the child's watchdog completes the dump
    asyncio.run(main())
    freezewatch.uninstall()
    os._exit(0)
_, status = os.waitpid(pid, 0)
print(pid, status)
"""


def test_gil_held_freeze_in_a_forked_child_is_dumped_while_it_lasts(tmp_path: Path) -> None:
    script = tmp_path / "preload.py"
    script.write_text(CHILD)
    dump_dir, markers = tmp_path / "dumps", tmp_path / "markers"
    markers.mkdir()
    proc = subprocess.Popen([sys.executable, "-W", "error", str(script), str(dump_dir),
                             str(markers), _calibrate(3.0)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (markers / "started").exists(), 30, 0.01)
        got = wait_for(lambda: dumps(dump_dir, kind="freeze") or (
            "returned" if (markers / "returned").exists() else None), 30, 0.01)
        returned_before = (markers / "returned").exists()
        early = json.loads(got[0].read_text()) if isinstance(got, list) else {}
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    child, status = out.split()
    assert status == "0", err
    assert early and not returned_before, f"no dump while the child's regex ran: {err}"
    file, line, code = pin(str(script), "child-regex")
    assert early["blocking_frame"]["file"] == file
    assert early["pid"] == int(child) and early["gil_held"] is True, err
    assert (early["blocking_frame"]["line"], early["blocking_frame"]["code"]) == (line, code)
    k = early["kernel"]
    # The child's own loop thread: readable, and on a CPU (the regex runs), never
    # "cannot read /proc/self/task/<the parent's tid>/stat".
    assert k["ok"] is True and k["state"] in ("R", "S", "D"), k
    assert k["error"] is None, k
    # faulthandler's signal reached the child's own loop thread (tgkill to its own id).
    assert early["captured_by"] == "faulthandler", early["captured_by"]
    (path,) = dumps(dump_dir, kind="freeze")
    doc = assert_contract(path)
    assert doc["pid"] == int(child) and doc["blocking_frame"]["line"] == line
    if "process_suspended" not in err:  # an overloaded machine voids the live part
        assert doc["complete"] is True and doc["duration"] > 1.0, err
    text = path.with_suffix(".txt").read_text()
    assert f"(captured by {doc['captured_by']})" in text, text[:2000]
