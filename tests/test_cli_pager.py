"""`freezewatch show` on a terminal pages through $PAGER (else less -FRX), as git
does; piped, or with --no-pager, PAGER=cat or an empty PAGER, it writes directly."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "freezewatch"

FREEZE = '''
import asyncio, time

async def main():
    await asyncio.sleep(0.2)
    time.sleep(0.6)
    await asyncio.sleep(0.3)

asyncio.run(main())
'''

# A pager that records it ran, with what environment and input.
RECORDER = '''
import json, os, sys
data = sys.stdin.buffer.read()
with open(sys.argv[1], "w") as f:
    json.dump({"argv": sys.argv[2:], "less": os.environ.get("LESS"),
               "stdout_tty": os.isatty(1), "text": data.decode()}, f)
'''


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FREEZEWATCH_") and k not in ("NO_COLOR", "PAGER", "LESS")}
    env.update(TERM="xterm", **more)
    return env


@pytest.fixture(scope="module")
def dump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pager")
    (root / "freeze.py").write_text(FREEZE)
    env = _env(FREEZEWATCH_NATIVE="0", FREEZEWATCH_SENTINEL="0")
    proc = subprocess.run([str(BIN), "run", "--threshold", "0.3", "--dump-dir",
                           str(root / "dumps"), "--", sys.executable, str(root / "freeze.py")],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (path,) = (root / "dumps").glob("freeze-*.json")
    return path


def _on_a_tty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as its stdout: its status and what it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(BIN), *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "pager.py"
    script.write_text(RECORDER)
    record = tmp_path / "record.json"
    return f"{sys.executable} {script} {record} -x", record


def test_show_on_a_terminal_pipes_through_pager(
    dump: Path, recorder: tuple[str, Path]
) -> None:
    """On a terminal, `show` runs $PAGER (through the shell: its arguments work) with the
    coloured report on its stdin, the terminal as its stdout and LESS=FRX."""
    pager, record = recorder
    status, out = _on_a_tty(["show", str(dump)], _env(PAGER=pager))
    assert status == 0
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["-x"] and seen["stdout_tty"] is True and seen["less"] == "FRX"
    assert seen["text"].startswith("\033[1m\033[31mFREEZE: event loop")  # colour kept
    assert "FREEZE" not in out  # the report went to the pager, not around it


def test_less_setting_of_the_user_is_kept(dump: Path, recorder: tuple[str, Path]) -> None:
    """A LESS the user set is passed on unchanged."""
    pager, record = recorder
    _on_a_tty(["show", str(dump)], _env(PAGER=pager, LESS="-S"))
    assert json.loads(record.read_text())["less"] == "-S"


@pytest.mark.parametrize("how", ["--no-pager", "PAGER=cat", "PAGER="])
def test_no_pager(dump: Path, recorder: tuple[str, Path], how: str) -> None:
    """--no-pager, PAGER=cat and an empty PAGER write to the terminal directly."""
    pager, record = recorder
    args = ["show", str(dump)]
    env = _env(PAGER=pager)
    if how == "--no-pager":
        args.append("--no-pager")
    else:
        env["PAGER"] = how.split("=", 1)[1]
    status, out = _on_a_tty(args, env)
    assert status == 0
    assert "FREEZE: event loop" in out
    assert not record.exists()


def test_piped_output_is_not_paged(dump: Path, recorder: tuple[str, Path]) -> None:
    """Piped, no pager runs: the text is the .txt twin."""
    pager, record = recorder
    proc = subprocess.run([str(BIN), "show", str(dump)], env=_env(PAGER=pager),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout == dump.with_suffix(".txt").read_text()
    assert not record.exists()


def test_missing_pager_falls_back_to_the_terminal(dump: Path) -> None:
    """A PAGER that does not exist: the report is still shown, status 0."""
    status, out = _on_a_tty(["show", str(dump)], _env(PAGER="no-such-pager-fw"))
    assert status == 0
    assert "FREEZE: event loop" in out


def test_default_pager_is_less(tmp_path: Path, dump: Path) -> None:
    """No PAGER: `less` (found on PATH) is the pager."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "record.json"
    fake = bindir / "less"
    fake.write_text(f"#!{sys.executable}\n" + RECORDER.replace("sys.argv[1]", repr(str(record)))
                    .replace("sys.argv[2:]", "sys.argv[1:]"))
    fake.chmod(0o755)
    env = _env()
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    status, _ = _on_a_tty(["show", str(dump)], env)
    assert status == 0
    assert json.loads(record.read_text())["less"] == "FRX"
