"""HOST:PORT as the --listen flags of the spool daemon and of a cluster node spell it."""

from __future__ import annotations

from batch_scheduler.core import errors


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise errors.UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8787 or [::1]:8787")
    return host.strip("[]"), int(port)
