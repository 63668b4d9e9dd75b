"""A create's body is written in pieces, never joined whole, and is byte for byte the body it always was."""

from __future__ import annotations

import pytest

from batch_scheduler.providers import base
from batch_scheduler.providers.base import RequestsBody, requests_body


class Connection:
    """What aiohttp hands a payload to write to: here, a list of the pieces written."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.pieces.append(bytes(chunk))


LINES = [b'{"custom_id":"r-%d","params":{"model":"m","max_tokens":%d}}' % (i, i * 37) for i in range(50)]


@pytest.mark.parametrize("lines", [[], LINES[:1], LINES[:2], LINES])
@pytest.mark.parametrize("piece_bytes", [1, 100, 1 << 20])
async def test_the_body_written_in_pieces_is_the_joined_body_and_its_declared_size(monkeypatch, lines, piece_bytes):
    monkeypatch.setattr(base, "PIECE_BYTES", piece_bytes)
    body = RequestsBody(lines)
    connection = Connection()
    await body.write_with_length(connection, body.size)
    assert b"".join(connection.pieces) == requests_body(lines)
    assert body.size == len(requests_body(lines))
    assert body.decode() == requests_body(lines).decode()


async def test_a_large_body_goes_out_in_pieces_of_about_piece_bytes(monkeypatch):
    monkeypatch.setattr(base, "PIECE_BYTES", 500)
    connection = Connection()
    await RequestsBody(LINES).write(connection)
    assert len(connection.pieces) > 1 and max(map(len, connection.pieces)) < 2 * 500


async def test_the_body_can_be_written_again():
    body = RequestsBody(LINES)
    first, second = Connection(), Connection()
    await body.write(first)
    await body.write(second)
    assert first.pieces == second.pieces
