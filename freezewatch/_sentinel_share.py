"""What the sentinel's parent side keeps outside its process: sequence numbers, directories.

- ``SharedSeq``: dump sequence numbers taken from the page shared with the
  sentinel, which writes dumps too (``_state.dump_seq`` while one runs);
- ``remove_stale_dirs``: the private directories of sentinels whose parent
  died with its process group (SIGKILL) are removed at the next start;
- ``unavailable_reason``: why a sentinel cannot work here; ``_close_in_child``:
  a forked child closes the pipes to its parent's sentinels.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import shutil
import stat
import struct
import sys

from . import _state
from ._sentinel_main import _SEQ

_STALE = re.compile(r"^freezewatch-sentinel-(\d+)-[0-9a-f]{12}$")


def remove_stale_dirs(tmp: str) -> int:
    """Remove the private directories of sentinels whose parent is gone (a process
    group SIGKILLed leaves them behind); only ours (owner), never through a link."""
    removed = 0
    try:
        names = os.listdir(tmp)
    except OSError:
        return 0
    for name in names:
        m = _STALE.match(name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        path = os.path.join(tmp, name)
        try:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                continue
            os.kill(int(m.group(1)), 0)
            continue  # its process still runs
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        except OSError:
            continue
    return removed


class SharedSeq:
    """Dump sequence numbers taken from the shared page, so that the sentinel's dumps
    and the watchdog's never share a name (``_state.dump_seq`` while a sentinel runs).
    Both sides add one to the same counter; the sentinel also links its new files
    into place, never over a name that exists (``_sentinel_dump``)."""

    def __init__(self, mm: mmap.mmap, last: int) -> None:
        self._mm = mm
        struct.pack_into("<Q", mm, _SEQ, last)

    def __iter__(self) -> SharedSeq:
        return self

    def __next__(self) -> int:
        n = int(struct.unpack_from("<Q", self._mm, _SEQ)[0]) + 1
        struct.pack_into("<Q", self._mm, _SEQ, n)
        return n

    def last(self) -> int:
        return int(struct.unpack_from("<Q", self._mm, _SEQ)[0])


def _close_in_child() -> None:
    # The write ends of the pipes to our sentinels (_state.sentinel_pipe_fds):
    # closed in a forked child, so the parent's sentinel still sees EOF when
    # the parent dies.
    for fd in list(_state.sentinel_pipe_fds):
        with contextlib.suppress(OSError):
            os.close(fd)
    _state.sentinel_pipe_fds.clear()


def unavailable_reason(pyspy: str | None, signal_fd: int) -> str | None:
    """Why the sentinel cannot work here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"the sentinel needs Linux (memfd, /proc), this is {sys.platform}"
    if not hasattr(os, "memfd_create"):
        return "the sentinel needs os.memfd_create"
    if signal_fd < 0 and (not pyspy or not os.access(pyspy, os.X_OK)):
        return ("py-spy not found (pip install py-spy) and the faulthandler layer is off: "
                "the sentinel has nothing to do")
    return None


def _usable(pyspy: str | None) -> bool:
    return bool(pyspy) and os.access(str(pyspy), os.X_OK)
