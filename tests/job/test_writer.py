"""Shard writes: the shard of a custom_id, rollback to durable offsets, owner-only files."""

import zlib

from batch_scheduler.state.shards import ShardSet, shard_of, shard_path


def test_shard_is_crc32_of_custom_id_modulo_shards():
    assert shard_of("my-id-42", 16) == zlib.crc32(b"my-id-42") % 16


def test_rollback_drops_lines_past_the_durable_offsets(tmp_path):
    shards = ShardSet(str(tmp_path), 2)
    shards.add(0, b'{"a":1}')
    durable = shards.commit()
    shards.add(0, b'{"b":2}')
    shards.add(1, b'{"c":3}')
    shards.flush()
    shards.rollback(durable)
    shards.close()
    assert (tmp_path / "results" / "shard-00000.jsonl").read_bytes() == b'{"a":1}\n'
    with open(shard_path(str(tmp_path), 1), "rb") as f:
        assert f.read() == b""


def test_shard_files_are_owner_only(tmp_path):
    ShardSet(str(tmp_path), 1).close()
    assert (tmp_path / "results" / "shard-00000.jsonl").stat().st_mode & 0o077 == 0
    assert (tmp_path / "results").stat().st_mode & 0o077 == 0


def test_every_byte_is_written_in_order_through_short_writes_and_many_pieces(tmp_path, monkeypatch):
    """A shard's pieces go out in writev calls of at most IOV_MAX pieces, each call free to write less than it
    was given (a full pipe, a signal): the file holds every line once, in order."""
    import os

    from batch_scheduler.state import shards as module

    real = os.writev
    calls = []

    def short_writev(fd, pieces):
        calls.append(len(pieces))
        assert len(pieces) <= 3
        return real(fd, [b"".join(map(bytes, pieces))[:7]])  # what it was given, but never more than 7 bytes

    monkeypatch.setattr(module, "IOV_MAX", 3)
    monkeypatch.setattr(module.os, "writev", short_writev)
    shards = ShardSet(str(tmp_path), 1)
    lines = [f'{{"n":{i}}}'.encode() for i in range(50)]
    for i, line in enumerate(lines):
        shards.add(0, line)
        if i % 4 == 3:
            shards.account(0)  # a piece every four lines
    offsets = shards.commit()
    shards.close()
    whole = b"".join(x + b"\n" for x in lines)
    assert (tmp_path / "results" / "shard-00000.jsonl").read_bytes() == whole
    assert offsets == [len(whole)] and len(calls) > 13


def test_new_shard_files_are_made_durable_by_name_too(tmp_path, monkeypatch):
    """An fsync of a file makes its bytes durable, not its directory entry: a crash after the first commit of a
    new job could leave the ledger naming offsets in a shard file that is gone. The directories are synced once,
    when the files are created."""
    import os
    import stat

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "job"
    out.mkdir()
    ShardSet(str(out), 2).close()
    assert synced == [str(out), str(out / "results")]
    synced.clear()
    ShardSet(str(out), 2).close()  # the files are there already: nothing to make durable
    assert synced == []


def test_a_local_object_is_durable_by_name_once_put_as_a_buckets_put_is_once_answered(tmp_path, monkeypatch):
    """file:// objects (a cluster's shards on a shared disk, a job directory's claims) are written to a temporary
    file, fsync'd and linked or renamed into place: the directories they land in, and any made for them, are synced."""
    import asyncio
    import os
    import stat

    from batch_scheduler.state.objects import LocalObjects

    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = LocalObjects(str(tmp_path / "bucket"))
    asyncio.run(store.put_once("a/b/one", b"1"))
    made = [str(tmp_path), str(tmp_path / "bucket"), str(tmp_path / "bucket" / "a")]
    assert synced == [*made, str(tmp_path / "bucket" / "a" / "b")]  # each new directory's name, then the object's
    synced.clear()
    asyncio.run(store.put("a/b/two", b"2"))
    assert synced == [str(tmp_path / "bucket" / "a" / "b")]
    assert (tmp_path / "bucket" / "a" / "b" / "one").read_bytes() == b"1"


def test_a_commit_fsyncs_every_shard_it_wrote_to_before_it_returns_and_only_those(tmp_path, monkeypatch):
    """The offsets a commit returns are what the ledger records: every shard written since the last commit is
    fsync'd (several at once) before it returns, each once; a shard not written to is not; a failed fsync fails it."""
    import os
    import threading

    import pytest

    synced: list[int] = []
    lock = threading.Lock()
    real = os.fsync

    def fsync(fd: int) -> None:
        with lock:
            synced.append(fd)
        real(fd)

    shards = ShardSet(str(tmp_path), 5)
    monkeypatch.setattr(os, "fsync", fsync)
    for i in (0, 2, 3):
        shards.add(i, b'{"n":1}')
    assert shards.commit() == [8, 0, 8, 8, 0]
    assert sorted(synced) == sorted(shards._fds[i] for i in (0, 2, 3))
    synced.clear()
    assert shards.commit() == [8, 0, 8, 8, 0] and synced == []  # nothing new: nothing to make durable

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    shards.add(1, b'{"n":2}')
    shards.add(4, b'{"n":3}')
    with pytest.raises(OSError, match="Input/output error"):
        shards.commit()
    shards.close()


def test_a_forked_child_commits_with_threads_of_its_own(tmp_path):
    """The fsync threads are the process's: a child forked after the parent committed has none of them, and
    its commits must not wait for them forever."""
    import os
    import time

    parent = ShardSet(str(tmp_path / "parent"), 4)
    for _ in range(3):
        for i in range(4):
            parent.add(i, b'{"n":1}')
        parent.commit()  # the pool exists now, its threads idle once done
    time.sleep(0.2)
    pid = os.fork()
    if pid == 0:  # the child: a commit of its own, then out without the parent's atexit work
        child = ShardSet(str(tmp_path / "child"), 4)
        for i in range(4):
            child.add(i, b'{"n":2}')
        os._exit(0 if child.commit() == [8] * 4 else 1)
    waited, status = 0, None
    while waited < 100:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
        waited += 1
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the child's commit hung on its parent's fsync threads")
    assert os.waitstatus_to_exitcode(status) == 0
    parent.close()
