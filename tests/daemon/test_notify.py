"""systemd's Type=notify: READY=1 once the spool is locked and the port bound, STATUS= as the job counts
change, WATCHDOG=1 from the main loop, STOPPING=1 at shutdown; datagrams read from a socket the test binds."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time

import aiohttp
import pytest

from batch_scheduler.daemon.notify import Notifier, watchdog_interval_s

from .helpers import drop, job_flags, running_daemon, state, until

pytestmark = pytest.mark.timeout(30)


class Listener:
    """A datagram socket like systemd's: every message received, split into its NAME=value lines."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    async def next(self, timeout_s: float = 15.0) -> list[str]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 4096), timeout_s)
        lines = data.decode().split("\n")
        self.messages.append(lines)
        return lines

    async def until(self, wanted: str, timeout_s: float = 15.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            lines = await self.next(max(0.01, deadline - time.monotonic()))
            if any(line.startswith(wanted) for line in lines):
                return lines

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request):
    if request.param == "abstract":
        address = f"@batch-scheduler-test-{os.getpid()}-{time.monotonic_ns()}"
        lst = Listener(address)
        yield lst
        lst.close()
    else:
        with tempfile.TemporaryDirectory(dir="/tmp") as d:  # a short path: AF_UNIX allows 107 bytes
            lst = Listener(os.path.join(d, "notify"))
            yield lst
            lst.close()


async def test_ready_when_listening_status_as_jobs_change_and_stopping_at_shutdown(sim, env_dir, tmp_path,
                                                                                  listener):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), notify_socket=listener.address) as run, \
            aiohttp.ClientSession() as http:
        ready = await listener.next()
        assert ready == ["READY=1", "STATUS=no jobs"]
        async with http.get(run.daemon.url + "/healthz") as r:  # bound when READY=1 was sent
            assert r.status == 200
        assert (spool / "daemon.lock").read_text().strip() == str(os.getpid())
        drop(spool, "nightly", 40)
        await until(lambda: state(spool, "nightly") == "done", "the job done")
        assert await listener.until("STATUS=1 done") == ["STATUS=1 done"]
        await run.stop()
    stopping = await listener.until("STOPPING=1")
    assert stopping[0] == "STOPPING=1"
    statuses = [line for m in listener.messages for line in m if line.startswith("STATUS=")]
    assert "STATUS=1 running" in statuses or "STATUS=1 queued" in statuses
    assert not any("WATCHDOG" in line for m in listener.messages for line in m)  # no WATCHDOG_USEC, none sent


async def test_the_main_loop_sends_watchdog_pings(sim, env_dir, tmp_path, listener):
    spool = tmp_path / "spool"
    async with running_daemon(spool, env_dir, job_flags(sim.url), notify_socket=listener.address,
                              inbox_poll_s=5.0, watchdog_s=0.05):
        await listener.until("READY=1")
        for _ in range(3):  # more often than the 5 s inbox poll: the loop wakes for the watchdog
            assert await listener.next(timeout_s=3.0) == ["WATCHDOG=1"]


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process():
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000"}, 42) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "42"}, 42) == 10.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval_s({}, 42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, 42) is None


def test_without_a_listener_a_notification_is_dropped_not_raised(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "nobody"))
    assert notifier.send("READY=1") is False
    assert notifier.send("STATUS=x") is False
    warnings = [r.getMessage() for r in caplog.records if "notify socket" in r.getMessage()]
    assert warnings == [f"systemd notify socket {tmp_path / 'nobody'}: No such file or directory "
                        f"(further failures are not logged)"]
    assert Notifier(None).send("READY=1") is False
    notifier.close()
