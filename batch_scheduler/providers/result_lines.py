"""The fast reading of a Messages result line (`{"custom_id", "result": {...}}`), the collector's hot path.

A typed decoder (msgspec) reads only what routing and counting need: the custom_id, `result.type`, and
of a succeeded answer its `message.model` and `message.usage` counts. Everything else (the answer's
text, above all) is skipped without being built, at about a third of the cost of parsing the line
whole with orjson and walking its dicts. The line itself goes to the shards as it came.

`classify_result` answers by the decoder only where it is sure: a succeeded, expired or canceled line of
the expected shape. Anything else (an errored answer, a field of another type, a null or out-of-range
count, a line that is not UTF-8, one the decoder refuses) goes to the full reading
(`classify_result_full`: orjson, each field checked), which decides and says what is wrong, so the
outcomes and messages are the ones it always gave. One difference: a number past a double's range
(1e999) in a field the decoder skips no longer stops the run (orjson refuses the line); it is kept as it came.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from batch_scheduler.providers.answers import ShapeError, custom_id_of, line_object, model_of, shown, tokens
from batch_scheduler.providers.base import TRANSIENT_ERROR_KINDS, Outcome

Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # orjson's range; a larger one is the full reading's
CustomId = Annotated[str, msgspec.Meta(min_length=1)]
NO_USAGE = (0, 0, 0, 0, 0)


class _CacheCreation(msgspec.Struct, gc=False):
    ephemeral_1h_input_tokens: Count = 0


class _Usage(msgspec.Struct, gc=False):  # a null count (0 to the full reading) is left to it
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    cache_read_input_tokens: Count = 0
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


Classified = tuple[str, Outcome, tuple[int, int, int, int, int] | None, str | None]
_decode = msgspec.json.Decoder(_Line).decode
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
_PLAIN = {"expired": Outcome.EXPIRED, "canceled": Outcome.CANCELED}
_SUCCEEDED = Outcome.SUCCEEDED


def classify_result(line: bytes) -> Classified:
    """Route and count one `{"custom_id", "result": {...}}` line (also the inline proxy's form): its custom_id,
    outcome, usage (a Usage as a tuple) and model. The typed decoder where the line has the expected shape,
    else `classify_result_full`, which decides and names what is wrong (one function: it runs per answer)."""
    try:
        if not line.isascii():
            line.decode()  # the decoder skips the strings it does not read without checking them
        doc = _decode(line)
    except _DECODE_ERRORS:
        return classify_result_full(line)
    result = doc.result
    if result.type == "succeeded":
        message = result.message
        if message is None:
            return classify_result_full(line)
        u = message.usage
        if u is None:
            return doc.custom_id, _SUCCEEDED, NO_USAGE, message.model
        ttl = u.cache_creation
        return doc.custom_id, _SUCCEEDED, (u.input_tokens, u.output_tokens, u.cache_creation_input_tokens,
                                           u.cache_read_input_tokens,
                                           0 if ttl is None else ttl.ephemeral_1h_input_tokens), message.model
    plain = _PLAIN.get(result.type or "")
    return classify_result_full(line) if plain is None else (doc.custom_id, plain, None, None)


def classify_result_full(line: bytes) -> Classified:
    """Route and count one `{"custom_id", "result": {...}}` line by parsing it whole, each field read checked:
    what `classify_result` does with a line the typed decoder  leaves.

    ValueError when the custom_id cannot be read; `answers.ShapeError` (a ValueError) when it can but a
    field read here is missing or of another type."""
    doc, cid = custom_id_of(line)
    result = line_object(doc.get("result"), cid, "result")
    kind = result.get("type")
    if kind == "succeeded":
        message = line_object(result.get("message"), cid, "result.message")
        u = line_object(message.get("usage") or {}, cid, "result.message.usage")
        ttl = u.get("cache_creation")  # {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}
        where = "result.message.usage"
        usage = (tokens(u, "input_tokens", cid, where), tokens(u, "output_tokens", cid, where),  # a Usage, as a tuple
                 tokens(u, "cache_creation_input_tokens", cid, where), tokens(u, "cache_read_input_tokens", cid, where),
                 tokens(ttl, "ephemeral_1h_input_tokens", cid, where + ".cache_creation") if type(ttl) is dict else 0)
        return cid, Outcome.SUCCEEDED, usage, model_of(message.get("model"), cid, "result.message.model")
    if kind == "errored":
        err = result.get("error") or {}
        inner = err.get("error") if isinstance(err, dict) and isinstance(err.get("error"), dict) else err
        transient = isinstance(inner, dict) and inner.get("type") in TRANSIENT_ERROR_KINDS
        return cid, (Outcome.ERRORED_TRANSIENT if transient else Outcome.ERRORED), None, None
    if kind == "expired":
        return cid, Outcome.EXPIRED, None, None
    if kind == "canceled":
        return cid, Outcome.CANCELED, None, None
    raise ShapeError(cid, f"result.type is {shown(kind)}, expected succeeded, errored, expired or canceled")
