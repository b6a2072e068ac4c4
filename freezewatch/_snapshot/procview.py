"""The kernel's view of a thread: /proc state, wchan, syscall, its descriptor and TCP peer.

Read from the watchdog thread without ptrace: ``/proc/self/task/<tid>/stat``
(state letter), ``wchan`` (kernel wait point) and ``syscall`` (number and
arguments), the thread's CPU clock sampled twice, the blocking descriptor
through ``/proc/self/fd`` and, for a TCP socket, its addresses from
``/proc/net/tcp*``. Reading another thread of our own process needs no
ptrace permission (same thread group), so Yama and missing CAP_SYS_PTRACE do
not matter. Every read is a few small files; nothing here raises: a part
that fails becomes ``error`` (the classification in ``cause`` uses what is left).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import platform
from typing import Any

from .cpu import CpuSample

PROC = "/proc"
MAX_POLL_FDS = 8

# Syscall numbers worth naming. ``fd`` marks those whose first argument is a
# file descriptor. Unknown numbers are shown as "syscall N".
_X86_64: dict[int, tuple[str, bool]] = {
    0: ("read", True), 1: ("write", True), 7: ("poll", False), 16: ("ioctl", True),
    17: ("pread64", True), 18: ("pwrite64", True), 19: ("readv", True), 20: ("writev", True),
    23: ("select", False), 35: ("nanosleep", False), 40: ("sendfile", True),
    42: ("connect", True), 43: ("accept", True), 44: ("sendto", True), 45: ("recvfrom", True),
    46: ("sendmsg", True), 47: ("recvmsg", True), 61: ("wait4", False), 72: ("fcntl", True),
    73: ("flock", True), 74: ("fsync", True), 75: ("fdatasync", True), 202: ("futex", False),
    230: ("clock_nanosleep", False), 232: ("epoll_wait", True), 247: ("waitid", False),
    270: ("pselect6", False), 271: ("ppoll", False), 281: ("epoll_pwait", True),
    288: ("accept4", True), 299: ("recvmmsg", True), 307: ("sendmmsg", True),
}
# aarch64 uses the generic table (asm-generic/unistd.h): no poll/select, only ppoll/pselect6.
_AARCH64: dict[int, tuple[str, bool]] = {
    22: ("epoll_pwait", True), 25: ("fcntl", True), 29: ("ioctl", True), 32: ("flock", True),
    63: ("read", True), 64: ("write", True), 65: ("readv", True), 66: ("writev", True),
    67: ("pread64", True), 68: ("pwrite64", True), 71: ("sendfile", True),
    72: ("pselect6", False), 73: ("ppoll", False), 82: ("fsync", True), 83: ("fdatasync", True),
    95: ("waitid", False), 98: ("futex", False), 101: ("nanosleep", False),
    115: ("clock_nanosleep", False), 202: ("accept", True), 203: ("connect", True),
    206: ("sendto", True), 207: ("recvfrom", True), 211: ("sendmsg", True),
    212: ("recvmsg", True), 242: ("accept4", True), 243: ("recvmmsg", True),
    260: ("wait4", False), 269: ("sendmmsg", True),
}
_SYSCALLS = {"x86_64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}.get(
    platform.machine(), {})
_POLLS = ("poll", "ppoll")
_TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1",
               5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK",
               10: "LISTEN", 11: "CLOSING"}


# -- the view --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class KernelView:
    ok: bool
    state: str | None = None
    wchan: str | None = None
    syscall: str | None = None
    """Name ("recvfrom"), "syscall N", "running" (on or waiting for a CPU) or
    "none" (in the kernel outside a syscall, e.g. a page fault)."""
    syscall_nr: int | None = None
    fd: int | None = None
    fd_target: str | None = None
    tcp: dict[str, str] | None = None
    cpu_seconds: float | None = None
    cpu_delta: float | None = None
    cpu_window: float | None = None
    error: str | None = None

    @property
    def cpu_growing(self) -> bool:
        """Burning CPU: at least 5 % of the window (a blocked thread uses ~0)."""
        if self.cpu_delta is None or not self.cpu_window:
            return False
        return self.cpu_delta >= max(0.002, 0.05 * self.cpu_window)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "state": self.state, "wchan": self.wchan, "syscall": self.syscall,
            "syscall_nr": self.syscall_nr, "fd": self.fd, "fd_target": self.fd_target,
            "tcp": self.tcp,
            "cpu_seconds": None if self.cpu_seconds is None else round(self.cpu_seconds, 6),
            "cpu_delta": None if self.cpu_delta is None else round(self.cpu_delta, 6),
            "cpu_window": None if self.cpu_window is None else round(self.cpu_window, 3),
            "cpu_growing": self.cpu_growing, "error": self.error,
        }


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def _state_letter(stat: str) -> str | None:
    # "tid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ")".
    rest = stat[stat.rfind(")") + 1:].split()
    return rest[0] if rest else None


def _parse_syscall(text: str) -> tuple[str, int | None, list[int]]:
    """``/proc/.../syscall`` -> (name, number, args)."""
    parts = text.split()
    if not parts or parts[0] == "running":
        return "running", None, []
    nr = int(parts[0])
    if nr < 0:
        return "none", nr, []
    args = [int(a, 16) for a in parts[1:7]]
    name = _SYSCALLS.get(nr, (f"syscall {nr}", False))[0]
    return name, nr, args


def _poll_fds(addr: int, nfds: int) -> list[int]:
    """The descriptors of a poll()/ppoll() call: its ``struct pollfd`` array
    (int fd; short events; short revents) read from our own memory through
    /proc/self/mem, which fails cleanly (EIO) on an unmapped address."""
    if not 0 < nfds <= MAX_POLL_FDS or not addr:
        return []
    fd = os.open(f"{PROC}/self/mem", os.O_RDONLY)
    try:
        raw = os.pread(fd, 8 * nfds, addr)
    finally:
        os.close(fd)
    return [int.from_bytes(raw[i:i + 4], "little", signed=True)
            for i in range(0, len(raw) - 7, 8)]


def _ipv4(word: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(word)[::-1]))


def _ipv6(hexed: str) -> str:
    # Four 32-bit words, each in host (little-endian) byte order.
    raw = b"".join(bytes.fromhex(hexed[i:i + 8])[::-1] for i in range(0, 32, 8))
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped) if addr.ipv4_mapped else f"[{addr}]"


def _endpoint(field: str) -> str:
    host, port = field.split(":")
    ip = _ipv4(host) if len(host) == 8 else _ipv6(host)
    return f"{ip}:{int(port, 16)}"


def tcp_of(inode: str) -> dict[str, str] | None:
    """Local and peer address of the TCP socket with this inode, or None."""
    for table in ("tcp", "tcp6"):
        try:
            lines = _read(f"{PROC}/net/{table}").splitlines()[1:]
        except OSError:
            continue
        for ln in lines:
            cols = ln.split()
            if len(cols) > 9 and cols[9] == inode:
                return {"local": _endpoint(cols[1]), "peer": _endpoint(cols[2]),
                        "state": _TCP_STATES.get(int(cols[3], 16), cols[3])}
    return None


def read_view(native_id: int | None, before: CpuSample | None, after: CpuSample | None,
              proc: str = PROC) -> KernelView:
    """The kernel's view of one thread of this process (never raises)."""
    cpu = after.cpu if after else None
    delta = window = None
    if before is not None and after is not None:
        delta, window = max(0.0, after.cpu - before.cpu), after.at - before.at

    def fail(error: str) -> KernelView:
        return KernelView(False, error=error, cpu_seconds=cpu, cpu_delta=delta,
                          cpu_window=window)

    if not os.path.isdir(f"{proc}/self/task"):
        return fail(f"{proc} is not available on this platform ({platform.system()}): "
                    "no kernel view")
    if native_id is None:
        return fail("the loop thread's native id is unknown")
    base = f"{proc}/self/task/{native_id}"
    errors: list[str] = []
    state = wchan = None
    name: str | None = None
    nr: int | None = None
    args: list[int] = []
    try:
        state = _state_letter(_read(f"{base}/stat"))
    except OSError as e:
        return fail(f"cannot read {base}/stat: {e.strerror or e}")
    try:
        wchan = _read(f"{base}/wchan").strip() or None
        wchan = None if wchan == "0" else wchan
    except OSError as e:
        errors.append(f"wchan: {e.strerror or e}")
    try:
        name, nr, args = _parse_syscall(_read(f"{base}/syscall"))
    except (OSError, ValueError) as e:
        errors.append(f"syscall: {getattr(e, 'strerror', None) or e}")
    fd: int | None = None
    if nr is not None and nr >= 0 and args:
        if _SYSCALLS.get(nr, ("", False))[1]:
            fd = args[0]
        elif name in _POLLS:
            try:
                fds = _poll_fds(args[0], args[1])
                fd = fds[0] if fds else None
            except OSError as e:
                errors.append(f"poll fds: {e.strerror or e}")
    target = tcp = None
    if fd is not None:
        try:
            target = os.readlink(f"{proc}/self/fd/{fd}")
            if target.startswith("socket:["):
                tcp = tcp_of(target[len("socket:["):-1])
        except (OSError, ValueError) as e:
            errors.append(f"fd {fd}: {getattr(e, 'strerror', None) or e}")
    return KernelView(True, state, wchan, name, nr, fd, target, tcp, cpu, delta, window,
                      error="; ".join(errors) or None)
