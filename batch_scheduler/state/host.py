"""The jobs of one machine on one provider account, whatever process runs them: what a lost create must never
adopt, and the turns they take (job/send/claims.py).

Where a provider's batches keep no metadata (Anthropic), a batch whose create answer was lost is found again
by its request count and creation time only. The jobs of one process take turns and rule out each other's
batches in memory; two `batch-scheduler run` processes on one account (two cron entries, a run beside a
notebook) know nothing of each other that way. Without more, a lost create of one could adopt a batch of the
other with the same count, and where both jobs' requests carry the same custom_ids, keep its answers.

So each account (provider, URL and a digest of the key: never the key) has a directory under the state root:

- `turn.lock`: a lock (flock) a process holds while one of its jobs has the account's turn: the `Gate` of
  `Claims.turn`, so one job of the machine at a time creates and looks, and a create whose answer was lost
  keeps the turn until its chunk has looked. A killed process's lock goes with it;
- `jobs/<digest>`: the ledger path of each job that ran on the account, so that a look rules out every batch
  id another job's ledger records since the time it looks at (a batch's id is recorded before its turn ends).
  An entry whose ledger is gone is removed by the next look that meets it.

The root is `$BATCH_STATE_DIR`, else `$XDG_STATE_HOME/batch-scheduler`, else `~/.local/state/batch-scheduler`.
One that cannot be written leaves the jobs as they were before (each process on its own), said once in the
log. Jobs on other machines share nothing here: a cluster (PostgreSQL) does that for its nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Mapping

from batch_scheduler.core import errors
from batch_scheduler.core.durable import write_file
from batch_scheduler.state.ledger import open_ledger

log = logging.getLogger("batch_scheduler.submitter")

LOCK_POLL_S = (0.01, 0.05)  # a process waiting for another's turn tries again after this long (jittered)
WANT_FRESH_S = 0.5  # a waiter touches `turn.want` at each try: the holder's turn then ends within TURN_S
SAY_WAIT_S = 60.0  # a turn waited for this long is said in the log, naming its holder


def user_state_dir(env: Mapping[str, str]) -> str:
    """This program's directory in the user's state home: $XDG_STATE_HOME (or ~/.local/state)/batch-scheduler."""
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "batch-scheduler")


def state_root() -> str:
    """Where this machine's account directories live (see the module's docstring)."""
    return os.environ.get("BATCH_STATE_DIR") or user_state_dir(os.environ)


def written_since(ledger_path: str, since: float) -> bool:
    """Whether an SQLite ledger (or its write-ahead log) was written at or after `since` (epoch)."""
    for path in (ledger_path, ledger_path + "-wal"):
        try:
            if os.stat(path).st_mtime >= since:
                return True
        except OSError:
            continue
    return False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class HostAccounts:
    """The `Gate` and the `Elsewhere` of the claims of jobs run on this machine (owner: the job's directory)."""

    def __init__(self, root: str | None = None):
        self._root = root
        self._lock = threading.Lock()
        self._account: dict[str, str] = {}  # owner -> its account's directory
        self._ledger: dict[str, str] = {}  # owner -> its ledger's path
        self._held: dict[str, int] = {}  # owner -> the open lock file of the turn it holds
        self._broken = False

    def join(self, owner: str, account: str, ledger_path: str) -> None:
        """`owner`'s job runs on `account` with its ledger at `ledger_path` (blocking: a small file written);
        nothing for a ledger that is no local file (a job whose state is in a bucket or in PostgreSQL)."""
        if not os.path.isfile(ledger_path):
            return
        where = os.path.join(self._root or state_root(), "accounts", _digest(account))
        try:
            os.makedirs(os.path.join(where, "jobs"), mode=0o700, exist_ok=True)
            entry = os.path.join(where, "jobs", _digest(os.path.abspath(ledger_path)))
            if not os.path.exists(entry):
                write_file(entry, os.path.abspath(ledger_path).encode("utf-8"), tmp=f"{entry}.{os.getpid()}.tmp")
        except OSError as err:
            self._cannot(where, err)
            return
        with self._lock:
            self._account[owner], self._ledger[owner] = where, os.path.abspath(ledger_path)

    def _cannot(self, where: str, err: OSError) -> None:
        if not self._broken:
            self._broken = True
            log.warning("cannot keep this machine's jobs per account in %s (%s): a lost create is looked for "
                        "without knowing the batches of jobs in other processes (set BATCH_STATE_DIR to a "
                        "writable directory)", where, err.strerror or err)

    async def join_off_loop(self, owner: str, account: str, ledger_path: str) -> None:
        """`join` in a thread. Stopped meanwhile, the listing (a small file) ends first, so a `leave` that
        follows the stop comes after it."""
        joining = asyncio.ensure_future(asyncio.to_thread(self.join, owner, account, ledger_path))
        try:
            await asyncio.shield(joining)
        except asyncio.CancelledError:
            await asyncio.wait([joining])
            raise

    def leave(self, owner: str) -> None:
        """The job's run ended (its entry stays: its batches are still not another's to adopt)."""
        with self._lock:
            self._account.pop(owner, None)
            self._ledger.pop(owner, None)

    def batches_since(self, owner: str, since: float) -> set[str]:
        """Batch ids the ledgers of the account's other jobs recorded at or after `since` (blocking)."""
        with self._lock:
            where, mine = self._account.get(owner), self._ledger.get(owner)
        if where is None:
            return set()
        held: set[str] = set()
        jobs = os.path.join(where, "jobs")
        try:
            names = [n for n in os.listdir(jobs) if not n.endswith(".tmp")]
        except OSError:
            return held
        for name in names:
            entry = os.path.join(jobs, name)
            try:
                with open(entry, encoding="utf-8") as f:
                    path = f.read().strip()
            except OSError:
                continue
            if path == mine:
                continue
            if not os.path.exists(path):
                with contextlib.suppress(OSError):
                    os.unlink(entry)  # the job's directory is gone: nothing of it to rule out any more
                continue
            if written_since(path, since):
                held |= recorded_since(path, since)
        return held

    async def acquire(self, owner: str) -> None:
        """Take the account's turn lock for `owner` (waits while a job of another process holds it)."""
        with self._lock:
            where = self._account.get(owner)
        if where is None:
            return
        try:
            fd = os.open(os.path.join(where, "turn.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:  # the directory went away or became read-only since `join`: as if never joined
            self._cannot(where, err)
            return
        want = os.path.join(where, "turn.want")
        since, said = time.monotonic(), False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    with contextlib.suppress(OSError):
                        os.close(os.open(want, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                        os.utime(want)
                    if not said and time.monotonic() - since > SAY_WAIT_S:
                        said = True
                        log.warning("job %s: creates wait for the turn on this provider account, which %s holds (a "
                                    "stopped process holds it until it goes on or ends)", owner, _holder(fd))
                    await asyncio.sleep(random.uniform(*LOCK_POLL_S))
            with contextlib.suppress(OSError):  # who holds it, for a process that waits long to say
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, job {owner}".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        with self._lock:
            self._held[owner] = fd

    def contended(self, owner: str) -> bool:
        """Whether a job of another process waits for the account's turn (it touched `turn.want` just now)."""
        where = self._account.get(owner)
        if where is None:
            return False
        try:
            return time.time() - os.stat(os.path.join(where, "turn.want")).st_mtime < WANT_FRESH_S
        except OSError:
            return False

    async def release(self, owner: str) -> None:
        with self._lock:
            fd = self._held.pop(owner, None)
        if fd is not None:
            os.close(fd)  # closing the file gives the lock back


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
    except OSError:
        return "another process"


def recorded_since(ledger_path: str, since: float) -> set[str]:
    """The batch ids an SQLite ledger recorded at or after `since` (blocking); none from a damaged one."""
    try:
        ledger = open_ledger(ledger_path, readonly=True)
    except (errors.SchedulerError, sqlite3.Error):
        return set()  # a damaged ledger fails its own job; it claims nothing
    try:
        return ledger.batch_ids_since(since)
    except (errors.SchedulerError, sqlite3.Error):
        return set()
    finally:
        ledger.close()
