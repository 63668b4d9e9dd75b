"""`export s3://BUCKET/OUT -o FILE.jsonl`: a bucket output (a cluster job's, or `run --out s3://`'s) back as
one file of result lines, verbatim, in shard order (each shard's objects in the order they were written).

What a finished job lists is read from OUT/_manifest.json (never a bare listing: objects a fenced node
left are not the job's), through state/objects.py, one object at a time, so memory holds one object.
A manifest is written when the job is done, so an output without one is refused, as is a manifest that
is not one of ours. The input and the ledger are not at hand here: csv and parquet (which need the
input's rows) and input order are refused with one line each.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO

import orjson

from batch_scheduler.core.durable import replacing
from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.view.export import Exported
from batch_scheduler.state.object_shards import MANIFEST, RESULTS
from batch_scheduler.state.objects import Objects, open_objects

_SHARD = re.compile(r"-shard-(\d+)\.jsonl$")


async def export_objects(url: str, fmt: str, dest: str, order: str) -> Exported:
    """The result lines of the finished job in the bucket output `url`, to `dest` (replaced whole)."""
    if fmt != "jsonl" or order != "shard":
        raise UsageError(f"{url}: a bucket output is exported as --format jsonl in --order shard (csv, parquet and "
                         f"input order need the job's input and ledger: export it on a machine that has them)")
    objects = open_objects(url)
    keys = in_shard_order(await manifest_keys(objects, url))
    with replacing(dest, buffering=1 << 20) as f:
        done = await _write(objects, url, keys, f)
    done.rejected = await _count_rejected(objects)
    return done


async def manifest_keys(objects: Objects, url: str) -> list[str]:
    """The result objects OUT/_manifest.json lists; UsageError naming what is wrong with it."""
    try:
        data = await objects.get(MANIFEST)
    except Exception as err:  # noqa: BLE001 - not found: a local FileNotFoundError, obstore's NotFoundError
        if isinstance(err, FileNotFoundError) or type(err).__name__ == "NotFoundError":
            raise UsageError(f"{url}: no finished job here (no {MANIFEST}): a bucket output is exported once its "
                             f"job is done") from None
        raise
    try:
        doc: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    keys = doc.get("objects") if isinstance(doc, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) and k.startswith(f"{RESULTS}/") and ".." not in k
                                             for k in keys):
        raise UsageError(f"{url}/{MANIFEST}: not a manifest of ours (expected objects: a list of {RESULTS}/ keys)")
    return keys


def in_shard_order(keys: list[str]) -> list[str]:
    """Shard by shard, each shard's objects in the order their names sort (the job's writer, then its batch)."""
    def shard(key: str) -> int:
        found = _SHARD.search(key)
        return int(found.group(1)) if found else -1
    return sorted(keys, key=lambda k: (shard(k), k))


async def _write(objects: Objects, url: str, keys: list[str], f: BinaryIO) -> Exported:
    done = Exported(pending=0)
    for key in keys:
        data = await objects.get(key)
        if data and not data.endswith(b"\n"):
            raise UsageError(f"{url}/{key}: its last line is cut; the object is not as the job wrote it")
        lines = data.count(b"\n")
        f.write(data)
        done.rows += lines
        done.results += lines
    return done


async def _count_rejected(objects: Objects) -> int:
    try:
        return (await objects.get("rejected.jsonl")).count(b"\n")
    except Exception:  # noqa: BLE001 - none written (every line was accepted, or the run did not read it all)
        return 0
