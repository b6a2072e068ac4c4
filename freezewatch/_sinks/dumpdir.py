"""The dump directory, handled the way careful daemons handle theirs (OpenSSH, systemd).

- It is opened once per operation as a directory file descriptor
  (``O_DIRECTORY|O_NOFOLLOW``) and every file is created, renamed and removed
  relative to that descriptor: a path component swapped for a symlink
  mid-write cannot redirect a write.
- It is trusted only when this process's user (or root) owns it and no one
  else can write it. A directory of ours that is group- or world-writable is
  repaired (``chmod 0700``), unless it is sticky (``/tmp``-like: shared on
  purpose); that one, and one owned by another user, is refused: others
  could plant links at the names we are about to use.
- Temporary files get unpredictable names (``secrets.token_hex``) and are
  created with ``O_CREAT|O_EXCL|O_NOFOLLOW|O_NONBLOCK``: a symlink planted at
  the name is never followed, a FIFO never opened (so it cannot block the
  watchdog), an existing file never truncated.
- A directory deleted while the process runs is created again (0700) at the
  next write.
- Temporary files left by a process killed mid-write (``.<name>.<pid>.<hex>.tmp``)
  are removed once their process is gone or they are a minute old.

Only plain ``os`` calls: no logging and no lock (see ``dumpfile``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time

STALE_TMP_AGE = 60.0
"""Seconds after which a temporary file counts as left behind, whoever wrote it."""

_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) \
    | getattr(os, "O_CLOEXEC", 0)
_O_TMP = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
          | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
TMP = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{16}\.tmp$")
"""Our temporary files: ``.<final name>.<pid>.<16 hex>.tmp``."""
_OLD_TMP = re.compile(r"^\.(?:freeze|stall)-.+\.(\d+)\.tmp$")  # before the random part


class UnsafeDirError(OSError):
    """The dump directory is not one this process may trust (owner, mode, a symlink)."""


def _trusted_owner(uid: int) -> bool:
    return uid == os.geteuid() or uid == 0


def vet(fd: int, path: str, *, repair: bool = True) -> None:
    """Refuse (UnsafeDirError) or repair the directory open at ``fd``.

    Ours (or root's) and writable by no one else: trusted. Ours and group- or
    world-writable: ``chmod 0700`` (``repair``), else refused. Another user's:
    refused.
    """
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirError(f"{path!r} is not a directory")
    if not _trusted_owner(st.st_uid):
        raise UnsafeDirError(
            f"{path!r} is owned by uid {st.st_uid}, not by this process (uid {os.geteuid()}): "
            "its owner could plant links there; use a directory of your own")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if st.st_mode & stat.S_ISVTX:  # /tmp, /dev/shm: shared on purpose, never chmod it
            raise UnsafeDirError(
                f"{path!r} is a shared directory (mode {stat.S_IMODE(st.st_mode):o}): anyone "
                "can plant links there; use a directory of its own, e.g. under it")
        if st.st_uid != os.geteuid() or not repair:
            raise UnsafeDirError(
                f"{path!r} is writable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                "they could plant links there; use a directory only you can write")
        os.fchmod(fd, 0o700)


def open_dir(path: str, *, create: bool = True) -> int:
    """An ``O_DIRECTORY|O_NOFOLLOW`` descriptor of the vetted dump directory.

    Creates it (0700, parents as needed) when missing, which is also how a
    directory deleted while running comes back. The caller closes the fd.
    Raises UnsafeDirError for a directory not to trust (a symlink, another
    user's, writable by others and not ours), OSError for the rest.
    """
    try:
        fd = os.open(path, _O_DIR)
    except FileNotFoundError:
        if not create:
            raise
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, _O_DIR)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafeDirError(f"{path!r} is a symlink; name the directory itself") from e
        raise
    try:
        vet(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def tmp_name(name: str) -> str:
    """An unpredictable temporary name for ``name``: ``.<name>.<pid>.<16 hex>.tmp``."""
    return f".{name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"


def write_atomic(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` in the directory ``dir_fd``: temporary file (0600,
    ``O_EXCL|O_NOFOLLOW|O_NONBLOCK``), fsync, rename. Never a partial file;
    the temporary file is removed on failure."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")
    tmp = tmp_name(name)
    fd = os.open(tmp, _O_TMP, 0o600, dir_fd=dir_fd)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise


def is_our_file(dir_fd: int, name: str) -> bool:
    """``name`` is a regular file of ours in ``dir_fd`` (not a planted link or FIFO)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def tmp_is_stale(name: str, mtime: float, now: float | None = None) -> bool | None:
    """For a temporary file of ours: left behind (True), in progress (False);
    None for any other name."""
    m = TMP.match(name) or _OLD_TMP.match(name)
    if m is None:
        return None
    now = time.time() if now is None else now
    return now - mtime > STALE_TMP_AGE or not _pid_alive(int(m.group(1)))


def remove_stale_tmp(dir_fd: int) -> tuple[int, int]:
    """Remove temporary files left behind; returns (files removed, bytes freed)."""
    removed = freed = 0
    now = time.time()
    with os.scandir(dir_fd) as it:
        for entry in it:
            if not entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if tmp_is_stale(entry.name, st.st_mtime, now):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=dir_fd)
                    removed += 1
                    freed += st.st_size
    return removed, freed
