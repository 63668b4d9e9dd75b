"""Splitting bytes into lines, for input files and result downloads alike."""

from __future__ import annotations

import io
from operator import itemgetter

_DROP_NEWLINE = itemgetter(slice(None, -1))


def split_lines(data: bytes, start: int = 0) -> tuple[list[bytes], bytes]:
    """The complete lines of `data` from `start` (without their newlines) and the unfinished rest.

    `io.BytesIO.readlines` finds newlines with memchr: about 2,200 instructions a 1 KB line with the
    newline cut off, against 5,700 for `bytes.split` (callgrind), on every input and results line. The
    BytesIO shares `data` (bytes) rather than copying it, from any `start`.
    """
    stream = io.BytesIO(data)
    if start:
        stream.seek(start)
    lines = stream.readlines()
    rest = lines.pop() if lines and lines[-1][-1:] != b"\n" else b""
    return list(map(_DROP_NEWLINE, lines)), rest


def split_after(tail: bytes, data: bytes) -> tuple[list[bytes], bytes]:
    """`split_lines(tail + data)`, where `tail` is the unfinished rest of the data before, without copying
    `data` whole to put them together: only the line `tail` began is joined."""
    lines, rest = split_lines(data)
    if not tail:
        return lines, rest
    if lines:
        lines[0] = tail + lines[0]
        return lines, rest
    return lines, tail + rest
