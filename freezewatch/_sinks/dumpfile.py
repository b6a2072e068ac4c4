"""Dump files: .json for tools, .txt for people; atomic, 0600, bounded by retention.

Only plain ``os`` calls: no logging and no lock here, so a dump is written
even when the frozen loop thread holds a logging handler's lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from .._snapshot.render import render
from .retention import enforce


def dump_name(kind: str, detected_at: float, seq: int) -> str:
    """``freeze-<UTC yyyymmddTHHMMSSZ>-<pid>-<seq>`` (no suffix)."""
    prefix = "stall" if kind == "stall" else "freeze"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(detected_at))
    return f"{prefix}-{stamp}-{os.getpid()}-{seq:04d}"


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + fsync + rename, mode 0600."""
    directory, base = os.path.split(path)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_dump(
    dump_dir: str, name: str, doc: dict[str, Any], max_dumps: int, max_bytes: int
) -> str:
    """Write the .txt then the .json (so a .json always has its twin); return the .json path."""
    base = os.path.join(dump_dir, name)
    write_atomic(base + ".txt", render(doc).encode("utf-8", "replace"))
    write_atomic(
        base + ".json", json.dumps(doc, indent=1, default=str).encode("utf-8", "replace")
    )
    enforce(dump_dir, max_dumps, max_bytes, keep=name)
    return base + ".json"


def rewrite_dump(json_path: str, doc: dict[str, Any]) -> bool:
    """Replace an existing dump pair atomically (e.g. to add ``duration``).

    A dump that retention removed meanwhile (a long freeze whose later dumps
    pushed it out) stays removed: re-creating it would break the bounds.
    Retention and rewrites both run on the watchdog thread, so the check
    cannot race with a removal. Returns False when there was nothing to rewrite.
    """
    if not os.path.exists(json_path):
        return False
    base = json_path[: -len(".json")]
    write_atomic(base + ".txt", render(doc).encode("utf-8", "replace"))
    write_atomic(json_path, json.dumps(doc, indent=1, default=str).encode("utf-8", "replace"))
    return True
