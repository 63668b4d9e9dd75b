"""A job directory on this machine: DIR/ledger.db, DIR/results/shard-NNNNN.jsonl, DIR/rejected.jsonl,
DIR/summary.json, DIR/job.lock (core.joblock) and DIR/_owner.json (owner.py).

What the directory holds must agree with its ledger: results (or a summary counting finished requests)
without a ledger that knows the job are another job's, or a ledger that lost its -wal file; a run there
would send everything again and pay for it twice, so it is refused (`JobMismatch`) and nothing is made.

A request is finished once its final line is in the shards: a result of type succeeded, errored or
expired (or canceled, as the API spells the type). The summary is written whole to a temporary file and
renamed over the old one, so a reader sees the last run's account or the one before, never half of one.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.durable import write_file
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.settings import Settings
from batch_scheduler.state import ledger as ledgers
from batch_scheduler.state.identity import check_identity, fingerprints
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.shards import ShardSet

RESULT_TYPES = ("succeeded", "errored", "expired", "canceled")  # final lines, by result type (the API's spelling)
FINAL_TYPES = (*RESULT_TYPES, "invalid")  # and answers whose JSON does not fit response_model= (shown when any)


def finished(counters: Mapping[str, float]) -> int:
    """Requests whose final line is in the shards."""
    return int(sum(counters.get(k, 0) for k in FINAL_TYPES))


def results_by_type(counters: Mapping[str, float]) -> dict[str, int]:
    """Final lines by result type; `invalid` only when some are."""
    out = {k: int(counters.get(k, 0)) for k in RESULT_TYPES}
    if counters.get("invalid"):
        out["invalid"] = int(counters["invalid"])
    return out


def write_summary(out_dir: str, summary: dict[str, Any]) -> None:
    write_file(os.path.join(out_dir, "summary.json"), orjson.dumps(summary, option=orjson.OPT_INDENT_2))


def lock_dir(path: str, owner: str, what: str) -> JobLock:
    """The lock of a job directory (made if need be); UsageError when it cannot be a directory of ours."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        return JobLock.take(path, owner)
    except (FileExistsError, NotADirectoryError):
        raise errors.UsageError(f"{what} {path}: not a directory") from None
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        raise errors.UsageError(f"{what} {path}: cannot write there ({err.strerror})") from None


def open_ledger(settings: Settings, out_dir: str, inputs: list[str], remembered: dict) -> Ledger:
    prints = fingerprints(inputs)  # before the ledger opens: an unreadable input leaks nothing
    path = os.path.join(out_dir, "ledger.db")
    here = results_here(out_dir)
    if here and (not os.path.exists(path) or os.path.getsize(path) == 0):
        raise errors.JobMismatch(unknown_results(out_dir, here))  # and no ledger.db is made where none was
    ledger = ledgers.open_ledger(path)
    if not ledger.read_meta():
        if here:  # a ledger that lost its -wal file before it knew the job
            ledger.close()
            raise errors.JobMismatch(unknown_results(out_dir, here))
    else:
        summarised, known = summary_finished(out_dir), finished(ledger.counters())
        if summarised > known:  # the ledger is older than the results it wrote
            ledger.close()
            raise errors.JobMismatch(unknown_results(out_dir, f"summary.json counts {summarised:,} finished "
                                                              f"requests, the ledger {known:,}"))
    return check_identity(ledger, settings, out_dir, prints, remembered)


def results_here(out_dir: str) -> str:
    """What out_dir holds of a job's results ("" for nothing): bytes in the shards, finished requests counted."""
    results = os.path.join(out_dir, "results")
    size = 0
    if os.path.isdir(results):
        with os.scandir(results) as entries:
            size = sum(e.stat().st_size for e in entries if e.name.endswith(".jsonl") and e.is_file())
    counted = summary_finished(out_dir)
    return ", ".join(part for part in (f"{size:,} bytes of results" if size else "",
                                       f"a summary of {counted:,} finished requests" if counted else "") if part)


def summary_finished(out_dir: str) -> int:
    try:
        with open(os.path.join(out_dir, "summary.json"), "rb") as f:
            n = orjson.loads(f.read()).get("requests", {}).get("finished", 0)
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return 0
    return n if isinstance(n, int) else 0


def unknown_results(out_dir: str, here: str) -> str:
    return (f"{out_dir} holds results its ledger.db does not know ({here}): the ledger is missing, empty, or "
            f"lost its ledger.db-wal file. Running would send everything again and pay for it twice; put the "
            f"job's ledger.db (and ledger.db-wal) back, or move results/ and summary.json away to start afresh")


def open_shards(out_dir: str, n: int, offsets: list[int]) -> ShardSet:
    shards = ShardSet(out_dir, n)
    for i, (have, want) in enumerate(zip(shards.offsets, offsets, strict=True)):
        if have < want:
            shards.close()
            raise errors.JobMismatch(f"shard {i} is shorter ({have} bytes) than the ledger records "
                                     f"({want}); results were removed by hand, start fresh")
    shards.rollback(offsets)  # drop lines of downloads that were interrupted
    return shards
