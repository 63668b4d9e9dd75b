"""The ledgers' SQL: named statements in sql/<dialect>.sql, read once.

A file is a list of blocks, each headed `-- name: NAME` and running to the next header; other comment
lines are dropped. `{cols}` in a statement stands for the columns of a chunk row, which a ledger fills in
(an older SQLite ledger opened read-only names a column it lacks as NULL).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$")


def parse(text: str) -> dict[str, str]:
    """NAME -> statement of each `-- name: NAME` block; ValueError on a name given twice or an empty block."""
    out: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []

    def close() -> None:
        if name is None:
            return
        sql = " ".join(line.strip() for line in body if line.strip())
        if not sql or name in out:
            raise ValueError(f"statement {name!r}: {'empty' if not sql else 'named twice'}")
        out[name] = sql
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            close()
            name, body = header.group(1), []
        elif not line.lstrip().startswith("--"):
            body.append(line)
    close()
    return out


@functools.cache
def load(dialect: str) -> dict[str, str]:
    """The statements of `dialect` ("sqlite" or "postgres"), read from the package once."""
    return parse(resources.files("batch_scheduler.state.ledger").joinpath("sql").joinpath(f"{dialect}.sql").read_text("utf-8"))


def statements(dialect: str, cols: str) -> dict[str, str]:
    """The statements of `dialect` with a chunk row's columns filled in."""
    return {name: sql.replace("{cols}", cols) for name, sql in load(dialect).items()}
