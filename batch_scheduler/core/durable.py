"""Making a file's name durable, not only its bytes: `sync_dir`, `makedirs`, and a file's new content put in
place whole (`replacing`, `write_file`, `replace`), so that after a crash it is the old file or the new one,
never an empty or a cut one, and not the old one come back once the new one was said to be there."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO


def sync_dir(path: str) -> None:
    """Make the entries of directory `path` (files just created in it) durable: an fsync of a file makes its
    bytes durable, not its name. Where a directory cannot be opened or synced (not POSIX), nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def makedirs(path: str, mode: int = 0o700) -> None:
    """`os.makedirs(path, mode, exist_ok=True)`, with the name of each directory it creates made durable (its
    parent synced)."""
    made = []
    at = os.path.abspath(path)
    while not os.path.isdir(at):
        made.append(at)
        parent = os.path.dirname(at)
        if parent == at:
            break
        at = parent
    os.makedirs(path, mode=mode, exist_ok=True)
    for directory in reversed(made):
        sync_dir(os.path.dirname(directory))


def replace(tmp: str, path: str) -> None:
    """`os.replace(tmp, path)`, the directory synced after it. `tmp`'s bytes must be durable already (fsync'd:
    `replacing` does both)."""
    os.replace(tmp, path)
    sync_dir(os.path.dirname(os.path.abspath(path)))


@contextmanager
def replacing(path: str, *, tmp: str | None = None, mode: int = 0o600, buffering: int = -1) -> Iterator[BinaryIO]:
    """A file to write `path`'s new content to (`tmp`, by default `path` + ".tmp"). Left without an error, it is
    fsync'd, renamed over `path` and its directory synced; left by an error, it is removed and `path` stays as
    it was. (A process killed while it writes leaves `tmp` behind, never a cut `path`.)"""
    tmp = tmp or path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb", buffering=buffering) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    replace(tmp, path)


def write_file(path: str, data: bytes, *, tmp: str | None = None, mode: int = 0o600) -> None:
    """`path` holds `data`, whole, after a crash too (see `replacing`)."""
    with replacing(path, tmp=tmp, mode=mode) as f:
        f.write(data)
