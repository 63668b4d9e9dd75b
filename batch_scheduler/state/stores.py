"""Where a job's durable state lives: its store. The engine runs over any of them unchanged.

- `LocalStore(DIR)`: a job directory on this machine (jobdir.py): what `run --out DIR` and the spool
  daemon use; its lock is DIR/job.lock.
- `BucketRunStore(OUT, STATE_DIR)`: `run INPUT --out s3://...`: one process, no PostgreSQL, the SQLite
  ledger (and a copy of summary.json) in a local state directory, so running the same command again
  resumes; results, manifest and summary in the bucket.
- `ObjectsStore`: what the bucket run and a cluster job's claim (cluster/store.py) share: results as
  write-once objects in OUT (object_shards.py), published at the end of a run. OUT is a bucket URL or a
  directory every node mounts; a local temporary directory holds only what is being made (a batch's
  lines before upload, the rejected lines of this run). What a finished run makes visible, and in this
  order: OUT/rejected.jsonl, OUT/summary.json, and when the job is done, the clean-up of what this job
  wrote and no ledger row lists, then OUT/_manifest.json.

Every store claims its output before anything is written there (`own`, the one rule of owner.py).
A store has `where` (named in messages), `fingerprints(inputs)`, `lock(owner)` (a JobLock, or None),
`open_ledger(settings, inputs, remembered)`, `async own(ledger)`, `open_shards(n, offsets)`,
`rejects_path()`, `write_summary(summary)` and `async publish(ok)` (after a run, its files closed:
what the store makes visible to readers).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.settings import Settings
from batch_scheduler.state import jobdir, owner
from batch_scheduler.state.host import user_state_dir
from batch_scheduler.state.identity import check_identity, fingerprints
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.ledger.sqlite import SqliteLedger
from batch_scheduler.state.object_shards import ObjectShards, collect_garbage, write_manifest
from batch_scheduler.state.objects import LocalObjects, Objects, open_objects
from batch_scheduler.state.shards import ShardSet


class LocalStore:
    """A job directory on this machine: what `run` and the spool daemon use."""

    def __init__(self, out_dir: str):
        self.where = self.out_dir = out_dir

    def fingerprints(self, inputs: list[str]) -> list[dict]:
        return fingerprints(inputs)

    def lock(self, owner: str) -> JobLock:
        return jobdir.lock_dir(self.out_dir, owner, "--out")

    def open_ledger(self, settings: Settings, inputs: list[str], remembered: dict) -> Ledger:
        record = os.path.join(self.out_dir, owner.OWNER_KEY)
        if (os.path.exists(record) and not os.path.exists(os.path.join(self.out_dir, "ledger.db"))
                and not jobdir.results_here(self.out_dir)):  # (results without a ledger: jobdir says so)
            with open(record, "rb") as f:  # another job's (a cluster job's) output: no ledger.db is made
                raise errors.JobMismatch(owner.taken_message(self.out_dir, owner.parse_owner(f.read(), self.out_dir)))
        return jobdir.open_ledger(settings, self.out_dir, inputs, remembered)

    async def own(self, ledger: Ledger) -> None:
        """The directory's owner record: this job's (the lock keeps other processes out meanwhile)."""
        mine, started_before = owner.owner_of(ledger, self.out_dir)
        await owner.claim_output(LocalObjects(self.out_dir), self.out_dir, mine, started_before=started_before,
                                 own_files=("ledger.db", "job.lock", "results/", "summary.json", "rejected.jsonl"))

    def open_shards(self, n: int, offsets: list[int]) -> ShardSet:
        return jobdir.open_shards(self.out_dir, n, offsets)

    def rejects_path(self) -> str:
        return os.path.join(self.out_dir, "rejected.jsonl")

    def write_summary(self, summary: dict) -> None:
        jobdir.write_summary(self.out_dir, summary)

    async def publish(self, ok: bool) -> None:
        """Everything is in place already."""


class ObjectsStore:
    """What the bucket run and a cluster claim share: results as write-once objects in OUT, published at
    the end of a run. `token`: this run's (a claim's), in the names of the objects it writes."""

    def __init__(self, name: str, token: str, out: str, *, work_root: str | None = None,
                 objects: Objects | None = None):
        self.name = name
        self.token = token
        self.where = out
        self.objects = objects or open_objects(out)
        self.work_dir = tempfile.mkdtemp(prefix="bs-job-", dir=work_root)
        self.ledger: Any = None
        self.owner: owner.Owner | None = None
        self._known = False  # whether the ledger knew the job when this run opened it
        self._summary: dict[str, Any] | None = None

    def fingerprints(self, inputs: list[str]) -> list[dict]:
        return fingerprints(inputs)

    def _opened(self, ledger: Ledger, settings: Settings, prints: list[dict], remembered: dict) -> Ledger:
        self.ledger = ledger
        self._known = bool(ledger.read_meta())
        return check_identity(ledger, settings, self.where, prints, remembered)

    async def own(self, ledger: Ledger) -> None:
        """OUT for this job (owner.py), before anything is written there."""
        mine, started_before = owner.owner_of(ledger, self.name)
        await owner.claim_output(self.objects, self.where, mine, started_before=started_before and self._known)
        self.owner = mine

    def open_shards(self, n: int, offsets: list[int]) -> ObjectShards:
        assert self.owner is not None, "own() before open_shards()"
        return ObjectShards(self.objects, n, f"{self.owner.token[:16]}-{self.token[:16]}",
                            os.path.join(self.work_dir, "spill"))

    def rejects_path(self) -> str:
        return os.path.join(self.work_dir, "rejected.jsonl")

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._summary = summary  # published with the rest, once the claim is known to be still ours

    async def publish(self, ok: bool) -> None:
        ledger = self.ledger
        assert ledger is not None and self.owner is not None
        await ledger.acounters()  # cluster: a fenced read, so a claim that is gone publishes nothing (LeaseLost)
        rejected = await asyncio.to_thread(_read, self.rejects_path())
        if rejected is not None:  # None: this run did not read the whole input, the list in OUT stays
            await self.objects.put("rejected.jsonl", rejected)
        if self._summary:
            await self.objects.put("summary.json", orjson.dumps(self._summary, option=orjson.OPT_INDENT_2))
        if ok:
            listed = ledger.result_objects()
            await collect_garbage(self.objects, set(listed), self.owner.token)
            await write_manifest(self.objects, self.name, listed)

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


class BucketRunStore(ObjectsStore):
    """`run INPUT --out s3://...`: the SQLite ledger (and a copy of summary.json) in `state_dir` on this
    machine, so running the same command again resumes; each run writes under a token of its own."""

    def __init__(self, out: str, state_dir: str):
        super().__init__(out, secrets.token_hex(8), out)
        self.state_dir = state_dir

    def lock(self, owner: str) -> JobLock:
        """The state directory's lock: one `run --out` of this OUT at a time on this machine (the owner
        record in OUT keeps out a run from another machine, or from another state directory)."""
        return jobdir.lock_dir(self.state_dir, owner, "the state directory of --out")

    def open_ledger(self, settings: Settings, inputs: list[str], remembered: dict) -> Ledger:
        prints = self.fingerprints(inputs)  # before the ledger opens: an unreadable input leaks nothing
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        return self._opened(SqliteLedger(os.path.join(self.state_dir, "ledger.db")), settings, prints, remembered)

    def write_summary(self, summary: dict[str, Any]) -> None:
        super().write_summary(summary)
        jobdir.write_summary(self.state_dir, summary)


def state_dir_for(out: str, env: Mapping[str, str]) -> str:
    """Where `run --out s3://...` keeps its ledger: $XDG_STATE_HOME (or ~/.local/state)/batch-scheduler/<hash of OUT>."""
    return os.path.join(user_state_dir(env), hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:16])


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
