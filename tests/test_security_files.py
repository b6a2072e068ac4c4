"""The dump directory under attack: planted links and FIFOs, foreign or shared directories,
a directory deleted while running, temporary files left by a killed writer (issue 11, 1 and 6)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_contract
from core_support import FAST, dumps
from security_support import NOBODY, as_user, needs_root

import freezewatch
from freezewatch import _config
from freezewatch._sinks import dumpdir, dumpfile, retention


def _doc(kind: str = "freeze", pad: int = 0) -> dict[str, Any]:
    # An ended freeze ("duration"): retention keeps the dump of a freeze still going on.
    return {"schema": "freezewatch/1", "kind": kind, "pid": os.getpid(), "detected_at": 0.0,
            "blocked_for": 1.0, "threshold": 0.5, "loop": {"name": "x"}, "pad": "p" * pad,
            "duration": 1.5}


def _freeze_once(dump_dir: Path) -> None:
    async def main() -> None:
        freezewatch.install(dump_dir=str(dump_dir), **FAST)
        await asyncio.sleep(0.1)
        time.sleep(0.7)
        await asyncio.sleep(0.1)

    asyncio.run(main())


def test_symlink_at_old_temp_name_is_not_followed(tmp_path: Path) -> None:
    """A symlink planted at the temporary name a write used to take (.<name>.<pid>.tmp)
    is not followed: the file it points to is untouched."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, d / f".x.json.{os.getpid()}.tmp")
    dumpfile.write_atomic(str(d / "x.json"), b"dump")
    assert victim.read_text() == "precious"
    assert (d / "x.json").read_bytes() == b"dump"


def test_fifo_at_old_temp_name_does_not_block(tmp_path: Path) -> None:
    """A FIFO planted at the old temporary name never blocks a write."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    os.mkfifo(d / f".x.json.{os.getpid()}.tmp")
    t = threading.Thread(target=dumpfile.write_atomic, args=(str(d / "x.json"), b"dump"),
                         daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "the write blocked on a FIFO"
    assert (d / "x.json").read_bytes() == b"dump"


def test_temp_names_are_unpredictable_and_exclusive(tmp_path: Path) -> None:
    """Two temporary names for one file differ (secrets.token_hex), and an existing
    entry at the chosen name is never opened (O_EXCL)."""
    names = {dumpdir.tmp_name("freeze-1.json") for _ in range(50)}
    assert len(names) == 50
    assert all(dumpdir.TMP.match(n) for n in names)


@needs_root
def test_attacker_links_and_fifos_in_a_writable_dir(tmp_path: Path, events: Any) -> None:
    """Root's app, a 0777 dump dir of its own, a second user planting symlinks (to a
    file of root's) and FIFOs at every name the next dumps could use: install repairs
    the directory (0700), dumps are written, the victim file is untouched."""
    d = tmp_path / "dumps"
    d.mkdir()
    os.chmod(d, 0o777)
    os.chmod(tmp_path, 0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    now = time.time()
    names = [dumpfile.dump_name("freeze", now + dt, seq) + ext
             for dt in range(-2, 8) for seq in range(1, 4) for ext in (".json", ".txt")]

    # The attacker gets the directory as an open descriptor: the test's own
    # parent directories (0700, root's) are not theirs to search.
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)

    def plant() -> None:
        for i, name in enumerate(names):
            for target in (name, f".{name}.{os.getppid()}.tmp"):
                if i % 2:
                    os.mkfifo(target, dir_fd=fd)
                else:
                    os.symlink(victim, target, dir_fd=fd)

    try:
        as_user(NOBODY, plant)
    finally:
        os.close(fd)
    assert (d / names[0]).is_symlink() and os.lstat(d / names[0]).st_uid == NOBODY
    _freeze_once(d)
    events.wait("freeze_ended")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert victim.read_text() == "precious"
    ours = [p for p in dumps(d) if stat.S_ISREG(os.lstat(p).st_mode)
            and os.lstat(p).st_uid == os.geteuid()]
    (path,) = ours  # the dump replaced whatever was planted at its name
    assert_contract(path)


@needs_root
def test_dump_dir_of_another_user_refused(tmp_path: Path) -> None:
    """A dump dir owned by another user: ValueError naming setting, value and source."""
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(ValueError, match=r"dump_dir '.*theirs' \(from install\(dump_dir=\.\.\.\)\)"
                       r" is not safe: .* owned by uid 65534"):
        _config.load({"dump_dir": str(d)})


def test_dump_dir_writable_by_others_repaired(tmp_path: Path) -> None:
    """A dump dir of ours that group and others may write is made 0700 at install."""
    d = tmp_path / "dumps"
    d.mkdir()
    os.chmod(d, 0o777)
    _config.load({"dump_dir": str(d)})
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_shared_sticky_dir_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared /tmp-like directory (sticky, world-writable) is refused, never chmod-ed."""
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    monkeypatch.setenv("FREEZEWATCH_DUMP_DIR", str(d))
    with pytest.raises(ValueError, match=r"FREEZEWATCH_DUMP_DIR environment variable.*shared"):
        _config.load({})
    assert stat.S_IMODE(d.stat().st_mode) == 0o1777


