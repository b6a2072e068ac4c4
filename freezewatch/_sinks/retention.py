"""Bound the dump directory by number of dumps and total bytes, oldest removed first.

Run after every write *and every rewrite* of a dump: a rewrite (native stack,
duration) grows a dump after the write's retention ran. Temporary files
count: those left behind by a killed writer are removed, those still being
written count towards the byte bound. Entries are read with ``lstat`` and
removed relative to the directory descriptor; nothing is followed.

The directory is shared by every worker of a multi-process server, and so are
the bounds: each process enforces them over all dumps, whoever wrote them.
One kind of dump is never removed: the first dump of a freeze that is still
going on (a ``freeze`` JSON without ``duration`` whose pid is alive). Its
process rewrites it when the freeze ends, with its duration (or, when a C call
held the GIL, with everything the sentinel could not see); removing it would
lose the freeze's record. So the bounds may be exceeded by at most one dump
per frozen loop while those freezes last (docs/core.md, sizing for N workers).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time

from .dumpdir import open_dir, tmp_is_stale

_DUMP = re.compile(r"^((freeze|stall)-(\d{8}T\d{6})Z?-(\d+)-(\d+))\.(?:json|txt)$")
MAX_READ = 8_000_000
"""Bytes of a dump read to learn whether its freeze is still going on."""


def enforce(dump_dir: str | int, max_dumps: int, max_bytes: int, keep: str = "") -> list[str]:
    """Delete the oldest dump pairs until both bounds hold; return the removed stems.

    ``dump_dir``: a path or an open directory descriptor (see ``dumpdir.open_dir``).
    ``keep``: a stem never removed (the dump just written).
    """
    if isinstance(dump_dir, int):
        return _enforce(dump_dir, max_dumps, max_bytes, keep)
    fd = open_dir(dump_dir, create=False)
    try:
        return _enforce(fd, max_dumps, max_bytes, keep)
    finally:
        os.close(fd)


def _enforce(dir_fd: int, max_dumps: int, max_bytes: int, keep: str) -> list[str]:
    stems: dict[str, list[tuple[str, int]]] = {}
    age: dict[str, tuple[str, int]] = {}
    pids: dict[str, int] = {}  # freeze dumps: stem -> the pid in its name
    total = 0
    now = time.time()
    with os.scandir(dir_fd) as it:
        for entry in it:
            name = entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if name.startswith("."):
                stale = tmp_is_stale(name, st.st_mtime, now)
                if stale:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dir_fd)
                elif stale is False:
                    total += st.st_size  # being written: it will take this room
                continue
            m = _DUMP.match(name)
            if not m:
                continue
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            stems.setdefault(m.group(1), []).append((name, size))
            age[m.group(1)] = (m.group(3), int(m.group(5)))
            if m.group(2) == "freeze":
                pids[m.group(1)] = int(m.group(4))
            total += size
    # Oldest first by the UTC time in the name, then by sequence. Not by mtime:
    # a freeze's dump is rewritten (duration) when it ends, which is no reason to keep it.
    order = sorted(stems, key=lambda s: age[s])
    removed: list[str] = []
    for stem in order:
        if len(stems) - len(removed) <= max_dumps and total <= max_bytes:
            break
        if stem == keep or (stem in pids and _open_freeze(dir_fd, stem, pids[stem])):
            continue
        for name, size in stems[stem]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
            total -= size
        removed.append(stem)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def _open_freeze(dir_fd: int, stem: str, pid: int) -> bool:
    """The first dump of a freeze still going on in a live process (see above)."""
    if not _alive(pid):
        return False
    try:
        fd = os.open(stem + ".json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        with os.fdopen(os.dup(fd), "rb") as f:
            doc = json.loads(f.read(MAX_READ))
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return isinstance(doc, dict) and doc.get("kind") == "freeze" and "duration" not in doc
