"""One owner per job directory: an OS lock on DIR/job.lock.

Every command that writes a job takes it before anything else: `run`, `resume`, `cancel` and each run
of a daemon job. A second one is refused at once (`errors.JobBusy`, exit 2) with who holds it. The lock
is an `fcntl.flock` on the open file, so it belongs to the process: one that dies (kill -9 included)
holds nothing, and a stale lock never blocks. What the file says (pid, host, command, since) only names
the holder in the refusal; it never decides anything.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time

import orjson

from batch_scheduler.core.errors import JobBusy

LOCK_FILE = "job.lock"


class JobLock:
    """Held from `take` until `release` (or the process's end)."""

    def __init__(self, fd: int, path: str, owner: str):
        self._fd: int | None = fd
        self.path = path
        self.owner = owner

    @classmethod
    def take(cls, job_dir: str, owner: str) -> JobLock:
        """The lock of `job_dir` (which exists), for `owner` (e.g. "batch-scheduler run"); JobBusy if held."""
        path = os.path.join(job_dir, LOCK_FILE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = read_record(os.pread(fd, 4096, 0))
            os.close(fd)
            raise JobBusy(job_dir, describe(record), record.get("owner") if record else None) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "owner": owner, "since": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, orjson.dumps(record) + b"\n", 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, the refusal just names nobody
        return cls(fd, path, owner)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # the holder's name goes with the lock
        except OSError:
            pass
        os.close(fd)

    def __enter__(self) -> JobLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_record(content: bytes) -> dict | None:
    """What a lock file says of its holder, or None when it says nothing readable."""
    try:
        doc = orjson.loads(content)
        record = {"owner": str(doc["owner"]), "pid": int(doc["pid"]), "host": str(doc["host"]),
                  "since": float(doc["since"])}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return record


def describe(record: dict | None) -> str:
    """Who holds a lock, in words: "batch-scheduler run (pid 4242 on host-a, since 2026-01-31 12:00:01)"."""
    if record is None:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["since"]))
    return f"{record['owner']} (pid {record['pid']} on {record['host']}, since {since})"
