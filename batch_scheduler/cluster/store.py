"""Where a cluster job's state lives: the ledger in PostgreSQL, results as write-once objects in OUT.

`ClusterStore` is a job store (see job/job.py) for one claim: the engine runs over it unchanged.
`BucketRunStore` is the same for `run INPUT --out s3://...`: one process, no PostgreSQL, the SQLite
ledger in a local state directory, the results, manifest and summary in the bucket.
OUT is a bucket URL or a directory every node mounts; the node's own temporary directory holds
only what is being made (a batch's lines before upload, the rejected lines of this run). What a
finished run makes visible, and in this order: OUT/rejected.jsonl, OUT/summary.json, and when the
job is done, the GC pass and OUT/_manifest.json (results.py). A fenced claim publishes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import orjson

from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.input.reader import fingerprint
from batch_scheduler.job.job import check_identity, lock_dir
from batch_scheduler.job.view.summary import write_summary
from batch_scheduler.state.budget import Share, account_of
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.object_shards import ObjectShards, collect_garbage, write_manifest
from batch_scheduler.state.objects import Objects, is_object_url, object_fingerprint, open_objects
from batch_scheduler.state.postgres import PgLedger
from batch_scheduler.state.sqlite import SqliteLedger

log = logging.getLogger("batch_scheduler.cluster")


class ObjectsStore:
    """What both stores share: results as write-once objects in OUT, published at the end of a run."""

    def __init__(self, name: str, token: str, out: str, *, work_root: str | None = None,
                 objects: Objects | None = None):
        self.name = name
        self.token = token
        self.where = out
        self.objects = objects or open_objects(out)
        self.work_dir = tempfile.mkdtemp(prefix="bs-job-", dir=work_root)
        self.ledger: Any = None
        self._summary: dict[str, Any] | None = None

    def fingerprints(self, inputs: list[str]) -> list[dict]:
        return [object_fingerprint(p) if is_object_url(p) else fingerprint(p) for p in inputs]

    def open_shards(self, n: int, offsets: list[int]) -> ObjectShards:
        return ObjectShards(self.objects, n, self.token, os.path.join(self.work_dir, "spill"))

    def rejects_path(self) -> str:
        return os.path.join(self.work_dir, "rejected.jsonl")

    def write_summary(self, summary: dict[str, Any]) -> None:
        self._summary = summary  # published with the rest, once the claim is known to be still ours

    async def publish(self, ok: bool) -> None:
        ledger = self.ledger
        assert ledger is not None
        await ledger.acounters()  # cluster: a fenced read, so a claim that is gone publishes nothing (LeaseLost)
        rejected = await asyncio.to_thread(_read, self.rejects_path())
        if rejected is not None:  # None: this run did not read the whole input, the list in OUT stays
            await self.objects.put("rejected.jsonl", rejected)
        if self._summary:
            await self.objects.put("summary.json", orjson.dumps(self._summary, option=orjson.OPT_INDENT_2))
        if ok:
            listed = ledger.result_objects()
            await collect_garbage(self.objects, set(listed))
            await write_manifest(self.objects, self.name, listed)

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


class ClusterStore(ObjectsStore):
    """One claim on a cluster job: its ledger in PostgreSQL, fenced by the claim's token."""

    def __init__(self, url: str, job_id: int, name: str, token: str, out: str, *, work_root: str | None = None,
                 objects: Objects | None = None, share: Share | None = None):
        super().__init__(name, token, out, work_root=work_root, objects=objects)
        self.url = url
        self.job_id = job_id
        self.share = share  # the shared admission budget the job draws on (budget.py), if any

    def lock(self, owner: str) -> None:
        """None: the claim's lease is the lock (every ledger transaction checks it)."""
        return None

    def open_ledger(self, settings: Settings, inputs: list[str], remembered: dict) -> Ledger:
        prints = self.fingerprints(inputs)
        self.ledger = PgLedger(self.url, self.job_id, self.token, name=self.name)
        self.ledger.share = self.share
        if settings.api_key:  # what admission learns of this account's queues is every job's to start from
            self.ledger.account = account_of(settings.provider, settings.base_url, settings.api_key)
        return check_identity(self.ledger, settings, self.where, prints, remembered)


class BucketRunStore(ObjectsStore):
    """`run INPUT --out s3://...`: the SQLite ledger (and a copy of summary.json) in `state_dir` on this
    machine, so running the same command again resumes; each run writes under a token of its own."""

    def __init__(self, out: str, state_dir: str):
        super().__init__(out, secrets.token_hex(8), out)
        self.state_dir = state_dir

    def lock(self, owner: str) -> JobLock:
        """The state directory's lock: one `run --out` of this OUT at a time on this machine."""
        return lock_dir(self.state_dir, owner, "the state directory of --out")

    def open_ledger(self, settings: Settings, inputs: list[str], remembered: dict) -> Ledger:
        prints = self.fingerprints(inputs)  # before the ledger opens: an unreadable input leaks nothing
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self.ledger = SqliteLedger(os.path.join(self.state_dir, "ledger.db"))
        return check_identity(self.ledger, settings, self.where, prints, remembered)

    def write_summary(self, summary: dict[str, Any]) -> None:
        super().write_summary(summary)
        write_summary(self.state_dir, summary)


def state_dir_for(out: str, env: Mapping[str, str]) -> str:
    """Where `run --out s3://...` keeps its ledger: $XDG_STATE_HOME (or ~/.local/state)/batch-scheduler/<hash of OUT>."""
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "batch-scheduler", hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:16])


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
