"""Making a file's name durable, not only its bytes."""

from __future__ import annotations

import os


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
