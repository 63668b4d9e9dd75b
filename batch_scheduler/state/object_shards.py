"""A cluster job's results: write-once objects, listed by the ledger, and OUT/_manifest.json at the end.

    results/<owner>-<claim>-<n>-shard-<i>.jsonl     one object per shard a collected batch wrote lines to

A batch's lines are spilled to local temporary files (memory stays bounded), then each shard's file
becomes one object, PUT write-once (`If-None-Match: *`), under a key that names the claim and the
batch's place in it, so two nodes never write the same key; the key starts with the job's owner token
(owner.py). The objects count once `record_collected` lists them (the commit point, in the claim's
fenced transaction); objects a fenced node or an interrupted download left are listed nowhere, and the
clean-up removes them, with the temporaries of puts a kill -9 cut short (objects.py `leftovers`: their
names start with the key they were for): only names that carry this job's token, never another job's.

When the job is done, OUT/_manifest.json is written once: {"job": NAME, "objects": [KEY, ...]} with
keys relative to OUT; every accepted custom_id is in exactly one listed object. Readers use it, never
a bare listing (`read_manifest`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

import orjson

from batch_scheduler.state.objects import TMP_MARK, ObjectInfo, Objects
from batch_scheduler.state.owner import OWNER_KEY
from batch_scheduler.state.shards import ShardSet

log = logging.getLogger("batch_scheduler.cluster")

MANIFEST = "_manifest.json"
OUT_FILES = ("summary.json", "rejected.jsonl", MANIFEST, OWNER_KEY)  # what OUT holds beside results/
RESULTS = "results"


def object_key(writer: str, n: int, shard: int) -> str:
    """`writer`: the job's owner token and the claim's, as the store names them (ObjectsStore.open_shards)."""
    return f"{RESULTS}/{writer}-{n:06d}-shard-{shard:05d}.jsonl"


class ObjectShards:
    """`writer.ShardSet`'s interface for the collector, over write-once objects."""

    def __init__(self, objects: Objects, n: int, claim: str, spill_dir: str):
        self.objects = objects
        self.n = n
        self.offsets = [0] * n  # the ledger's shard offsets stay 0: the objects are the record
        self._claim = claim
        self._spill_dir = spill_dir
        self._spill = ShardSet(spill_dir, n)
        self.pending = self._spill.pending  # the collector appends each shard's lines here (ShardSet's)
        self._batches = 0
        self._uploaded: list[tuple[str, int, int, int]] = []

    def account(self, nbytes: int) -> None:
        self._spill.account(nbytes)

    async def durable(self) -> list[int]:
        """Every shard's lines of this batch as one write-once object each; `uploaded` lists them."""
        self._spill.flush()
        self._batches += 1
        done: list[tuple[str, int, int, int]] = []
        for i in range(self.n):
            if not self._spill.offsets[i]:
                continue
            path = os.path.join(self._spill_dir, "results", f"shard-{i:05d}.jsonl")
            data = await asyncio.to_thread(_read, path)
            key = object_key(self._claim, self._batches, i)
            await self.objects.put_once(key, data)
            done.append((key, i, len(data), data.count(b"\n")))
        self._spill.rollback([0] * self.n)
        self._uploaded = done
        return list(self.offsets)

    @property
    def uploaded(self) -> list[tuple[str, int, int, int]]:
        return self._uploaded

    def rollback(self, offsets: list[int]) -> None:
        """Drop this batch's spilled lines; objects already uploaded are listed nowhere (the GC's)."""
        self._spill.rollback([0] * self.n)
        self._uploaded = []

    def close(self) -> None:
        self._spill.close()
        shutil.rmtree(self._spill_dir, ignore_errors=True)


async def collect_garbage(objects: Objects, listed: set[str], owner_token: str) -> list[str]:
    """Remove the result objects this job wrote (its owner token in their names) that its ledger does not
    list, the temporaries of its puts a kill cut short, and those of OUT's own files (summary, rejected
    lines, manifest, owner record); the keys removed. Another job's objects are never touched, whatever
    its ledger says."""
    gone = []
    mine = f"{RESULTS}/{owner_token[:16]}-"
    keys = [info.key for info in await objects.list(RESULTS)] + await objects.leftovers(RESULTS)
    for key in sorted(keys):
        if key.startswith(mine) and key not in listed:
            await objects.delete(key)
            gone.append(key)
    # the temporaries of OUT's own files (summary, rejected lines, manifest, owner record) a kill left: OUT
    # is this job's alone (its owner record), so whoever's write it was, nothing reads them
    for key in await objects.leftovers(""):
        if "/" not in key and key.split(TMP_MARK, 1)[0] in OUT_FILES:
            await objects.delete(key)
            gone.append(key)
    if gone:
        log.info("removed %d result object(s) of this job no ledger row lists (left by a fenced node, a cut "
                 "download or a put a kill cut short)", len(gone))
    return gone


async def write_manifest(objects: Objects, job: str, keys: list[str]) -> None:
    """OUT/_manifest.json, once: a second writer (this job taken over after it wrote it) finds the same."""
    doc = orjson.dumps({"job": job, "objects": sorted(keys)}, option=orjson.OPT_INDENT_2) + b"\n"
    await objects.put_once(MANIFEST, doc)


async def read_manifest(objects: Objects) -> list[ObjectInfo]:
    """The result objects a finished job lists, in order."""
    doc = orjson.loads(await objects.get(MANIFEST))
    return [ObjectInfo(k, 0) for k in doc["objects"]]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
