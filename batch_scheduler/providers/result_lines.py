"""The fast reading of a Messages result line (`{"custom_id", "result": {...}}`), the collector's hot path.

A typed decoder (msgspec) reads only what routing and counting need: the custom_id, `result.type`, and
of a succeeded answer its `message.model` and `message.usage` counts. Everything else (the answer's
text, above all) is skipped without being built, at about a third of the cost of parsing the line
whole with orjson and walking its dicts. The line itself goes to the shards as it came.

`classify_fast` answers only where it is sure: a succeeded, expired or canceled line of the expected
shape. Anything else (an errored answer, a field of another type, a count out of range, a line that
is not UTF-8, one the decoder refuses) returns None, and the full reading (`common.classify_result`)
decides and says what is wrong, so its outcomes and messages are the ones it always gave.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from batch_scheduler.providers.base import Outcome

Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # orjson's range; a larger one is the full reading's
CustomId = Annotated[str, msgspec.Meta(min_length=1)]
NO_USAGE = (0, 0, 0, 0, 0)


class _CacheCreation(msgspec.Struct, gc=False):
    ephemeral_1h_input_tokens: Count | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation: _CacheCreation | None = None


class _Message(msgspec.Struct, gc=False):
    model: str | None = None
    usage: _Usage | None = None


class _Result(msgspec.Struct, gc=False):
    type: str | None = None
    message: _Message | None = None


class _Line(msgspec.Struct, gc=False):
    custom_id: CustomId
    result: _Result


_decode = msgspec.json.Decoder(_Line).decode
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)
_PLAIN = {"expired": Outcome.EXPIRED, "canceled": Outcome.CANCELED}


def classify_fast(line: bytes) -> tuple[str, Outcome, tuple[int, int, int, int, int] | None, str | None] | None:
    """(custom_id, outcome, usage as a Usage tuple, model) of a line of the expected shape; else None."""
    try:
        if not line.isascii():
            line.decode()  # the decoder skips the strings it does not read without checking them
        doc = _decode(line)
    except _DECODE_ERRORS:
        return None
    result = doc.result
    if result.type == "succeeded":
        message = result.message
        if message is None:
            return None
        u = message.usage
        if u is None:
            return doc.custom_id, Outcome.SUCCEEDED, NO_USAGE, message.model
        ttl = u.cache_creation
        usage = (u.input_tokens or 0, u.output_tokens or 0, u.cache_creation_input_tokens or 0,
                 u.cache_read_input_tokens or 0, (ttl.ephemeral_1h_input_tokens or 0) if ttl is not None else 0)
        return doc.custom_id, Outcome.SUCCEEDED, usage, message.model
    outcome = _PLAIN.get(result.type or "")
    return None if outcome is None else (doc.custom_id, outcome, None, None)
