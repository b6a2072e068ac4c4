"""Reading a dump file as the CLI does: safely, whatever was planted under its name.

Used by ``show``, ``report`` and ``report --html``. A FIFO or a device under
a dump's name never blocks or floods a reader; hostile JSON (deep nesting)
is a ValueError, never a RecursionError.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

# -- show -----------------------------------------------------------------------
MAX_DUMP_FILE = 256 * 1024 * 1024
"""Bytes read of one dump file at most: a dump is bounded far below this."""


def read_dump_bytes(path: str) -> bytes:
    """The bytes of a regular file, opened without blocking (a FIFO planted under a
    dump's name cannot hang the CLI) and read up to ``MAX_DUMP_FILE``.

    OSError for what cannot be read; ValueError for what is not a regular file
    or is too big to be a dump.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > MAX_DUMP_FILE:
            raise ValueError(f"{st.st_size} bytes: too big to be a dump")
        # Its size, not the cap: a buffer of the cap for every file is an allocation
        # (and, under a debug allocator, a fill) of that size per dump read.
        return f.read(st.st_size + 1)


def parse_dump(data: bytes) -> Any:
    """``json.loads``; hostile nesting is a ValueError, never a RecursionError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
