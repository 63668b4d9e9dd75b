"""Reading a provider's answers as untrusted input: each field is checked for presence and type where it
is read, and an answer of another shape is `errors.BadAnswer`, one line naming the answer and the field.

Only what the code reads is checked: fields it does not read may hold anything (an extra non-integer
entry in `request_counts` is ignored, not summed). Callers decide what a bad answer means: a batch
object polled again a bounded number of times (poller), a create's outcome unknown (submitter), a
result line kept as errored (collector).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from batch_scheduler.core import errors

ANTHROPIC_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")  # Message Batches request_counts
SHOWN_CHARS = 60  # of a bad value, in the message
BATCH_ID = re.compile(r"[A-Za-z0-9_.:~-]{1,256}")


def shown(value: Any) -> str:
    """A value as a message shows it: its JSON type and the start of its text."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def document(data: bytes, what: str) -> dict[str, Any]:
    """The JSON object an answer's body holds."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise errors.BadAnswer(f"{what}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise errors.BadAnswer(f"{what}: expected a JSON object, got {shown(doc)}")
    return doc


def text(doc: dict[str, Any], name: str, what: str, *, required: bool = False) -> str | None:
    """A string field: present (when required) and non-empty, or absent / null."""
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise errors.BadAnswer(f"{what}: {name} {'missing' if value is None else 'is ' + shown(value)}, "
                               f"expected a non-empty string")
    return value


def batch_id(doc: dict[str, Any], what: str) -> str:
    """The `id` of a batch object: a non-empty string of URL-safe characters (it goes into URLs, the ledger
    and log lines; every provider's ids are such: msgbatch_..., batch_..., UUIDs)."""
    value = text(doc, "id", what, required=True)
    assert value is not None
    if not BATCH_ID.fullmatch(value):
        raise errors.BadAnswer(f"{what}: id is {shown(value)}, expected a batch id (letters, digits, _ . : ~ -)")
    return value


def asked_for(info: Any, batch_id_asked: str) -> Any:
    """A retrieve answer's batch, which must be the batch asked for (its results are downloaded by its id)."""
    if info.id != batch_id_asked:
        raise errors.BadAnswer(f"batch {batch_id_asked}: retrieve answer: id is {shown(info.id)}, expected "
                               f"{batch_id_asked!r}")
    return info


def whole(value: Any, where: str, what: str) -> int:
    """A count: an integer >= 0 (null is 0)."""
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise errors.BadAnswer(f"{what}: {where} is {shown(value)}, expected a whole number >= 0")
    return value


def counts(doc: dict[str, Any], names: tuple[str, ...], what: str) -> dict[str, int]:
    """`request_counts`: the named entries, each a count (missing ones 0); other entries are not read."""
    found = doc.get("request_counts")
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise errors.BadAnswer(f"{what}: request_counts is {shown(found)}, expected an object")
    return {name: whole(found[name], f"request_counts.{name}", what) for name in names if name in found}


def mapping(doc: dict[str, Any], name: str, what: str) -> dict[str, Any]:
    """An object field ({} when absent or null)."""
    value = doc.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BadAnswer(f"{what}: {name} is {shown(value)}, expected an object")
    return value


def items(doc: dict[str, Any], name: str, what: str) -> list[Any]:
    """A list field ([] when absent or null)."""
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise errors.BadAnswer(f"{what}: {name} is {shown(value)}, expected a list")
    return value


class ShapeError(ValueError):
    """A result line whose custom_id is readable but whose other fields are not what the code reads: the
    collector keeps it as an errored answer (as it came) and names it; a line without a readable
    custom_id stays a plain ValueError (the batch's results cannot be read)."""

    def __init__(self, custom_id: str, reason: str):
        super().__init__(f"custom_id {custom_id!r}: {reason}")
        self.custom_id = custom_id
        self.reason = reason


def custom_id_of(line: bytes) -> tuple[dict[str, Any], str]:
    """(the line's object, its custom_id); ValueError when either cannot be read."""
    doc = orjson.loads(line)
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {shown(doc)}")
    cid = doc.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError(f"custom_id is {shown(cid)}, expected a non-empty string")
    return doc, cid


def line_object(value: Any, cid: str, where: str) -> dict[str, Any]:
    """An object inside a result line (ShapeError naming `where` otherwise)."""
    if not isinstance(value, dict):
        raise ShapeError(cid, f"{where} is {shown(value)}, expected an object")
    return value


def tokens(u: dict[str, Any], name: str, cid: str, where: str) -> int:
    """A token count inside a result line: an integer >= 0 (absent or null is 0)."""
    value = u.get(name)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise ShapeError(cid, f"{where}.{name} is {shown(value)}, expected a whole number >= 0")
    return value


def model_of(value: Any, cid: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ShapeError(cid, f"{where} is {shown(value)}, expected a string")
