"""Dump files: .json for tools, .txt for people; atomic, 0600, bounded by retention.

Only plain ``os`` calls: no logging and no lock here, so a dump is written
even when the frozen loop thread holds a logging handler's lock. Every file
is created relative to the vetted directory's descriptor (``dumpdir``), and
every text taken from the application passes the redaction rule
(``_redact.redact_doc``) before it is written.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .._redact import Rule, redact_doc
from .._snapshot.render import render
from . import dumpdir
from .retention import enforce


def dump_name(kind: str, detected_at: float, seq: int) -> str:
    """``freeze-<UTC yyyymmddTHHMMSSZ>-<pid>-<seq>`` (no suffix)."""
    prefix = "stall" if kind == "stall" else "freeze"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(detected_at))
    return f"{prefix}-{stamp}-{os.getpid()}-{seq:04d}"


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, mode 0600, in a vetted directory
    (created again if it disappeared); see ``dumpdir.write_atomic``."""
    directory, base = os.path.split(path)
    fd = dumpdir.open_dir(directory or ".")
    try:
        dumpdir.write_atomic(fd, base, data)
    finally:
        os.close(fd)


def _encode(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    return (render(doc).encode("utf-8", "replace"),
            json.dumps(doc, indent=1, default=str).encode("utf-8", "replace"))


def write_dump(
    dump_dir: str, name: str, doc: dict[str, Any], max_dumps: int, max_bytes: int,
    *, redact: Rule | None = None,
) -> str:
    """Write the .txt then the .json (so a .json always has its twin), then apply
    retention; return the .json path. ``redact``: the install's rule (None: the
    default). The directory is created again (0700) if it disappeared."""
    txt, js = _encode(redact_doc(doc, redact))
    fd = dumpdir.open_dir(dump_dir)
    try:
        dumpdir.write_atomic(fd, name + ".txt", txt)
        dumpdir.write_atomic(fd, name + ".json", js)
        enforce(fd, max_dumps, max_bytes, keep=name)
    finally:
        os.close(fd)
    return os.path.join(dump_dir, name + ".json")


def rewrite_dump(json_path: str, doc: dict[str, Any], max_dumps: int | None = None,
                 max_bytes: int | None = None, *, redact: Rule | None = None) -> bool:
    """Replace an existing dump pair atomically (e.g. to add ``duration``).

    A dump that retention removed meanwhile (a long freeze whose later dumps
    pushed it out) stays removed: re-creating it would break the bounds; so
    does one that is no longer a regular file of ours (a planted link).
    Retention and rewrites both run on the watchdog thread, so the check
    cannot race with a removal. With ``max_dumps``/``max_bytes`` retention runs
    again afterwards (the rewrite grew the dump). Returns False when there
    was nothing to rewrite.
    """
    directory, base = os.path.split(json_path)
    stem = base[: -len(".json")]
    try:
        fd = dumpdir.open_dir(directory or ".", create=False)
    except FileNotFoundError:
        return False
    try:
        if not dumpdir.is_our_file(fd, base):
            return False
        txt, js = _encode(redact_doc(doc, redact))
        dumpdir.write_atomic(fd, stem + ".txt", txt)
        dumpdir.write_atomic(fd, base, js)
        if max_dumps is not None and max_bytes is not None:
            enforce(fd, max_dumps, max_bytes, keep=stem)
    finally:
        os.close(fd)
    return True


def apply_retention(dump_dir: str, max_dumps: int, max_bytes: int, keep: str = "") -> list[str]:
    """Retention on its own (e.g. after a rewrite made elsewhere); returns removed stems.
    A missing directory has nothing to remove."""
    try:
        return enforce(dump_dir, max_dumps, max_bytes, keep)
    except FileNotFoundError:
        return []
