"""One owner per output, the same rule for every store (a job directory, a bucket prefix, a directory
every cluster node mounts): before a job writes anything to OUT it claims it, and an output that is
another job's is refused (`JobMismatch`, exit 2) before anything is sent or paid.

    OUT/_owner.json   {"job": NAME, "token": TOKEN}   put once (If-None-Match: *, or a create-only link)

The token is the job's own, random, kept in its ledger (meta `owner`), and written there first: a job
that stopped between the two finds its own record and goes on. OUT is the job's when its owner record
carries the job's token; another token is another job's. An OUT without an owner record is claimed
only when it holds nothing, or when the job started before owner records existed (its ledger knew it
without one) and OUT holds no other job's ledger: results, a manifest, a summary or a ledger there
without a matching claim are another job's. The names of the result objects a job writes carry its
token (object_shards.py), and clean-up deletes only those.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.state.ledger import Ledger
from batch_scheduler.state.objects import TMP_MARK, ObjectExists, Objects

OWNER_KEY = "_owner.json"
META_KEY = "owner"  # ledger meta: this job's {"job", "token"}
# what says a job was here: its results, its account, the end of it, a local run's ledger and lock
TRACES = ("results/", "summary.json", "_manifest.json", "rejected.jsonl", "ledger.db", "job.lock")
OWNER_BYTES = 64 << 10  # an owner record larger than this is not one of ours


@dataclass(frozen=True)
class Owner:
    job: str
    token: str

    def doc(self) -> bytes:
        return orjson.dumps({"job": self.job, "token": self.token}) + b"\n"


def new_owner(job: str) -> dict[str, str]:
    """The owner record a new job's ledger starts with (check_identity writes it with the job's identity)."""
    return {"job": job, "token": secrets.token_hex(16)}


def owner_of(ledger: Ledger, job: str) -> tuple[Owner, bool]:
    """This job's owner record from its ledger; and whether the job started before owner records (its
    ledger knew it without one: the record is made and written there now)."""
    found = ledger.read_meta().get(META_KEY)
    if isinstance(found, dict) and isinstance(found.get("token"), str) and isinstance(found.get("job"), str):
        return Owner(found["job"], found["token"]), False
    made = new_owner(job)
    ledger.write_meta({META_KEY: made})
    return Owner(made["job"], made["token"]), True


def parse_owner(data: bytes, where: str) -> Owner:
    """An owner record read from OUT; JobMismatch naming it when it is not one."""
    try:
        doc: Any = orjson.loads(data) if len(data) <= OWNER_BYTES else None
    except orjson.JSONDecodeError:
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("job"), str) and isinstance(doc.get("token"), str)):
        raise errors.JobMismatch(f"{where}/{OWNER_KEY} is not an owner record of ours; {where} is not used")
    return Owner(doc["job"], doc["token"])


async def read_owner(objects: Objects, where: str) -> Owner | None:
    """OUT's owner record (None: it has none)."""
    try:
        data = await objects.get(OWNER_KEY)
    except (FileNotFoundError, KeyError):
        return None
    except Exception as err:  # noqa: BLE001 - obstore's own errors
        if type(err).__name__ != "NotFoundError":
            raise
        return None
    return parse_owner(data, where)


def taken_message(where: str, other: Owner) -> str:
    return (f"{where} belongs to job {other.job!r} (its owner record {OWNER_KEY}); a job never writes into "
            f"another's output: choose another --out")


def refuse_unless_ours(where: str, owner: Owner, found: Owner | None) -> None:
    if found is not None and found.token != owner.token:
        raise errors.JobMismatch(taken_message(where, found))


async def traces(objects: Objects, *, besides: tuple[str, ...] = ()) -> list[str]:
    """What OUT holds of a job (results, summary, manifest, a local run's ledger or lock), `besides` aside."""
    found = []
    for info in await objects.list():
        if info.key.startswith(TRACES) and not info.key.startswith(besides) and TMP_MARK not in info.key:
            found.append(info.key)
    return found


async def claim_output(objects: Objects, where: str, owner: Owner, *, started_before: bool,
                       own_files: tuple[str, ...] = ()) -> None:
    """OUT for this job, or JobMismatch (exit 2) naming whose it is; see the module's docstring.
    `own_files`: what this job's store keeps in OUT itself (a job directory's ledger and lock)."""
    found = await read_owner(objects, where)
    refuse_unless_ours(where, owner, found)
    if found is not None:
        return
    if not started_before and (held := await traces(objects, besides=own_files)):
        raise errors.JobMismatch(
            f"{where} holds another job's files ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}) and no "
            f"owner record of this job: it is not used, and nothing of it is touched; choose another --out")
    try:
        await objects.put_once(OWNER_KEY, owner.doc())
    except ObjectExists:  # another job claimed it meanwhile
        refuse_unless_ours(where, owner, await read_owner(objects, where))
