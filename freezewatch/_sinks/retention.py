"""Bound the dump directory by number of dumps and total bytes, oldest removed first."""

from __future__ import annotations

import os
import re

_DUMP = re.compile(r"^((?:freeze|stall)-(\d{8}T\d{6})Z?-\d+-(\d+))\.(?:json|txt)$")


def enforce(dump_dir: str, max_dumps: int, max_bytes: int, keep: str = "") -> list[str]:
    """Delete the oldest dump pairs until both bounds hold; return the removed stems."""
    stems: dict[str, list[tuple[str, int]]] = {}
    age: dict[str, tuple[str, int]] = {}
    with os.scandir(dump_dir) as it:
        for entry in it:
            m = _DUMP.match(entry.name)
            if not m:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            stems.setdefault(m.group(1), []).append((entry.path, st.st_size))
            age[m.group(1)] = (m.group(2), int(m.group(3)))
    total = sum(size for files in stems.values() for _, size in files)
    # Oldest first by the UTC time in the name, then by sequence. Not by mtime:
    # a freeze's dump is rewritten (duration) when it ends, which is no reason to keep it.
    order = sorted(stems, key=lambda s: age[s])
    removed: list[str] = []
    for stem in order:
        if len(stems) - len(removed) <= max_dumps and total <= max_bytes:
            break
        if stem == keep:
            continue
        for path, size in stems[stem]:
            try:
                os.unlink(path)
                total -= size
            except FileNotFoundError:
                total -= size
        removed.append(stem)
    return removed
