"""The fast check of a Message Batches input line of the most common shape, the validator's hot path.

    {"custom_id": "...", "params": {"model": "...", "max_tokens": N, "system": "...",
                                    "messages": [{"role": "...", "content": "..."}, ...]}}

A typed decoder (msgspec) reads such a line in one call and says its custom_id; every field it reads is
typed, and a field it does not know makes it refuse the line, so nothing is skipped unread (a number orjson
refuses cannot hide in a skipped field). A line it refuses is not wrong: it goes to the full check
(orjson, `check_request`, the version's check), which decides and says what is wrong, so the lines
accepted and the messages given are the ones the full check gives. What the decoder accepts, the full check
accepts as it came: exactly two keys, params with model, max_tokens and messages, no `stream`, nothing the
version refuses (`max_tokens` a whole number of at least the version's lowest; no other field), and no
cache mark anywhere (so the request is of no priming lane).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated

import msgspec

from batch_scheduler.providers.anthropic.versions import CURRENT_VERSION, KNOWN_VERSIONS

MAX_TOKENS_MAX = 2**62  # orjson reads a larger number as a float (refused by the full check): left to it

# raw lines -> the custom_ids of the longest run of them from the first that is of the plain shape
PlainCheck = Callable[[Sequence[bytes]], list[str]]


class _Message(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    role: str
    content: str


def _decoder(lowest: int) -> msgspec.json.Decoder:
    max_tokens = Annotated[int, msgspec.Meta(ge=lowest, le=MAX_TOKENS_MAX)]
    params = msgspec.defstruct("Params", [("model", str), ("max_tokens", max_tokens), ("messages", list[_Message]),
                                          ("system", str | msgspec.UnsetType, msgspec.UNSET)],
                               forbid_unknown_fields=True, gc=False)
    line = msgspec.defstruct("Line", [("custom_id", str), ("params", params)], forbid_unknown_fields=True, gc=False)
    return msgspec.json.Decoder(line)


def plain_check(version: str) -> PlainCheck | None:
    """The fast check under `version`; None for a version this program does not know (the full check only).
    A line this check takes is one the full check accepts as it came; the one after the run it returns is
    left to the full check, which decides it."""
    if version not in KNOWN_VERSIONS:
        return None
    decode = _decoder(0 if version == CURRENT_VERSION else 1).decode
    refused = (msgspec.DecodeError, msgspec.ValidationError, TypeError)  # TypeError: not bytes (a reader's note)

    def custom_ids(lines: Sequence[bytes]) -> list[str]:
        """The custom_ids of `lines` up to the first that is not of the plain shape (a whole block in one loop:
        the reader's blocks are mostly such lines)."""
        ids: list[str] = []
        append = ids.append
        try:
            for raw in lines:
                append(decode(raw).custom_id)
        except refused:
            pass
        return ids

    return custom_ids
