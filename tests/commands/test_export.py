"""`batch-scheduler export`: its exit codes and the one line it says."""

from __future__ import annotations

import sys

import orjson
import pytest

from batch_scheduler.commands.main import main


def test_parquet_without_pyarrow_is_one_line_saying_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an install without the extra meets
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.parquet")]) == 2
    assert capsys.readouterr().err == ("batch-scheduler: --format parquet needs pyarrow: "
                                       "pip install 'batch-scheduler[parquet]'\n")
    assert not (tmp_path / "x.parquet").exists()


def test_export_refuses_what_it_cannot_do_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.csv")]) == 2
    assert capsys.readouterr().err == f"batch-scheduler: {tmp_path}: no job here (no ledger.db)\n"
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.txt")]) == 2
    assert capsys.readouterr().err == (f"batch-scheduler: -o {tmp_path / 'x.txt'}: say which format with --format "
                                       f"{{jsonl,csv,parquet}} (or name the file .jsonl, .csv or .parquet)\n")


def test_export_of_a_bucket_output_writes_its_result_lines_in_shard_order_from_the_manifest(tmp_path, monkeypatch,
                                                                                          capsys):
    """`export s3://...` (issue 22 row 12): what _manifest.json lists, read through the object store, shard
    by shard; an object no manifest lists (a fenced node's) is not the job's and stays out."""
    obstore = pytest.importorskip("obstore")
    pytest.importorskip("moto")
    from obstore.store import S3Store

    from ..cluster.servers import MotoServer

    with MotoServer() as s3:
        for k, v in s3.env().items():
            monkeypatch.setenv(k, v)
        bucket = s3.new_bucket()
        store = S3Store(bucket)
        objects = {f"results/own-c1-{n:06d}-shard-{i:05d}.jsonl": b"".join(
            orjson.dumps({"custom_id": f"b{n}-s{i}-{j}", "result": {"type": "succeeded"}}) + b"\n" for j in range(2))
            for n in (1, 2) for i in (0, 1)}
        for key, data in objects.items():
            obstore.put(store, f"out/{key}", data)
        obstore.put(store, "out/results/stale-000001-shard-00000.jsonl", b'{"custom_id": "fenced"}\n')
        obstore.put(store, "out/_manifest.json", orjson.dumps({"job": "j", "objects": sorted(objects)}))
        dest = tmp_path / "all.jsonl"
        assert main(["export", f"s3://{bucket}/out", "-o", str(dest)]) == 0
        got = [orjson.loads(line)["custom_id"] for line in dest.read_bytes().splitlines()]
        assert got == ["b1-s0-0", "b1-s0-1", "b2-s0-0", "b2-s0-1", "b1-s1-0", "b1-s1-1", "b2-s1-0", "b2-s1-1"]
        assert capsys.readouterr().err == (f"exported 8 result lines (8 with a result) to {dest}, in shard order\n")
        assert main(["export", f"s3://{bucket}/out", "-o", str(tmp_path / "x.csv")]) == 2
        assert capsys.readouterr().err == (f"batch-scheduler: s3://{bucket}/out: a bucket output is exported as "
                                           f"--format jsonl in --order shard (csv, parquet and input order need the "
                                           f"job's input and ledger: export it on a machine that has them)\n")
        assert main(["export", f"s3://{bucket}/none", "-o", str(tmp_path / "y.jsonl")]) == 2
        assert capsys.readouterr().err == (f"batch-scheduler: s3://{bucket}/none: no finished job here (no "
                                           f"_manifest.json): a bucket output is exported once its job is done\n")
        obstore.put(store, "bad/_manifest.json", b'{"objects": ["../../etc/passwd"]}')
        assert main(["export", f"s3://{bucket}/bad", "-o", str(tmp_path / "z.jsonl")]) == 2
        assert capsys.readouterr().err == (f"batch-scheduler: s3://{bucket}/bad/_manifest.json: not a manifest of "
                                           f"ours (expected objects: a list of results/ keys)\n")
        assert not (tmp_path / "z.jsonl").exists()
