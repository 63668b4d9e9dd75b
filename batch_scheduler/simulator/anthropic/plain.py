"""A create body whose every request is of the plain shape, read by one typed decoder: the simulator's
cheap path, where the bench spends most of its CPU.

    {"requests": [{"custom_id": "...", "params": {"model": "...", "max_tokens": N, "system": "...",
                                                  "messages": [{"role": "...", "content": "..."}, ...]}}, ...]}

`plain_requests` gives the `Requests` that `parse_requests` gives for the same body and version, or None:
then the general path (orjson, each request checked) reads the body and decides, with its messages. The
decoder takes only what the general path takes without a word: every field typed, none unknown, model not
empty, max_tokens a whole number from the version's lowest up to 2**63 - 1 (a larger one goes to the general
path: past 2**64 - 1 orjson reads it as a float, which that path refuses), roles user or assistant, content and system strings
(so no cache mark, no structured-output shape), custom_ids of the pattern and none twice. Token counts are
`prompt_tokens`' own: the JSON text of system and messages (msgspec writes a string as orjson does, and the
count depends on the text's bytes, not on the order of the keys).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from batch_scheduler.simulator.batches import CUSTOM_ID, Requests
from batch_scheduler.simulator.counting import encoded_tokens
from batch_scheduler.simulator.validation import CURRENT_VERSION

MAX_TOKENS_MAX = 2**63 - 1  # the most msgspec bounds; a larger one (a float to orjson past 2**64 - 1) is left to the general path


class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: Literal["user", "assistant"]
    content: str


def _decoder(lowest: int) -> msgspec.json.Decoder:
    params = msgspec.defstruct("Params", [
        ("model", Annotated[str, msgspec.Meta(min_length=1)]),
        ("max_tokens", Annotated[int, msgspec.Meta(ge=lowest, le=MAX_TOKENS_MAX)]),
        ("messages", Annotated[list[_Message], msgspec.Meta(min_length=1)]),
        ("system", str | msgspec.UnsetType, msgspec.UNSET),
    ], forbid_unknown_fields=True, gc=False)
    item = msgspec.defstruct("Item", [("custom_id", str), ("params", params)], forbid_unknown_fields=True, gc=False)
    body = msgspec.defstruct("Body", [("requests", Annotated[list[item], msgspec.Meta(min_length=1)])],  # type: ignore[valid-type]
                             forbid_unknown_fields=True, gc=False)
    return msgspec.json.Decoder(body)


_DECODERS = {True: _decoder(0), False: _decoder(1)}  # by: the version is the current one
_REFUSED = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def plain_requests(body: bytes, version: str) -> Requests | None:
    """The requests of `body` when every one is of the plain shape (see the module docstring), else None."""
    try:
        items = _DECODERS[version == CURRENT_VERSION].decode(body).requests
    except _REFUSED:
        return None
    cids = [item.custom_id for item in items]
    if not all(map(CUSTOM_ID.fullmatch, cids)) or len(set(cids)) != len(cids):
        return None  # the general path names the request
    out = Requests()
    out.custom_ids = cids
    models: dict[str, str] = {}
    add_model, add_max, add_tokens = out.models.append, out.max_tokens.append, out.in_tokens.append
    encode, unset = msgspec.json.encode, msgspec.UNSET
    for item in items:  # once per request
        params = item.params
        model = params.model
        add_model(models.setdefault(model, model))
        add_max(params.max_tokens)
        data = encode(params.messages)  # `encoded_tokens`, its ASCII case inline
        total = (len(data) + 3) >> 2 if data.isascii() else encoded_tokens(data)
        if params.system is not unset:
            data = encode(params.system)
            total += (len(data) + 3) >> 2 if data.isascii() else encoded_tokens(data)
        add_tokens(max(1, total))
    return out
