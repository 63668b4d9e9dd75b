"""systemd's notify protocol, for a `Type=notify` unit: a datagram of `NAME=value` lines to $NOTIFY_SOCKET.

    READY=1       the spool is locked and the HTTP port is bound (server.Daemon.serve)
    STATUS=...    the job counts, whenever they change ("2 running, 5 queued, 40 done")
    WATCHDOG=1    from the main loop, every half of WATCHDOG_USEC (a hung loop stops sending: systemd restarts)
    STOPPING=1    the shutdown has begun

An address starting with `@` is in the abstract namespace (a leading NUL byte). Without
$NOTIFY_SOCKET every call does nothing. A datagram that cannot be sent is dropped, never waited for:
the daemon's work does not depend on systemd listening.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from batch_scheduler.daemon.logs import log


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """How often to send WATCHDOG=1: half of WATCHDOG_USEC, when it is set for this process."""
    usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (for_pid and for_pid != str(pid)):
        return None
    return int(usec) / 1e6 / 2


class Notifier:
    def __init__(self, address: str | None):
        self.address = ("\0" + address[1:] if address.startswith("@") else address) if address else None
        self._sock: socket.socket | None = None
        self._warned = False

    def send(self, *lines: str) -> bool:
        """Send one datagram; True if it went."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as err:
            if not self._warned:  # once: a missing listener must not fill the log
                log.warning("systemd notify socket %s: %s (further failures are not logged)",
                            self.address.replace("\0", "@"), err.strerror or err)
                self._warned = True
            return False

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
