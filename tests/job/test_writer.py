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