@needs_root
def test_symlinked_dump_dir_to_a_foreign_dir_refused(tmp_path: Path) -> None:
    """dump_dir a symlink to another user's directory: the target is vetted, and refused."""
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, NOBODY, NOBODY)
    link = tmp_path / "dumps"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="owned by uid 65534"):
        _config.load({"dump_dir": str(link)})


def test_dump_dir_recreated_when_deleted(tmp_path: Path) -> None:
    """A dump directory deleted while running is created again (0700) by the next write."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    os.rmdir(d)
    path = dumpfile.write_dump(str(d), "freeze-20250101T000000Z-1-0001", _doc(), 10, 10**6)
    assert os.path.exists(path)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_stale_tmp_removed_at_install_and_counted_in_retention(tmp_path: Path) -> None:
    """Temporary files of a dead writer are removed at install and by retention; those
    still being written count towards the byte bound."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    dead = 2**22 + 17  # above pid_max's default: no such process
    stale = d / f".freeze-20250101T000000Z-{dead}-0001.json.{dead}.tmp"
    stale.write_bytes(b"x" * 100_000)
    old_style = d / f".freeze-20250101T000000Z-{dead}-0002.json.{dead}.tmp"
    old_style.write_bytes(b"x" * 1000)
    _config.load({"dump_dir": str(d)})
    assert not stale.exists() and not old_style.exists()

    stale.write_bytes(b"x" * 100_000)
    live = d / f".freeze-20250101T000000Z-1-0009.json.{os.getpid()}.{'a' * 16}.tmp"
    live.write_bytes(b"x" * 50_000)
    for seq in (1, 2):
        dumpfile.write_dump(str(d), f"freeze-20250101T00000{seq}Z-1-000{seq}", _doc(pad=10_000),
                            10, 10**6)
    assert not stale.exists()
    # The live temporary file (50 kB) counts: with it, only one dump fits in 70 kB.
    removed = retention.enforce(str(d), 10, 70_000)
    assert removed == ["freeze-20250101T000001Z-1-0001"]
    assert live.exists()


def test_retention_after_rewrite_keeps_the_byte_bound(tmp_path: Path) -> None:
    """A rewrite that grows the newest dump (native, duration) applies retention again."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    cap = 40_000
    paths = [dumpfile.write_dump(str(d), f"freeze-20250101T00000{i}Z-1-000{i}",
                                 _doc(pad=8_000), 100, cap) for i in range(1, 4)]
    assert dumpfile.rewrite_dump(paths[-1], _doc(pad=30_000), 100, cap)
    total = sum(p.stat().st_size for p in d.iterdir())
    assert total <= cap
    assert os.path.exists(paths[-1])


def test_rewrite_never_follows_a_planted_link(tmp_path: Path) -> None:
    """A dump replaced by a symlink meanwhile is not rewritten through it."""
    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    path = dumpfile.write_dump(str(d), "freeze-20250101T000000Z-1-0001", _doc(), 10, 10**6)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.unlink(path)
    os.symlink(victim, path)
    assert dumpfile.rewrite_dump(path, _doc(pad=10)) is False
    assert victim.read_text() == "precious"


def test_cli_report_does_not_block_on_a_fifo(tmp_path: Path) -> None:
    """`freezewatch report` over a directory with a FIFO named like a dump: skipped, no hang."""
    import subprocess
    import sys

    d = tmp_path / "dumps"
    d.mkdir(mode=0o700)
    os.mkfifo(d / "freeze-20250101T000000Z-1-0001.json")
    good = d / "freeze-20250101T000001Z-1-0002.json"
    doc = {**_doc(), "blocking_frame": {"file": "/a.py", "line": 1, "function": "f",
                                         "code": None}}
    good.write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "-m", "freezewatch", "report", str(d)],
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    assert "not a regular file" in proc.stderr
