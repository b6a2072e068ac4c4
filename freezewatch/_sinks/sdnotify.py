"""systemd watchdog keep-alive: ``WATCHDOG=1`` datagrams, sent only while loops answer.

The sd_notify protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX
socket named by ``NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract
namespace). With ``WatchdogSec=`` systemd sets ``WATCHDOG_USEC`` (and
``WATCHDOG_PID``) and restarts the service when no ``WATCHDOG=1`` arrives for
that long; systemd's documentation recommends sending every half period.

The watchdog thread calls ``Notifier.maybe_ping`` once per round: a freeze
therefore stops the pings because the loop did not answer, and a watchdog
thread that cannot run at all (the GIL held by a C call) stops them too.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


class Notifier:
    """Feeds systemd's watchdog every ``period`` seconds while told the process is healthy."""

    def __init__(self, address: str, period: float) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.period = period
        self.sent = 0
        self.errors = 0
        self._last = float("-inf")
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier when systemd asked for watchdog pings from this process, else None."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if not address or usec <= 0:
            return None
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):  # meant for another process (sd_watchdog_enabled)
            return None
        return cls(address, usec / 2e6)

    def maybe_ping(self, now: float, healthy: bool) -> bool:
        """Send ``WATCHDOG=1`` if healthy and a half period passed; True if sent."""
        if not healthy or now - self._last < self.period:
            return False
        if self.notify(b"WATCHDOG=1"):
            self._last = now
            return True
        return False

    def notify(self, message: bytes) -> bool:
        """One datagram to systemd; never raises, never blocks (a full queue drops it)."""
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message, self.address)
        except OSError:  # boundary: systemd gone or queue full; the next round retries
            self.errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
